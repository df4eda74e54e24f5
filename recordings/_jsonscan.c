/*
 * _airlock_jsonscan: recordings.jsonscan.altered_by_jsonb in C.
 *
 * Built by scripts/build_native.py (make venv) with -DSOURCE_SHA256="<digest>", the
 * SHA-256 of recordings/jsonscan.py followed by this file; gateway.native.load uses the
 * build only when that digest matches the sources in use. It must answer exactly as the
 * Python reference for every bytes-like text (recordings/tests/test_jsonscan.py compares
 * the two): a wrong "no" would make an event's recorded hash one that verification cannot
 * reproduce from the stored event.
 *
 * altered_by_jsonb(text): whether text holds any of "e+", "\u0000" (six bytes: a
 * backslash, u, four zeros) or "-0.0". Each is found from its rarest byte with memchr
 * and checked around it; every read is within the buffer.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#ifndef SOURCE_SHA256
#error "build with -DSOURCE_SHA256=\"<digest of recordings/jsonscan.py and this file>\""
#endif

/* Whether data[0:n] holds needle[0:m], found from needle[at] (the rare byte). */
static int
holds(const char *data, Py_ssize_t n, const char *needle, Py_ssize_t m, Py_ssize_t at)
{
    if (n < m)
        return 0;
    /* needle[at] can only be at data[at .. n - m + at]. */
    const char *p = data + at;
    const char *last = data + (n - m + at);
    while (p <= last) {
        const char *hit = memchr(p, needle[at], (size_t)(last - p + 1));
        if (hit == NULL)
            return 0;
        if (memcmp(hit - at, needle, (size_t)m) == 0)
            return 1;
        p = hit + 1;
    }
    return 0;
}

static PyObject *
altered_by_jsonb(PyObject *Py_UNUSED(module), PyObject *text)
{
    Py_buffer view;
    if (PyObject_GetBuffer(text, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *data = view.buf;
    Py_ssize_t n = view.len;
    int found = holds(data, n, "e+", 2, 1) || holds(data, n, "\\u0000", 6, 0) || holds(data, n, "-0.0", 4, 0);
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

static PyMethodDef methods[] = {
    {"altered_by_jsonb", altered_by_jsonb, METH_O,
     "altered_by_jsonb(text) -> bool: recordings.jsonscan.altered_by_jsonb in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_airlock_jsonscan",
    "recordings.jsonscan in C (built from recordings/_jsonscan.c; see recordings/jsonscan.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__airlock_jsonscan(void)
{
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
