/*
 * _airlock_textscan: policies.textscan (simple_key, ascii_lacks) in C.
 *
 * Built by scripts/build_native.py (make venv) with -DSOURCE_SHA256="<digest>", the
 * SHA-256 of policies/textscan.py followed by this file; gateway.native.load uses the
 * build only when that digest matches the sources in use. It must return exactly what
 * the Python reference returns for every str (policies/tests/test_textscan.py compares
 * the two): the key chooses the cached shape, and so the cached decision, of a statement;
 * "lacks" spares the regular expression that finds an EXECUTE, a PREPARE, a COPY.
 *
 * The reference, in short: None if the text holds any of \ " $ -- / * '' (the last
 * three as pairs); else the text split at its constants, where a constant is
 *     '[^']*'                                    a plain string, or
 *     [0-9](?<![\w.][0-9])[0-9]*(?![\w.])        a number not glued to a word or a dot
 * (\w being Python's Unicode word class: str.isalnum() or "_"); None if a quote is left
 * unpaired, or if the character just before a constant is alphanumeric, "_" or "&"
 * (a prefixed string: E'..', U&'..'). The result is (parts, kinds, constants): the
 * text around the constants as a tuple, one letter per constant ("s" a string, "i" an
 * integer that fits in int4, "n" a larger one), and the constants as a list.
 *
 * ascii_lacks(text, words): true when text is ASCII (the str's own flag) and holds none
 * of words in any case; the reference lowers the text and looks for each word in it.
 *
 * The text is read as code points (PyUnicode_READ), never as bytes, and every index is
 * checked against the length before it is read.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#ifndef SOURCE_SHA256
#error "build with -DSOURCE_SHA256=\"<digest of policies/textscan.py and this file>\""
#endif

/* Python's \w for str patterns (sre's SRE_UNI_IS_WORD). */
static inline int
is_word(Py_UCS4 ch)
{
    return Py_UNICODE_ISALNUM(ch) || ch == '_';
}

static inline int
is_digit(Py_UCS4 ch)
{
    return ch >= '0' && ch <= '9';
}

/* policies.textscan.is_int4 on the ASCII digits data[start:end]. */
static int
is_int4(int kind, const void *data, Py_ssize_t start, Py_ssize_t end)
{
    static const char max[] = "2147483647";
    if (end - start < 10)
        return 1;
    while (start < end - 1 && PyUnicode_READ(kind, data, start) == '0')
        start++;
    Py_ssize_t len = end - start;
    if (len != 10)
        return len < 10;
    for (Py_ssize_t i = 0; i < 10; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, start + i);
        if (ch != (Py_UCS4)max[i])
            return ch < (Py_UCS4)max[i];
    }
    return 1;
}

typedef struct {
    Py_ssize_t *start;
    Py_ssize_t *end;
    Py_ssize_t count;
    Py_ssize_t capacity;
    Py_ssize_t inline_start[16];
    Py_ssize_t inline_end[16];
} spans_t;

static int
spans_add(spans_t *spans, Py_ssize_t start, Py_ssize_t end)
{
    if (spans->count == spans->capacity) {
        Py_ssize_t capacity = spans->capacity * 2;
        Py_ssize_t *s = PyMem_New(Py_ssize_t, capacity);
        Py_ssize_t *e = PyMem_New(Py_ssize_t, capacity);
        if (s == NULL || e == NULL) {
            PyMem_Free(s);
            PyMem_Free(e);
            PyErr_NoMemory();
            return -1;
        }
        memcpy(s, spans->start, spans->count * sizeof(Py_ssize_t));
        memcpy(e, spans->end, spans->count * sizeof(Py_ssize_t));
        if (spans->start != spans->inline_start) {
            PyMem_Free(spans->start);
            PyMem_Free(spans->end);
        }
        spans->start = s;
        spans->end = e;
        spans->capacity = capacity;
    }
    spans->start[spans->count] = start;
    spans->end[spans->count] = end;
    spans->count++;
    return 0;
}

static void
spans_free(spans_t *spans)
{
    if (spans->start != spans->inline_start) {
        PyMem_Free(spans->start);
        PyMem_Free(spans->end);
    }
}

/* 1: data holds a mark that makes the text not simple; 0: none. */
static int
has_mark(int kind, const void *data, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == '\\' || ch == '"' || ch == '$')
            return 1;
        if ((ch == '-' || ch == '/' || ch == '\'') && i + 1 < n) {
            Py_UCS4 next = PyUnicode_READ(kind, data, i + 1);
            if ((ch == '-' && next == '-') || (ch == '/' && next == '*') || (ch == '\'' && next == '\''))
                return 1;
        }
    }
    return 0;
}

/* The constants' spans into *spans. 1: found (possibly none); 0: not simple (a quote
 * left unpaired); -1: error set. */
static int
find_constants(int kind, const void *data, Py_ssize_t n, spans_t *spans)
{
    Py_ssize_t i = 0;
    while (i < n) {
        Py_UCS4 ch = PyUnicode_READ(kind, data, i);
        if (ch == '\'') {
            Py_ssize_t j = i + 1;
            while (j < n && PyUnicode_READ(kind, data, j) != '\'')
                j++;
            if (j >= n)
                return 0; /* the last quote has no pair */
            if (spans_add(spans, i, j + 1) < 0)
                return -1;
            i = j + 1;
            continue;
        }
        if (is_digit(ch)) {
            if (i > 0) {
                Py_UCS4 prev = PyUnicode_READ(kind, data, i - 1);
                if (is_word(prev) || prev == '.') {
                    i++;
                    continue;
                }
            }
            Py_ssize_t j = i + 1;
            while (j < n && is_digit(PyUnicode_READ(kind, data, j)))
                j++;
            if (j < n) {
                Py_UCS4 next = PyUnicode_READ(kind, data, j);
                if (is_word(next) || next == '.') {
                    /* No shorter run matches either (a digit follows it), and no later
                     * digit of the run can start one (a digit precedes it). */
                    i = j;
                    continue;
                }
            }
            if (spans_add(spans, i, j) < 0)
                return -1;
            i = j;
            continue;
        }
        i++;
    }
    return 1;
}

static PyObject *
simple_key(PyObject *Py_UNUSED(module), PyObject *sql)
{
    if (!PyUnicode_Check(sql)) {
        PyErr_Format(PyExc_TypeError, "simple_key() argument must be str, not %.200s", Py_TYPE(sql)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(sql);
    int kind = PyUnicode_KIND(sql);
    const void *data = PyUnicode_DATA(sql);

    if (has_mark(kind, data, n))
        Py_RETURN_NONE;

    spans_t spans;
    spans.start = spans.inline_start;
    spans.end = spans.inline_end;
    spans.count = 0;
    spans.capacity = 16;
    int found = find_constants(kind, data, n, &spans);
    if (found <= 0) {
        spans_free(&spans);
        if (found < 0)
            return NULL;
        Py_RETURN_NONE;
    }

    /* A constant right after a letter, a digit, "_" or "&" is a prefixed string. */
    for (Py_ssize_t k = 0; k < spans.count; k++) {
        Py_ssize_t previous_end = k == 0 ? 0 : spans.end[k - 1];
        if (spans.start[k] > previous_end) {
            Py_UCS4 before = PyUnicode_READ(kind, data, spans.start[k] - 1);
            if (Py_UNICODE_ISALNUM(before) || before == '_' || before == '&') {
                spans_free(&spans);
                Py_RETURN_NONE;
            }
        }
    }

    PyObject *parts = PyTuple_New(spans.count + 1);
    PyObject *kinds = PyUnicode_New(spans.count, 127);
    PyObject *constants = PyList_New(spans.count);
    if (parts == NULL || kinds == NULL || constants == NULL)
        goto error;
    Py_UCS1 *kind_chars = PyUnicode_1BYTE_DATA(kinds);
    Py_ssize_t previous_end = 0;
    for (Py_ssize_t k = 0; k < spans.count; k++) {
        Py_ssize_t start = spans.start[k], end = spans.end[k];
        PyObject *part = PyUnicode_Substring(sql, previous_end, start);
        if (part == NULL)
            goto error;
        PyTuple_SET_ITEM(parts, k, part);
        PyObject *constant = PyUnicode_Substring(sql, start, end);
        if (constant == NULL)
            goto error;
        PyList_SET_ITEM(constants, k, constant);
        if (PyUnicode_READ(kind, data, start) == '\'')
            kind_chars[k] = 's';
        else
            kind_chars[k] = is_int4(kind, data, start, end) ? 'i' : 'n';
        previous_end = end;
    }
    PyObject *last = PyUnicode_Substring(sql, previous_end, n);
    if (last == NULL)
        goto error;
    PyTuple_SET_ITEM(parts, spans.count, last);
    /* The result tuple made directly: Py_BuildValue parses its format every call. */
    PyObject *result = PyTuple_New(3);
    if (result == NULL)
        goto error;
    spans_free(&spans);
    PyTuple_SET_ITEM(result, 0, parts);
    PyTuple_SET_ITEM(result, 1, kinds);
    PyTuple_SET_ITEM(result, 2, constants);
    return result;

error:
    spans_free(&spans);
    Py_XDECREF(parts);
    Py_XDECREF(kinds);
    Py_XDECREF(constants);
    return NULL;
}

static inline Py_UCS1
ascii_lower(Py_UCS1 ch)
{
    return (ch >= 'A' && ch <= 'Z') ? (Py_UCS1)(ch + ('a' - 'A')) : ch;
}

static PyObject *
ascii_lacks(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_Format(PyExc_TypeError, "ascii_lacks() takes 2 arguments (%zd given)", nargs);
        return NULL;
    }
    PyObject *text = args[0];
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "ascii_lacks() text must be str, not %.200s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_FALSE; /* Unicode case rules apply: the regular expression decides */
    PyObject *words = PySequence_Fast(args[1], "ascii_lacks() words must be a sequence of str");
    if (words == NULL)
        return NULL;
    const Py_UCS1 *data = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t count = PySequence_Fast_GET_SIZE(words);
    PyObject **items = PySequence_Fast_ITEMS(words);
    int found = 0;
    /* In order, stopping at the first word found, as the reference's any() does. */
    for (Py_ssize_t w = 0; w < count && !found; w++) {
        PyObject *word = items[w];
        if (!PyUnicode_Check(word)) {
            PyErr_Format(PyExc_TypeError, "ascii_lacks() words must be str, not %.200s", Py_TYPE(word)->tp_name);
            Py_DECREF(words);
            return NULL;
        }
        Py_ssize_t m = PyUnicode_GET_LENGTH(word);
        if (m == 0) {
            found = 1; /* "" is in every text */
            break;
        }
        if (m > n || !PyUnicode_IS_ASCII(word))
            continue; /* a longer word, or one with a character no ASCII text holds */
        const Py_UCS1 *needle = PyUnicode_1BYTE_DATA(word);
        for (Py_ssize_t i = 0; i + m <= n && !found; i++) {
            Py_ssize_t j = 0;
            while (j < m && ascii_lower(data[i + j]) == needle[j])
                j++;
            found = j == m;
        }
    }
    Py_DECREF(words);
    if (found)
        Py_RETURN_FALSE;
    Py_RETURN_TRUE;
}

static PyMethodDef methods[] = {
    {"simple_key", simple_key, METH_O,
     "simple_key(sql) -> (parts, kinds, constants) or None: policies.textscan.simple_key in C."},
    {"ascii_lacks", (PyCFunction)(void (*)(void))ascii_lacks, METH_FASTCALL,
     "ascii_lacks(text, words) -> bool: policies.textscan.ascii_lacks in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_airlock_textscan",
    "policies.textscan in C (built from policies/_textscan.c; see policies/textscan.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__airlock_textscan(void)
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
