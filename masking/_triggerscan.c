/*
 * _airlock_triggerscan: masking.triggerscan (may_trigger, shapes, dirty_spans) in C.
 *
 * Built by scripts/build_native.py (make venv) with -DSOURCE_SHA256="<digest>", the
 * SHA-256 of masking/triggerscan.py followed by this file; gateway.native.load uses the
 * build only when that digest matches the sources in use, and the gateway only when
 * TRIGGER_SOURCE below is masking.detectors.TRIGGER as it is now. It must return exactly
 * what the reference returns for every bytes object (masking/tests/test_triggerscan.py):
 * a wrong "no" would leave a secret unmasked.
 *
 * may_trigger(data): 1 when data holds a byte >= 0x80 (RE2 decides those: its case
 * folding reaches beyond ASCII); otherwise whether one of the trigger's shapes matches
 * at some position, each shape written out below as the expression it stands for. Every
 * read is checked against the length first. shapes(data): which shapes match, as bits
 * (None for such bytes); dirty_spans(joined): the values of a NUL-joined batch for which
 * may_trigger is true, each as (index, start, stop).
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

#ifndef SOURCE_SHA256
#error "build with -DSOURCE_SHA256=\"<digest of masking/triggerscan.py and this file>\""
#endif

/* masking.detectors.TRIGGER, as the shapes below implement it. */
static const char TRIGGER_SOURCE[] =
    "(?:@)|(?:://)|(?:::)|(?::[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:)|"
    "(?:[0-9]\\.[0-9]{1,3}\\.[0-9]{1,3}\\.[0-9])|(?:\\+[0-9][0-9 ().-]{6})|(?:\\([2-9][0-9]{2}\\))|"
    "(?:[0-9](?:[ -]?[0-9]){12})|(?:[0-9]{3}[-. ][0-9]{3}[-. ][0-9]{4})|"
    "(?:[0-9]{3}[- ][0-9]{2}[- ][0-9]{4})|(?:0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3})|"
    "(?:[A-Z]{2}[0-9]{2})|(?:-----BEGIN)|(?:eyJ)|(?:AKIA|ASIA|ABIA|ACCA|A3T)|(?:AIza)|"
    "(?:(?i:key))|(?:(?i:pass|pwd))|(?:(?i:bearer))|(?:(?i:authorization))|"
    "(?:gh[pousr]_|github_pat_)|"
    "(?:(?:glpat|gldt|glrt|glcbt|glptt|glft|glimt|glagent|gloas|glsoat|glffct)-)|"
    "(?:xox[abposre]-|xapp-)|(?:[sr]k_(?:live|test)_|whsec_)";

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static inline int
is_hex(unsigned char c)
{
    return is_digit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

static inline int
is_upper(unsigned char c)
{
    return c >= 'A' && c <= 'Z';
}

static inline unsigned char
fold(unsigned char c)
{
    return is_upper(c) ? (unsigned char)(c + 32) : c;
}

/* d[i:] starts with word (case-sensitive). */
static inline int
has(const unsigned char *d, Py_ssize_t n, Py_ssize_t i, const char *word)
{
    size_t len = strlen(word);
    return (size_t)(n - i) >= len && memcmp(d + i, word, len) == 0;
}

/* d[i:] starts with word (lower-case ASCII), in any case. */
static inline int
has_folded(const unsigned char *d, Py_ssize_t n, Py_ssize_t i, const char *word)
{
    size_t len = strlen(word);
    if ((size_t)(n - i) < len)
        return 0;
    for (size_t k = 0; k < len; k++) {
        if (fold(d[i + k]) != (unsigned char)word[k])
            return 0;
    }
    return 1;
}

/* How many of d[i:i+most] are digits, from i on (stopping at the first that is not). */
static inline Py_ssize_t
count_digits(const unsigned char *d, Py_ssize_t n, Py_ssize_t i, Py_ssize_t most)
{
    Py_ssize_t k = 0;
    while (k < most && i + k < n && is_digit(d[i + k]))
        k++;
    return k;
}

/* d[i:i+count] are all digits. */
static inline int
all_digits(const unsigned char *d, Py_ssize_t n, Py_ssize_t i, Py_ssize_t count)
{
    return i + count <= n && count_digits(d, n, i, count) == count;
}

static inline int
in(unsigned char c, const char *set)
{
    return c != 0 && strchr(set, c) != NULL;
}

/* :[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}:[0-9A-Fa-f]{1,4}: at i (d[i] is ':'). */
static int
ipv6_groups(const unsigned char *d, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t at = i + 1;
    for (int group = 0; group < 3; group++) {
        Py_ssize_t k = 0;
        while (k < 5 && at + k < n && is_hex(d[at + k]))
            k++;
        if (k < 1 || k > 4 || at + k >= n || d[at + k] != ':')
            return 0;
        at += k + 1;
    }
    return 1;
}

/* [0-9]\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9] at i (d[i] is a digit). */
static int
ipv4_shape(const unsigned char *d, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t at = i + 1;
    if (at >= n || d[at] != '.')
        return 0;
    at++;
    for (int group = 0; group < 2; group++) {
        Py_ssize_t k = count_digits(d, n, at, 4);
        if (k < 1 || k > 3 || at + k >= n || d[at + k] != '.')
            return 0;
        at += k + 1;
    }
    return at < n && is_digit(d[at]);
}

/* 0[0-9]{1,4}[ -][0-9]{3,4}[ -][0-9]{3} at i (d[i] is '0'). */
static int
national_shape(const unsigned char *d, Py_ssize_t n, Py_ssize_t i)
{
    for (Py_ssize_t k = 1; k <= 4; k++) {
        if (!all_digits(d, n, i + 1, k))
            return 0;
        Py_ssize_t s1 = i + 1 + k;
        if (s1 >= n || !in(d[s1], " -"))
            continue;
        for (Py_ssize_t m = 3; m <= 4; m++) {
            Py_ssize_t s2 = s1 + 1 + m;
            if (all_digits(d, n, s1 + 1, m) && s2 < n && in(d[s2], " -") && all_digits(d, n, s2 + 1, 3))
                return 1;
        }
    }
    return 0;
}

/* The trigger's shapes as bits, in masking.detectors.TRIGGER_SHAPES's order. */
enum {
    S_AT = 1u << 0, S_SCHEME = 1u << 1, S_COLONS = 1u << 2, S_IPV6 = 1u << 3, S_IPV4 = 1u << 4,
    S_PLUS = 1u << 5, S_AREA = 1u << 6, S_CARD = 1u << 7, S_NANP = 1u << 8, S_SSN = 1u << 9,
    S_NATIONAL = 1u << 10, S_IBAN = 1u << 11, S_PEM = 1u << 12, S_JWT = 1u << 13, S_AWS = 1u << 14,
    S_GOOGLE = 1u << 15, S_KEY = 1u << 16, S_PASS = 1u << 17, S_BEARER = 1u << 18,
    S_AUTHORIZATION = 1u << 19, S_GITHUB = 1u << 20, S_GITLAB = 1u << 21, S_SLACK = 1u << 22,
    S_STRIPE = 1u << 23,
};
#define SHAPE_COUNT 24

/* The shapes that match starting at d[i] (the card's run of digits aside: scan follows
 * it), as bits. */
static unsigned int
shapes_at(const unsigned char *d, Py_ssize_t n, Py_ssize_t i)
{
    unsigned char c = d[i];
    unsigned int bits = 0;
    switch (c) {
    case '@':
        return S_AT;
    case ':':
        if (has(d, n, i, "://"))
            bits |= S_SCHEME;
        if (has(d, n, i, "::"))
            bits |= S_COLONS;
        if (ipv6_groups(d, n, i))
            bits |= S_IPV6;
        return bits;
    case '+':
        if (i + 8 > n || !is_digit(d[i + 1]))
            return 0;
        for (Py_ssize_t k = i + 2; k < i + 8; k++) {
            if (!is_digit(d[k]) && !in(d[k], " ().-"))
                return 0;
        }
        return S_PLUS;
    case '(':
        return i + 5 <= n && d[i + 1] >= '2' && d[i + 1] <= '9' && is_digit(d[i + 2]) && is_digit(d[i + 3])
                && d[i + 4] == ')'
            ? S_AREA
            : 0;
    case '-':
        return has(d, n, i, "-----BEGIN") ? S_PEM : 0;
    case 'e':
        if (has(d, n, i, "eyJ"))
            bits |= S_JWT;
        break;
    case 'A':
        if (has(d, n, i, "AKIA") || has(d, n, i, "ASIA") || has(d, n, i, "ABIA") || has(d, n, i, "ACCA")
            || has(d, n, i, "A3T"))
            bits |= S_AWS;
        if (has(d, n, i, "AIza"))
            bits |= S_GOOGLE;
        break;
    case 'g':
        if ((i + 3 < n && d[i + 1] == 'h' && in(d[i + 2], "pousr") && d[i + 3] == '_') || has(d, n, i, "github_pat_"))
            bits |= S_GITHUB;
        if (has(d, n, i, "glpat-") || has(d, n, i, "gldt-") || has(d, n, i, "glrt-") || has(d, n, i, "glcbt-")
            || has(d, n, i, "glptt-") || has(d, n, i, "glft-") || has(d, n, i, "glimt-") || has(d, n, i, "glagent-")
            || has(d, n, i, "gloas-") || has(d, n, i, "glsoat-") || has(d, n, i, "glffct-"))
            bits |= S_GITLAB;
        break;
    case 'x':
        if ((i + 4 < n && d[i + 1] == 'o' && d[i + 2] == 'x' && in(d[i + 3], "abposre") && d[i + 4] == '-')
            || has(d, n, i, "xapp-"))
            bits |= S_SLACK;
        break;
    case 's':
    case 'r':
        if (has(d, n, i + 1, "k_live_") || has(d, n, i + 1, "k_test_"))
            bits |= S_STRIPE;
        break;
    case 'w':
        if (has(d, n, i, "whsec_"))
            bits |= S_STRIPE;
        break;
    default:
        break;
    }
    /* The case-insensitive words. */
    switch (fold(c)) {
    case 'k':
        if (has_folded(d, n, i, "key"))
            bits |= S_KEY;
        break;
    case 'p':
        if (has_folded(d, n, i, "pass") || has_folded(d, n, i, "pwd"))
            bits |= S_PASS;
        break;
    case 'b':
        if (has_folded(d, n, i, "bearer"))
            bits |= S_BEARER;
        break;
    case 'a':
        if (has_folded(d, n, i, "authorization"))
            bits |= S_AUTHORIZATION;
        break;
    default:
        break;
    }
    /* [A-Z]{2}[0-9]{2} */
    if (is_upper(c) && i + 4 <= n && is_upper(d[i + 1]) && is_digit(d[i + 2]) && is_digit(d[i + 3]))
        bits |= S_IBAN;
    if (!is_digit(c))
        return bits;
    /* The shapes that start with a digit. */
    if (ipv4_shape(d, n, i))
        bits |= S_IPV4;
    /* [0-9]{3}[-. ][0-9]{3}[-. ][0-9]{4} and [0-9]{3}[- ][0-9]{2}[- ][0-9]{4} */
    if (all_digits(d, n, i, 3) && i + 3 < n) {
        unsigned char s1 = d[i + 3];
        if (in(s1, "-. ") && all_digits(d, n, i + 4, 3) && i + 7 < n && in(d[i + 7], "-. ")
            && all_digits(d, n, i + 8, 4))
            bits |= S_NANP;
        if (in(s1, "- ") && all_digits(d, n, i + 4, 2) && i + 6 < n && in(d[i + 6], "- ")
            && all_digits(d, n, i + 7, 4))
            bits |= S_SSN;
    }
    if (c == '0' && national_shape(d, n, i))
        bits |= S_NATIONAL;
    return bits;
}

/*
 * Where a shape may start, by its first two bytes: START[c0 << 7 | c1] is 1 when some shape
 * of shapes_at (or the card chain) can begin with the bytes c0 c1, ALONE[c] when one is
 * the single byte c (only '@'). Everything else is certainly no match at that position,
 * which spares shapes_at at most positions of ordinary text (a lower-case word's bytes
 * pair as none of the shapes start). Filled once by fill_tables from the shapes as
 * written in shapes_at; masking/tests/test_triggerscan.py derives the same pairs from
 * the trigger's expressions and checks that none is missing.
 */
static unsigned char START[128 * 128];
static unsigned char ALONE[128];
static unsigned char FIRST[128]; /* some pair or ALONE starts with this byte */

/* What scan needs to know of a byte: 0 for most (a letter no shape starts with, NUL). */
enum { K_HIGH = 1, K_DIGIT = 2, K_SEP = 4, K_FIRST = 8 };
static unsigned char KIND[256];

static void
allow(unsigned char c0, unsigned char c1)
{
    START[(c0 << 7) | c1] = 1;
    FIRST[c0] = 1;
}

static void
allow_each(unsigned char c0, const char *second)
{
    for (; *second; second++)
        allow(c0, (unsigned char)*second);
}

static void
allow_folded(const char *word)
{
    /* The first two letters of a lower-case word, in either case each. */
    unsigned char a = (unsigned char)word[0], b = (unsigned char)word[1];
    allow(a, b);
    allow(a, (unsigned char)(b - 32));
    allow((unsigned char)(a - 32), b);
    allow((unsigned char)(a - 32), (unsigned char)(b - 32));
}

static void
fill_tables(void)
{
    ALONE['@'] = 1;
    FIRST['@'] = 1;
    for (int c = 0; c < 128; c++) {
        allow('@', (unsigned char)c);
        if (is_hex((unsigned char)c))
            allow(':', (unsigned char)c);
        if (is_digit((unsigned char)c)) {
            allow('+', (unsigned char)c);
            for (int d = '0'; d <= '9'; d++)
                allow((unsigned char)d, (unsigned char)c);
        }
        if (is_upper((unsigned char)c)) {
            for (int u = 'A'; u <= 'Z'; u++)
                allow((unsigned char)u, (unsigned char)c);
        }
    }
    allow_each(':', "/:");
    allow_each('(', "23456789");
    allow('-', '-');
    for (int d = '0'; d <= '9'; d++)
        allow_each((unsigned char)d, ". -");
    allow('e', 'y');
    allow_each('A', "KSBC3I");
    allow_each('g', "hil");
    allow_each('x', "oa");
    allow('s', 'k');
    allow('r', 'k');
    allow('w', 'h');
    allow_folded("key");
    allow_folded("pass");
    allow_folded("pwd");
    allow_folded("bearer");
    allow_folded("authorization");
    for (int c = 0; c < 256; c++) {
        unsigned char k = 0;
        if (c >= 0x80)
            k = K_HIGH;
        else {
            if (is_digit((unsigned char)c))
                k |= K_DIGIT;
            if (c == ' ' || c == '-')
                k |= K_SEP;
            if (FIRST[c])
                k |= K_FIRST;
        }
        KIND[c] = k;
    }
}

/*
 * The trigger over d[0:n], in one pass: HIGH when a byte is >= 0x80 (RE2 decides those),
 * else the shapes that match somewhere, as bits (with `first`, any of them: the scan stops
 * at the first). The card's chain ([0-9](?:[ -]?[0-9]){12}: thirteen digits with one
 * space or dash at most between two) is followed byte by byte; shapes_at is asked only
 * where START (or ALONE, at the last byte) lets a shape begin.
 */
#define HIGH 0x80000000u

static unsigned int
scan(const unsigned char *d, Py_ssize_t n, int first)
{
    unsigned int bits = 0;
    Py_ssize_t chain = 0;
    int last_digit = 0, after_sep = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        unsigned char c = d[i];
        unsigned char kind = KIND[c];
        if (!kind) {
            /* Most bytes of ordinary text: no shape starts here, and the chain breaks. */
            chain = 0;
            last_digit = after_sep = 0;
            continue;
        }
        if (kind & K_HIGH)
            return HIGH;
        if (kind & K_DIGIT) {
            chain = (last_digit || after_sep) ? chain + 1 : 1;
            if (chain >= 13) {
                bits |= S_CARD;
                if (first)
                    return bits;
            }
            last_digit = 1;
            after_sep = 0;
        }
        else if ((kind & K_SEP) && last_digit) {
            last_digit = 0;
            after_sep = 1;
        }
        else {
            chain = 0;
            last_digit = after_sep = 0;
        }
        if (!(kind & K_FIRST))
            continue;
        /* A byte >= 0x80 next: the next round answers HIGH; its low bits index a real pair. */
        int may = i + 1 < n ? START[(c << 7) | (d[i + 1] & 0x7F)] : ALONE[c];
        if (may) {
            bits |= shapes_at(d, n, i);
            if (bits && first)
                return bits;
        }
    }
    return bits;
}

static PyObject *
may_trigger(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "may_trigger() takes bytes");
        return NULL;
    }
    if (scan((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), 1))
        Py_RETURN_TRUE;
    Py_RETURN_FALSE;
}

static PyObject *
shapes(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "shapes() takes bytes");
        return NULL;
    }
    unsigned int bits = scan((const unsigned char *)PyBytes_AS_STRING(arg), PyBytes_GET_SIZE(arg), 0);
    if (bits & HIGH)
        Py_RETURN_NONE;
    return PyLong_FromUnsignedLong(bits);
}

static PyObject *
dirty_spans(PyObject *module, PyObject *arg)
{
    if (!PyBytes_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "dirty_spans() takes bytes");
        return NULL;
    }
    const unsigned char *d = (const unsigned char *)PyBytes_AS_STRING(arg);
    Py_ssize_t n = PyBytes_GET_SIZE(arg);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t start = 0, index = 0;
    for (;;) {
        const unsigned char *nul = memchr(d + start, 0, (size_t)(n - start));
        Py_ssize_t stop = nul == NULL ? n : nul - d;
        if (scan(d + start, stop - start, 1)) {
            PyObject *span = Py_BuildValue("(nnn)", index, start, stop);
            if (span == NULL || PyList_Append(out, span) < 0) {
                Py_XDECREF(span);
                Py_DECREF(out);
                return NULL;
            }
            Py_DECREF(span);
        }
        if (nul == NULL)
            return out;
        start = stop + 1;
        index++;
    }
}

static PyObject *
start_pairs(PyObject *module, PyObject *unused)
{
    return Py_BuildValue("(y#y#)", (const char *)START, (Py_ssize_t)sizeof(START), (const char *)ALONE,
                         (Py_ssize_t)sizeof(ALONE));
}

static PyMethodDef methods[] = {
    {"may_trigger", may_trigger, METH_O, "may_trigger(data): see masking.triggerscan.may_trigger."},
    {"shapes", shapes, METH_O, "shapes(data): see masking.triggerscan.shapes."},
    {"dirty_spans", dirty_spans, METH_O, "dirty_spans(joined): see masking.triggerscan.dirty_spans."},
    {"start_pairs", start_pairs, METH_NOARGS,
     "start_pairs(): (START, ALONE), the first bytes at which the scan asks whether a shape matches."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT,
    "_airlock_triggerscan",
    "masking.triggerscan in C (built from masking/_triggerscan.c; see masking/triggerscan.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__airlock_triggerscan(void)
{
    fill_tables();
    PyObject *module = PyModule_Create(&definition);
    if (module == NULL)
        return NULL;
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", SOURCE_SHA256) < 0
        || PyModule_AddStringConstant(module, "TRIGGER_SOURCE", TRIGGER_SOURCE) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
