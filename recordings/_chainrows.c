/*
 * _airlock_chainrows: recordings.chainrows.chain_copy in C.
 *
 * Built by scripts/build_native.py (make venv) with -DSOURCE_SHA256="<digest>", the
 * SHA-256 of recordings/chainrows.py followed by this file, and linked with OpenSSL's
 * libcrypto (gateway.native.NATIVE_C_LIBRARIES), which Python's hashlib uses as well;
 * gateway.native.load uses the build only when that digest matches the sources in use. It
 * must answer exactly as the Python reference (recordings/tests/test_chainrows.py compares
 * the two): a different byte would record a hash that verification cannot reproduce.
 *
 * chain_copy(session, prev, seq, items) -> (copy bytes, last hash) | None. For each item
 * (mono, wall, offset_ms, kind, snapshot, canonical, facts): the time formatted as
 * recordings.chain.format_wall does, the offset as repr() writes it, the envelope's
 * SHA-256 after the previous hash (fed piece by piece, never copied whole), and the COPY
 * line. None (the writer's general path) for anything but the plain case, exactly where
 * the reference declines.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#ifndef SOURCE_SHA256
#error "build with -DSOURCE_SHA256=\"<digest of recordings/chainrows.py and this file>\""
#endif

#define WALL_MIN 0.0
#define WALL_MAX 253402300798.0
#define SEQ_MAX (((long long)1) << 62)
#define KIND_MAX 20

static EVP_MD *sha256_md = NULL;

typedef struct {
    char *data;
    size_t len;
    size_t cap;
} Buffer;

static int
reserve(Buffer *b, size_t more)
{
    if (b->cap - b->len >= more)
        return 0;
    size_t want = b->cap ? b->cap : 4096;
    while (want - b->len < more) {
        if (want > ((size_t)PY_SSIZE_T_MAX) / 2) {
            PyErr_NoMemory();
            return -1;
        }
        want *= 2;
    }
    char *grown = PyMem_Realloc(b->data, want);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    b->data = grown;
    b->cap = want;
    return 0;
}

static void
put(Buffer *b, const char *s, size_t n)
{
    memcpy(b->data + b->len, s, n);
    b->len += n;
}

/* Whether s[0:n] is -?[0-9]+\.[0-9]+ */
static int
plain_float(const char *s, size_t n)
{
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    size_t start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    if (i == start || i >= n || s[i] != '.')
        return 0;
    i++;
    start = i;
    while (i < n && s[i] >= '0' && s[i] <= '9')
        i++;
    return i > start && i == n;
}

/* Whether s[0:n] is [a-z_]{1,20} */
static int
plain_kind(const char *s, Py_ssize_t n)
{
    if (n < 1 || n > KIND_MAX)
        return 0;
    for (Py_ssize_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || s[i] == '_'))
            return 0;
    return 1;
}

/* Writes the decimal digits of v (0 <= v) ending just before end; returns where they start. */
static char *
digits_before(char *end, long long v, int width)
{
    char *p = end;
    do {
        *--p = (char)('0' + v % 10);
        v /= 10;
        width--;
    } while (v > 0 || width > 0);
    return p;
}

/* recordings.chain.format_wall(wall) into out (32 bytes: "YYYY-MM-DDTHH:MM:SS.ffffff+00:00"),
 * for WALL_MIN <= wall <= WALL_MAX. The date and time of day are formatted once per second
 * (a batch's events mostly share theirs). */
static long long cached_second = -1;
static char cached_prefix[20];

static int
format_wall(double wall, char out[32])
{
    double whole;
    double fraction = modf(wall, &whole);
    long long second = (long long)whole;
    /* Python's round(): half to even, as nearbyint() in the default rounding mode. */
    long long micro = (long long)nearbyint(fraction * 1e6);
    if (micro >= 1000000) {
        second += 1;
        micro -= 1000000;
    } else if (micro < 0) {
        second -= 1;
        micro += 1000000;
    }
    if (second != cached_second) {
        time_t t = (time_t)second;
        struct tm tm;
        if (gmtime_r(&t, &tm) == NULL || tm.tm_year + 1900 > 9999 || tm.tm_year + 1900 < 1000)
            return -1;
        char *p = cached_prefix;
        digits_before(p + 4, tm.tm_year + 1900, 4);
        p[4] = '-';
        digits_before(p + 7, tm.tm_mon + 1, 2);
        p[7] = '-';
        digits_before(p + 10, tm.tm_mday, 2);
        p[10] = 'T';
        digits_before(p + 13, tm.tm_hour, 2);
        p[13] = ':';
        digits_before(p + 16, tm.tm_min, 2);
        p[16] = ':';
        digits_before(p + 19, tm.tm_sec, 2);
        cached_second = second;
    }
    memcpy(out, cached_prefix, 19);
    out[19] = '.';
    digits_before(out + 26, micro, 6);
    memcpy(out + 26, "+00:00", 6);
    return 0;
}

static int
digest_update(EVP_MD_CTX *ctx, const void *data, size_t n)
{
    return EVP_DigestUpdate(ctx, data, n) == 1 ? 0 : -1;
}

static const char HEX[] = "0123456789abcdef";

static PyObject *
chain_copy(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "chain_copy(session, prev, seq, items)");
        return NULL;
    }
    PyObject *session = args[0], *prev_obj = args[1], *seq_obj = args[2];
    if (!PyUnicode_CheckExact(session) || !PyUnicode_CheckExact(prev_obj) || !PyLong_CheckExact(seq_obj))
        Py_RETURN_NONE;
    if (!PyUnicode_IS_ASCII(session) || !PyUnicode_IS_ASCII(prev_obj))
        Py_RETURN_NONE;
    PyObject *items = PySequence_Fast(args[3], "chain_copy: items must be a sequence");
    if (items == NULL)
        return NULL;
    Py_ssize_t count = PySequence_Fast_GET_SIZE(items);
    int overflow = 0;
    long long seq = PyLong_AsLongLongAndOverflow(seq_obj, &overflow);
    if (seq == -1 && PyErr_Occurred()) {
        Py_DECREF(items);
        return NULL;
    }
    if (overflow || seq < 0 || seq >= SEQ_MAX - (long long)count) {
        Py_DECREF(items);
        Py_RETURN_NONE;
    }
    Py_ssize_t sid_len, prev_len;
    const char *sid = PyUnicode_AsUTF8AndSize(session, &sid_len);
    const char *prev_text = PyUnicode_AsUTF8AndSize(prev_obj, &prev_len);
    if (sid == NULL || prev_text == NULL) {
        Py_DECREF(items);
        return NULL;
    }

    PyObject *result = NULL;
    Buffer out = {NULL, 0, 0};
    char prev[64];
    size_t prev_size = 0;
    const char *prev_ptr = prev_text;
    prev_size = (size_t)prev_len;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(items, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 7)
            goto decline;
        PyObject *wall_obj = PyTuple_GET_ITEM(item, 1), *offset_obj = PyTuple_GET_ITEM(item, 2);
        PyObject *kind_obj = PyTuple_GET_ITEM(item, 3), *canonical = PyTuple_GET_ITEM(item, 5);
        if (!PyFloat_CheckExact(wall_obj) || !PyFloat_CheckExact(offset_obj) || !PyUnicode_CheckExact(kind_obj))
            goto decline;
        if (!PyBytes_CheckExact(canonical))
            goto decline;
        double wall = PyFloat_AS_DOUBLE(wall_obj);
        if (!(wall >= WALL_MIN && wall <= WALL_MAX))
            goto decline;
        if (!PyUnicode_IS_ASCII(kind_obj))
            goto decline;
        Py_ssize_t kind_len = PyUnicode_GET_LENGTH(kind_obj);
        const char *kind = (const char *)PyUnicode_DATA(kind_obj);
        if (!plain_kind(kind, kind_len))
            goto decline;
        char *shown = PyOS_double_to_string(PyFloat_AS_DOUBLE(offset_obj), 'r', 0, Py_DTSF_ADD_DOT_0, NULL);
        if (shown == NULL)
            goto done;
        size_t shown_len = strlen(shown);
        char shown_copy[64];
        int fits = shown_len < sizeof shown_copy && plain_float(shown, shown_len);
        if (fits)
            memcpy(shown_copy, shown, shown_len);
        PyMem_Free(shown);
        if (!fits)
            goto decline;
        char at[32];
        if (format_wall(wall, at) < 0)
            goto decline;
        seq += 1;
        char seq_buffer[24];
        char *seq_text = digits_before(seq_buffer + sizeof seq_buffer, seq, 1);
        int seq_len = (int)(seq_buffer + sizeof seq_buffer - seq_text);

        const char *payload = PyBytes_AS_STRING(canonical);
        size_t payload_len = (size_t)PyBytes_GET_SIZE(canonical);
        unsigned char md[EVP_MAX_MD_SIZE];
        unsigned int md_len = 0;
        if (EVP_DigestInit_ex(ctx, sha256_md, NULL) != 1 || digest_update(ctx, prev_ptr, prev_size) < 0
            || digest_update(ctx, "{\"at\":\"", 7) < 0 || digest_update(ctx, at, 32) < 0
            || digest_update(ctx, "\",\"kind\":\"", 10) < 0 || digest_update(ctx, kind, (size_t)kind_len) < 0
            || digest_update(ctx, "\",\"offset_ms\":", 14) < 0 || digest_update(ctx, shown_copy, shown_len) < 0
            || digest_update(ctx, ",\"payload\":", 11) < 0 || digest_update(ctx, payload, payload_len) < 0
            || digest_update(ctx, ",\"seq\":", 7) < 0 || digest_update(ctx, seq_text, (size_t)seq_len) < 0
            || digest_update(ctx, "}", 1) < 0 || EVP_DigestFinal_ex(ctx, md, &md_len) != 1 || md_len != 32) {
            PyErr_SetString(PyExc_RuntimeError, "chain_copy: SHA-256 failed in libcrypto");
            goto done;
        }
        for (unsigned int k = 0; k < 32; k++) {
            prev[2 * k] = HEX[md[k] >> 4];
            prev[2 * k + 1] = HEX[md[k] & 15];
        }
        prev_ptr = prev;
        prev_size = 64;

        size_t backslashes = 0;
        for (const char *p = memchr(payload, '\\', payload_len); p != NULL;
             p = memchr(p + 1, '\\', payload_len - (size_t)(p + 1 - payload)))
            backslashes++;
        if (payload_len > ((size_t)PY_SSIZE_T_MAX - 256 - (size_t)sid_len) / 2) {
            PyErr_NoMemory();
            goto done;
        }
        if (reserve(&out, (size_t)sid_len + (size_t)seq_len + 32 + shown_len + (size_t)kind_len + payload_len
                              + backslashes + 64 + 7) < 0)
            goto done;
        put(&out, sid, (size_t)sid_len);
        put(&out, "\t", 1);
        put(&out, seq_text, (size_t)seq_len);
        put(&out, "\t", 1);
        put(&out, at, 32);
        put(&out, "\t", 1);
        put(&out, shown_copy, shown_len);
        put(&out, "\t", 1);
        put(&out, kind, (size_t)kind_len);
        put(&out, "\t", 1);
        if (backslashes == 0) {
            put(&out, payload, payload_len);
        } else {
            for (size_t k = 0; k < payload_len; k++) {
                out.data[out.len++] = payload[k];
                if (payload[k] == '\\')
                    out.data[out.len++] = '\\';
            }
        }
        put(&out, "\t", 1);
        put(&out, prev, 64);
        put(&out, "\n", 1);
    }
    {
        PyObject *copy = PyBytes_FromStringAndSize(out.data ? out.data : "", (Py_ssize_t)out.len);
        if (copy == NULL)
            goto done;
        PyObject *last = PyUnicode_FromStringAndSize(prev_ptr, (Py_ssize_t)prev_size);
        if (last == NULL) {
            Py_DECREF(copy);
            goto done;
        }
        result = PyTuple_Pack(2, copy, last);
        Py_DECREF(copy);
        Py_DECREF(last);
    }
    goto done;
decline:
    result = Py_NewRef(Py_None);
done:
    EVP_MD_CTX_free(ctx);
    PyMem_Free(out.data);
    Py_DECREF(items);
    return result;
}

static PyMethodDef methods[] = {
    {"chain_copy", (PyCFunction)(void (*)(void))chain_copy, METH_FASTCALL,
     "chain_copy(session, prev, seq, items) -> (bytes, str) | None: recordings.chainrows.chain_copy in C."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    "_airlock_chainrows",
    "recordings.chainrows in C (built from recordings/_chainrows.c; see recordings/chainrows.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__airlock_chainrows(void)
{
    if (sha256_md == NULL) {
        sha256_md = EVP_MD_fetch(NULL, "SHA256", NULL);
        if (sha256_md == NULL) {
            PyErr_SetString(PyExc_ImportError, "libcrypto has no SHA-256");
            return NULL;
        }
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddStringConstant(m, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
