/*
 * _airlock_wirerows: gateway.postgres.wirerows (scan_rows, write_rows) in C.
 *
 * Built by scripts/build_native.py (make venv) with -DSOURCE_SHA256="<digest>", the
 * SHA-256 of gateway/postgres/wirerows.py followed by this file; gateway.native.load uses
 * the build only when that digest matches the sources in use. It must return exactly
 * what the Python reference returns (gateway/tests/postgres/test_wirerows.py compares the
 * two on generated and malformed runs of rows): what it writes is what the agent
 * receives of a masked result.
 *
 * The rows come from the upstream server and are not trusted: every length is checked
 * against the message it is in, and the message against the buffer, before a byte is
 * read (walk); the values' offsets are read only after the whole run was walked once.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <limits.h>
#include <string.h>

#ifndef SOURCE_SHA256
#error "build with -DSOURCE_SHA256=\"<digest of gateway/postgres/wirerows.py and this file>\""
#endif

#define MAX_MESSAGE 0x7FFFFFFF

static inline Py_ssize_t
u32(const unsigned char *d, Py_ssize_t at)
{
    return ((Py_ssize_t)d[at] << 24) | ((Py_ssize_t)d[at + 1] << 16) | ((Py_ssize_t)d[at + 2] << 8)
        | (Py_ssize_t)d[at + 3];
}

enum { WALK_OK = 0, WALK_MALFORMED = 1, WALK_WIDTH = 2 };

/*
 * The run of whole DataRows at d[pos:end], as the reference's _spans reads it, every row
 * required to hold `width` values. With offsets and bounds NULL it only counts the rows
 * (*rows) and finds where the run stops (*stop); given arrays sized from that count, it
 * fills offsets (per row, per value: start, length; -1, 0 for NULL) and bounds (each
 * row's start, then the run's stop).
 */
static int
walk(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t width, Py_ssize_t *rows,
     Py_ssize_t *stop, Py_ssize_t *offsets, Py_ssize_t *bounds)
{
    Py_ssize_t n = 0;
    while (end - pos >= 5 && d[pos] == 68) {
        Py_ssize_t next = pos + 1 + u32(d, pos + 1);
        if (next > end)
            break;
        if (next - pos < 7)
            return WALK_MALFORMED;
        Py_ssize_t count = ((Py_ssize_t)d[pos + 5] << 8) | d[pos + 6];
        Py_ssize_t at = pos + 7;
        for (Py_ssize_t i = 0; i < count; i++) {
            if (at + 4 > next)
                return WALK_MALFORMED;
            Py_ssize_t length = u32(d, at);
            at += 4;
            if (length & 0x80000000) {
                if (offsets != NULL && count == width) {
                    offsets[2 * (n * width + i)] = -1;
                    offsets[2 * (n * width + i) + 1] = 0;
                }
            }
            else {
                if (at + length > next)
                    return WALK_MALFORMED;
                if (offsets != NULL && count == width) {
                    offsets[2 * (n * width + i)] = at;
                    offsets[2 * (n * width + i) + 1] = length;
                }
                at += length;
            }
        }
        if (count != width)
            return WALK_WIDTH;
        if (bounds != NULL)
            bounds[n] = pos;
        n++;
        pos = next;
    }
    if (bounds != NULL)
        bounds[n] = pos;
    *rows = n;
    *stop = pos;
    return WALK_OK;
}

/* A walked run: its rows' value offsets and bounds (PyMem), or the walk's failure. */
typedef struct {
    Py_ssize_t rows;
    Py_ssize_t stop;
    Py_ssize_t *offsets;
    Py_ssize_t *bounds;
} Run;

static void
run_free(Run *run)
{
    PyMem_Free(run->offsets);
    PyMem_Free(run->bounds);
    run->offsets = run->bounds = NULL;
}

/* WALK_OK with run filled in, another status (no exception), or -1 with an exception. */
static int
run_read(const unsigned char *d, Py_ssize_t pos, Py_ssize_t end, Py_ssize_t width, Run *run)
{
    run->offsets = run->bounds = NULL;
    int status = walk(d, pos, end, width, &run->rows, &run->stop, NULL, NULL);
    if (status != WALK_OK)
        return status;
    size_t cells = (size_t)run->rows * (size_t)width * 2;
    run->offsets = PyMem_Malloc(cells ? cells * sizeof(Py_ssize_t) : 1);
    run->bounds = PyMem_Malloc(((size_t)run->rows + 1) * sizeof(Py_ssize_t));
    if (run->offsets == NULL || run->bounds == NULL) {
        run_free(run);
        PyErr_NoMemory();
        return -1;
    }
    Py_ssize_t rows = 0, stop = 0;
    walk(d, pos, end, width, &rows, &stop, run->offsets, run->bounds);
    return WALK_OK;
}

static int
check_bounds(Py_ssize_t size, Py_ssize_t pos, Py_ssize_t end)
{
    if (pos < 0 || pos > end || end > size) {
        PyErr_SetString(PyExc_ValueError, "the run's bounds are outside the buffer");
        return -1;
    }
    return 0;
}

static int
check_width(Py_ssize_t width)
{
    if (width < 0 || width > 0xFFFF) {
        PyErr_SetString(PyExc_ValueError, "a row holds 0 to 65535 values");
        return -1;
    }
    return 0;
}

/* Column indices from a tuple: 0 with them in *out (PyMem), 1 when one is out of range
 * (or too large for an index), -1 with an exception (not a tuple, not an int). With
 * caches not NULL, an entry may also be an (index, dict) pair: caches[k] is then that
 * dict (borrowed), else NULL. */
static int
indices(PyObject *tuple, Py_ssize_t width, Py_ssize_t **out, Py_ssize_t *count, PyObject ***caches)
{
    if (!PyTuple_Check(tuple)) {
        PyErr_SetString(PyExc_TypeError, "column indices are a tuple");
        return -1;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(tuple);
    *out = PyMem_Malloc(n ? (size_t)n * sizeof(Py_ssize_t) : 1);
    if (*out == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (caches != NULL) {
        *caches = PyMem_Calloc(n ? (size_t)n : 1, sizeof(PyObject *));
        if (*caches == NULL) {
            PyMem_Free(*out);
            *out = NULL;
            PyErr_NoMemory();
            return -1;
        }
    }
    *count = n;
    int outside = 0;
    for (Py_ssize_t k = 0; k < n; k++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, k);
        if (caches != NULL && PyTuple_Check(item) && PyTuple_GET_SIZE(item) == 2
            && PyLong_Check(PyTuple_GET_ITEM(item, 0)) && PyDict_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            (*caches)[k] = PyTuple_GET_ITEM(item, 1);
            item = PyTuple_GET_ITEM(item, 0);
        }
        if (!PyLong_Check(item)) {
            PyErr_SetString(PyExc_TypeError, "a column index is an int");
            PyMem_Free(*out);
            *out = NULL;
            if (caches != NULL) {
                PyMem_Free(*caches);
                *caches = NULL;
            }
            return -1;
        }
        int overflow = 0;
        long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
        if (overflow || value < 0 || value >= width)
            outside = 1;
        else
            (*out)[k] = (Py_ssize_t)value;
    }
    if (outside) {
        PyMem_Free(*out);
        *out = NULL;
        if (caches != NULL) {
            PyMem_Free(*caches);
            *caches = NULL;
        }
        return 1;
    }
    return 0;
}

/* The entries of `cache` for column `index` of the walked run (keyed by each value's hash,
 * as Python's hash of the value as bytes: _Py_HashBytes is what bytes' own hash calls;
 * None for NULL), read where the values lie: a new list, Py_None when a value is not ASCII
 * or has no entry that is bytes, NULL with an exception. */
static PyObject *
looked_up(const unsigned char *d, const Run *run, Py_ssize_t width, Py_ssize_t index, PyObject *cache)
{
    Py_ssize_t n = run->rows;
    PyObject *out = PyList_New(n);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t r = 0; r < n; r++) {
        Py_ssize_t at = run->offsets[2 * (r * width + index)];
        if (at < 0) {
            PyList_SET_ITEM(out, r, Py_NewRef(Py_None));
            continue;
        }
        Py_ssize_t length = run->offsets[2 * (r * width + index) + 1];
        const unsigned char *bytes = d + at;
        for (Py_ssize_t i = 0; i < length; i++) {
            if (bytes[i] & 0x80) {
                Py_DECREF(out);
                return Py_NewRef(Py_None);
            }
        }
        PyObject *key = PyLong_FromSsize_t(_Py_HashBytes(bytes, length));
        if (key == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyObject *found = PyDict_GetItemWithError(cache, key);
        Py_DECREF(key);
        if (found == NULL && PyErr_Occurred()) {
            Py_DECREF(out);
            return NULL;
        }
        if (found == NULL || !PyBytes_Check(found)) {
            Py_DECREF(out);
            return Py_NewRef(Py_None);
        }
        PyList_SET_ITEM(out, r, Py_NewRef(found));
    }
    return out;
}

/* Whether s[*i:] starts with count ASCII digits; if so, *i moves past them. */
static int
take_digits(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, Py_ssize_t count)
{
    if (n - *i < count)
        return 0;
    for (Py_ssize_t k = 0; k < count; k++)
        if (s[*i + k] < '0' || s[*i + k] > '9')
            return 0;
    *i += count;
    return 1;
}

static int
take_byte(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i, unsigned char c)
{
    if (*i < n && s[*i] == c) {
        *i += 1;
        return 1;
    }
    return 0;
}

/* HH:MM:SS, a fraction of 1 to 6 digits, an offset +HH[:MM[:SS]] (each optional after the
 * seconds), at s[*i:]; *i moves past it. The grammar is deterministic (each optional part
 * starts with its own byte), so this reads what the reference's expression matches. */
static int
take_time(const unsigned char *s, Py_ssize_t n, Py_ssize_t *i)
{
    if (!(take_digits(s, n, i, 2) && take_byte(s, n, i, ':') && take_digits(s, n, i, 2)
          && take_byte(s, n, i, ':') && take_digits(s, n, i, 2)))
        return 0;
    if (take_byte(s, n, i, '.')) {
        Py_ssize_t start = *i;
        while (*i < n && *i - start < 7 && s[*i] >= '0' && s[*i] <= '9')
            *i += 1;
        if (*i == start || *i - start > 6)
            return 0;
    }
    if (*i < n && (s[*i] == '+' || s[*i] == '-')) {
        *i += 1;
        if (!take_digits(s, n, i, 2))
            return 0;
        for (int k = 0; k < 2 && take_byte(s, n, i, ':'); k++)
            if (!take_digits(s, n, i, 2))
                return 0;
    }
    return 1;
}

/* gateway.postgres.wirerows.iso_datetime: s[0:n] is all one ISO date, time or timestamp
 * with a four-digit year, or infinity. */
static int
iso_datetime(const unsigned char *s, Py_ssize_t n)
{
    if ((n == 8 && memcmp(s, "infinity", 8) == 0) || (n == 9 && memcmp(s, "-infinity", 9) == 0))
        return 1;
    Py_ssize_t i = 0;
    if (n >= 5 && s[4] == '-') {
        if (!(take_digits(s, n, &i, 4) && take_byte(s, n, &i, '-') && take_digits(s, n, &i, 2)
              && take_byte(s, n, &i, '-') && take_digits(s, n, &i, 2)))
            return 0;
        if (i + 1 < n && s[i] == ' ' && s[i + 1] != 'B') {
            i += 1;
            if (!take_time(s, n, &i))
                return 0;
        }
        if (n - i >= 3 && memcmp(s + i, " BC", 3) == 0)
            i += 3;
        return i == n;
    }
    return take_time(s, n, &i) && i == n;
}

static PyObject *
iso_datetime_py(PyObject *module, PyObject *arg)
{
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    int found = iso_datetime(view.buf, view.len);
    PyBuffer_Release(&view);
    return PyBool_FromLong(found);
}

static PyObject *
scan_rows(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, end, width;
    PyObject *fetch, *scan, *quiet = NULL;
    if (!PyArg_ParseTuple(args, "y*nnnOO|O:scan_rows", &view, &pos, &end, &width, &fetch, &scan, &quiet))
        return NULL;
    PyObject *result = NULL, *fetched = NULL, *joined = NULL, *nulls = NULL, *looked = NULL;
    PyObject **caches = NULL;
    Py_ssize_t *fetch_at = NULL, *scan_at = NULL, *quiet_at = NULL, nfetch = 0, nscan = 0, nquiet = 0;
    char *dates = NULL, *skipped = NULL;
    Run run = {0, 0, NULL, NULL};
    const unsigned char *d = view.buf;
    if (check_bounds(view.len, pos, end) < 0 || check_width(width) < 0)
        goto done;
    int outside_fetch = indices(fetch, width, &fetch_at, &nfetch, &caches);
    if (outside_fetch < 0)
        goto done;
    int outside_scan = indices(scan, width, &scan_at, &nscan, NULL);
    if (outside_scan < 0)
        goto done;
    int outside_quiet = 0;
    if (quiet != NULL) {
        outside_quiet = indices(quiet, width, &quiet_at, &nquiet, NULL);
        if (outside_quiet < 0)
            goto done;
    }
    int status = outside_fetch || outside_scan || outside_quiet ? WALK_WIDTH : run_read(d, pos, end, width, &run);
    if (status < 0)
        goto done;
    if (status != WALK_OK) {
        result = Py_NewRef(Py_None);
        goto done;
    }
    /* Which scanned columns are quiet ones (every index is in range here: indices()
     * leaves no array for a tuple with one outside). */
    dates = PyMem_Calloc(nscan ? (size_t)nscan : 1, 1);
    if (dates == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < nscan; k++)
        for (Py_ssize_t q = 0; q < nquiet; q++)
            if (quiet_at[q] == scan_at[k])
                dates[k] = 1;
    Py_ssize_t rows = run.rows;
    /* Which scanned values are joined as empty (a quiet column's ISO values), decided once
     * in the first pass and read in the second. */
    skipped = PyMem_Calloc(nscan && rows ? (size_t)nscan : 1, rows ? (size_t)rows : 1);
    if (skipped == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    /* The scanned values, joined with NUL: none may hold NUL itself. */
    Py_ssize_t size = 0;
    for (Py_ssize_t k = 0; k < nscan; k++) {
        for (Py_ssize_t r = 0; r < rows; r++) {
            Py_ssize_t cell = 2 * (r * width + scan_at[k]);
            Py_ssize_t at = run.offsets[cell], length = run.offsets[cell + 1];
            if (at >= 0 && memchr(d + at, 0, (size_t)length) != NULL) {
                result = Py_NewRef(Py_None);
                goto done;
            }
            if (at >= 0 && dates[k] && iso_datetime(d + at, length)) {
                skipped[k * rows + r] = 1;
                length = 0;
            }
            size += length + 1;
        }
    }
    joined = PyBytes_FromStringAndSize(NULL, size ? size - 1 : 0);
    if (joined == NULL)
        goto done;
    char *into = PyBytes_AS_STRING(joined);
    for (Py_ssize_t k = 0; k < nscan; k++) {
        for (Py_ssize_t r = 0; r < rows; r++) {
            Py_ssize_t cell = 2 * (r * width + scan_at[k]);
            Py_ssize_t at = run.offsets[cell], length = run.offsets[cell + 1];
            if (k || r)
                *into++ = 0;
            if (at >= 0 && !skipped[k * rows + r]) {
                memcpy(into, d + at, (size_t)length);
                into += length;
            }
        }
    }
    fetched = PyList_New(nfetch);
    looked = PyList_New(nfetch);
    if (fetched == NULL || looked == NULL)
        goto done;
    for (Py_ssize_t k = 0; k < nfetch; k++) {
        if (caches[k] != NULL) {
            /* The entries when every value has one: no object made for a value. */
            PyObject *entries = looked_up(d, &run, width, fetch_at[k], caches[k]);
            if (entries == NULL)
                goto done;
            if (entries != Py_None) {
                PyList_SET_ITEM(fetched, k, entries);
                PyList_SET_ITEM(looked, k, Py_NewRef(Py_True));
                continue;
            }
            Py_DECREF(entries);
        }
        PyList_SET_ITEM(looked, k, Py_NewRef(Py_False));
        PyObject *column = PyList_New(rows);
        if (column == NULL)
            goto done;
        PyList_SET_ITEM(fetched, k, column);
        for (Py_ssize_t r = 0; r < rows; r++) {
            Py_ssize_t cell = 2 * (r * width + fetch_at[k]);
            Py_ssize_t at = run.offsets[cell];
            PyObject *value = at < 0 ? Py_NewRef(Py_None)
                                     : PyBytes_FromStringAndSize((const char *)d + at, run.offsets[cell + 1]);
            if (value == NULL)
                goto done;
            PyList_SET_ITEM(column, r, value);
        }
    }
    nulls = PyList_New(width);
    if (nulls == NULL)
        goto done;
    for (Py_ssize_t i = 0; i < width; i++) {
        Py_ssize_t count = 0;
        for (Py_ssize_t r = 0; r < rows; r++)
            count += run.offsets[2 * (r * width + i)] < 0;
        PyObject *number = PyLong_FromSsize_t(count);
        if (number == NULL)
            goto done;
        PyList_SET_ITEM(nulls, i, number);
    }
    result = Py_BuildValue("nnOOOO", run.stop, rows, fetched, joined, nulls, looked);
done:
    Py_XDECREF(looked);
    PyMem_Free(caches);
    Py_XDECREF(fetched);
    Py_XDECREF(joined);
    Py_XDECREF(nulls);
    PyMem_Free(fetch_at);
    PyMem_Free(scan_at);
    PyMem_Free(quiet_at);
    PyMem_Free(dates);
    PyMem_Free(skipped);
    run_free(&run);
    PyBuffer_Release(&view);
    return result;
}

static PyObject *
bad(const char *message)
{
    PyErr_SetString(PyExc_ValueError, message);
    return NULL;
}

/* A partial instruction: (prefix, redacted, minimum, keep). */
static int
is_partial(PyObject *column)
{
    return PyTuple_Check(column) && PyTuple_GET_SIZE(column) == 4 && PyBytes_Check(PyTuple_GET_ITEM(column, 0))
        && PyBytes_Check(PyTuple_GET_ITEM(column, 1)) && PyLong_Check(PyTuple_GET_ITEM(column, 2))
        && PyLong_Check(PyTuple_GET_ITEM(column, 3));
}

static long long
clamped(PyObject *number)
{
    int overflow = 0;
    long long value = PyLong_AsLongLongAndOverflow(number, &overflow);
    return overflow > 0 ? LLONG_MAX : overflow < 0 ? LLONG_MIN : value;
}

static inline int
is_kept(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* The reference's _partial: a new reference, or NULL with an exception. */
static PyObject *
partial_of(const unsigned char *value, Py_ssize_t length, PyObject *column)
{
    PyObject *prefix = PyTuple_GET_ITEM(column, 0), *redacted = PyTuple_GET_ITEM(column, 1);
    long long minimum = clamped(PyTuple_GET_ITEM(column, 2)), keep = clamped(PyTuple_GET_ITEM(column, 3));
    if (PyErr_Occurred())
        return NULL;
    Py_ssize_t kept = 0;
    for (Py_ssize_t i = 0; i < length; i++)
        kept += is_kept(value[i]);
    if ((long long)kept < minimum || keep <= 0)
        return Py_NewRef(redacted);
    Py_ssize_t take = keep < (long long)kept ? (Py_ssize_t)keep : kept;
    Py_ssize_t size = PyBytes_GET_SIZE(prefix);
    PyObject *out = PyBytes_FromStringAndSize(NULL, size + take + 1);
    if (out == NULL)
        return NULL;
    char *into = PyBytes_AS_STRING(out);
    memcpy(into, PyBytes_AS_STRING(prefix), (size_t)size);
    Py_ssize_t at = size + take;
    into[at] = ']';
    for (Py_ssize_t i = length - 1; i >= 0 && at > size; i--) {
        if (is_kept(value[i]))
            into[--at] = (char)value[i];
    }
    return out;
}

/* One value of the written run: 1 with it in ptr and len, or 0 for NULL. `single` holds
 * the changes and `owned` the partial instructions' values (NULL where there is none,
 * Py_None for a NULL). */
static inline int
value_of(const unsigned char *d, const Run *run, Py_ssize_t width, PyObject **columns, PyObject **single,
         PyObject **owned, Py_ssize_t r, Py_ssize_t i, const char **ptr, Py_ssize_t *len)
{
    PyObject *value = single[r * width + i];
    if (value == NULL)
        value = owned[r * width + i];
    if (value == NULL) {
        PyObject *column = columns[i];
        if (column == Py_None) {
            Py_ssize_t at = run->offsets[2 * (r * width + i)];
            if (at < 0)
                return 0;
            *ptr = (const char *)d + at;
            *len = run->offsets[2 * (r * width + i) + 1];
            return 1;
        }
        if (PyBytes_Check(column)) {
            if (run->offsets[2 * (r * width + i)] < 0)
                return 0;
            value = column;
        }
        else if (PyList_Check(column))
            value = PyList_GET_ITEM(column, r);
        else
            return 0; /* a partial's NULL (its other values are in owned) */
    }
    if (value == Py_None)
        return 0;
    *ptr = PyBytes_AS_STRING(value);
    *len = PyBytes_GET_SIZE(value);
    return 1;
}

static inline char *
put_u32(char *into, Py_ssize_t value)
{
    into[0] = (char)((value >> 24) & 0xFF);
    into[1] = (char)((value >> 16) & 0xFF);
    into[2] = (char)((value >> 8) & 0xFF);
    into[3] = (char)(value & 0xFF);
    return into + 4;
}

static PyObject *
write_rows(PyObject *module, PyObject *args)
{
    Py_buffer view;
    Py_ssize_t pos, end, width, sample;
    PyObject *columns_list, *changes;
    if (!PyArg_ParseTuple(args, "y*nnnOOn:write_rows", &view, &pos, &end, &width, &columns_list, &changes,
                          &sample))
        return NULL;
    const unsigned char *d = view.buf;
    PyObject *result = NULL, *out = NULL, *texts = NULL;
    PyObject **single = NULL, **owned = NULL;
    unsigned char *same = NULL;
    Run run = {0, 0, NULL, NULL};
    if (check_bounds(view.len, pos, end) < 0 || check_width(width) < 0)
        goto done;
    int status = run_read(d, pos, end, width, &run);
    if (status < 0)
        goto done;
    if (status != WALK_OK || run.stop != end || !PyList_Check(columns_list)
        || PyList_GET_SIZE(columns_list) != width) {
        bad("write_rows: not a run of whole DataRows of this width");
        goto done;
    }
    Py_ssize_t rows = run.rows;
    PyObject **columns = PySequence_Fast_ITEMS(columns_list);
    for (Py_ssize_t i = 0; i < width; i++) {
        PyObject *column = columns[i];
        if (PyList_Check(column)) {
            if (PyList_GET_SIZE(column) != rows) {
                bad("write_rows: a column's values do not match the rows");
                goto done;
            }
            for (Py_ssize_t r = 0; r < rows; r++) {
                PyObject *value = PyList_GET_ITEM(column, r);
                if (value != Py_None && !PyBytes_Check(value)) {
                    bad("write_rows: a value is neither bytes nor None");
                    goto done;
                }
            }
        }
        else if (column != Py_None && !PyBytes_Check(column) && !is_partial(column)) {
            bad("write_rows: a column is neither None, bytes, a list nor a partial");
            goto done;
        }
    }
    if (!PyList_Check(changes)) {
        bad("write_rows: the changes are a list");
        goto done;
    }
    single = PyMem_Calloc((size_t)rows * (size_t)width + 1, sizeof(PyObject *));
    owned = PyMem_Calloc((size_t)rows * (size_t)width + 1, sizeof(PyObject *));
    same = PyMem_Malloc((size_t)rows + 1);
    if (single == NULL || owned == NULL || same == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    for (Py_ssize_t k = 0; k < PyList_GET_SIZE(changes); k++) {
        PyObject *change = PyList_GET_ITEM(changes, k);
        if (!PyTuple_Check(change) || PyTuple_GET_SIZE(change) != 3) {
            bad("write_rows: a change is (column, row, value)");
            goto done;
        }
        PyObject *index = PyTuple_GET_ITEM(change, 0), *row = PyTuple_GET_ITEM(change, 1);
        PyObject *value = PyTuple_GET_ITEM(change, 2);
        if (!PyLong_Check(index) || !PyLong_Check(row)) {
            bad("write_rows: a change is out of range");
            goto done;
        }
        int overflow_i = 0, overflow_r = 0;
        long long i = PyLong_AsLongLongAndOverflow(index, &overflow_i);
        long long r = PyLong_AsLongLongAndOverflow(row, &overflow_r);
        if (overflow_i || overflow_r || i < 0 || i >= width || r < 0 || r >= rows) {
            bad("write_rows: a change is out of range");
            goto done;
        }
        if (value != Py_None && !PyBytes_Check(value)) {
            bad("write_rows: a value is neither bytes nor None");
            goto done;
        }
        single[r * width + i] = value; /* borrowed: the list holds it */
    }
    /* The partial instructions' values (a change overrides them). */
    for (Py_ssize_t i = 0; i < width; i++) {
        if (!PyTuple_Check(columns[i]))
            continue;
        for (Py_ssize_t r = 0; r < rows; r++) {
            Py_ssize_t at = run.offsets[2 * (r * width + i)];
            if (at < 0 || single[r * width + i] != NULL)
                continue;
            owned[r * width + i] = partial_of(d + at, run.offsets[2 * (r * width + i) + 1], columns[i]);
            if (owned[r * width + i] == NULL)
                goto done;
        }
    }
    /* First pass: which rows changed, and the size of what is written. */
    Py_ssize_t size = 0;
    int changed = 0;
    for (Py_ssize_t r = 0; r < rows; r++) {
        int row_same = 1;
        Py_ssize_t row_size = 6;
        for (Py_ssize_t i = 0; i < width; i++) {
            const char *ptr = NULL;
            Py_ssize_t len = 0;
            int present = value_of(d, &run, width, columns, single, owned, r, i, &ptr, &len);
            Py_ssize_t at = run.offsets[2 * (r * width + i)];
            if (row_same) {
                if (at < 0)
                    row_same = !present;
                else
                    row_same = present && len == run.offsets[2 * (r * width + i) + 1]
                        && memcmp(ptr, d + at, (size_t)len) == 0;
            }
            row_size += 4 + (present ? len : 0);
        }
        if (!row_same && row_size > MAX_MESSAGE) {
            bad("write_rows: a row would outgrow a message");
            goto done;
        }
        same[r] = (unsigned char)row_same;
        if (row_same)
            size += run.bounds[r + 1] - run.bounds[r];
        else {
            changed = 1;
            size += 1 + row_size;
        }
    }
    if (changed) {
        out = PyBytes_FromStringAndSize(NULL, size);
        if (out == NULL)
            goto done;
        char *into = PyBytes_AS_STRING(out);
        for (Py_ssize_t r = 0; r < rows; r++) {
            if (same[r]) {
                memcpy(into, d + run.bounds[r], (size_t)(run.bounds[r + 1] - run.bounds[r]));
                into += run.bounds[r + 1] - run.bounds[r];
                continue;
            }
            char *head = into;
            into += 5;
            *into++ = (char)((width >> 8) & 0xFF);
            *into++ = (char)(width & 0xFF);
            for (Py_ssize_t i = 0; i < width; i++) {
                const char *ptr = NULL;
                Py_ssize_t len = 0;
                if (value_of(d, &run, width, columns, single, owned, r, i, &ptr, &len)) {
                    into = put_u32(into, len);
                    memcpy(into, ptr, (size_t)len);
                    into += len;
                }
                else
                    into = put_u32(into, 0xFFFFFFFF);
            }
            head[0] = 'D';
            put_u32(head + 1, (Py_ssize_t)(into - head - 1));
        }
    }
    /* The sample: the first rows' values as UTF-8 text, or None. */
    texts = PyList_New(0);
    if (texts == NULL)
        goto done;
    for (Py_ssize_t r = 0; r < rows && r < sample; r++) {
        PyObject *row = PyList_New(width);
        if (row == NULL)
            goto done;
        if (PyList_Append(texts, row) < 0) {
            Py_DECREF(row);
            goto done;
        }
        Py_DECREF(row);
        for (Py_ssize_t i = 0; i < width; i++) {
            const char *ptr = NULL;
            Py_ssize_t len = 0;
            PyObject *text;
            if (value_of(d, &run, width, columns, single, owned, r, i, &ptr, &len)) {
                text = PyUnicode_DecodeUTF8(ptr, len, NULL);
                if (text == NULL) {
                    if (!PyErr_ExceptionMatches(PyExc_UnicodeDecodeError))
                        goto done;
                    PyErr_Clear();
                    Py_SETREF(texts, Py_NewRef(Py_None));
                    goto sampled;
                }
            }
            else
                text = Py_NewRef(Py_None);
            PyList_SET_ITEM(row, i, text);
        }
    }
sampled:
    result = PyTuple_Pack(2, out == NULL ? Py_None : out, texts);
done:
    Py_XDECREF(out);
    Py_XDECREF(texts);
    PyMem_Free(single);
    if (owned != NULL) {
        for (Py_ssize_t k = 0; k < run.rows * width; k++)
            Py_XDECREF(owned[k]);
        PyMem_Free(owned);
    }
    PyMem_Free(same);
    run_free(&run);
    PyBuffer_Release(&view);
    return result;
}

static PyMethodDef methods[] = {
    {"scan_rows", scan_rows, METH_VARARGS,
     "scan_rows(data, pos, end, width, fetch, scan, quiet=()): see gateway.postgres.wirerows.scan_rows."},
    {"iso_datetime", iso_datetime_py, METH_O,
     "iso_datetime(value) -> bool: see gateway.postgres.wirerows.iso_datetime."},
    {"write_rows", write_rows, METH_VARARGS,
     "write_rows(data, pos, end, width, columns, changes, sample): see gateway.postgres.wirerows."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef definition = {
    PyModuleDef_HEAD_INIT,
    "_airlock_wirerows",
    "gateway.postgres.wirerows in C (built from gateway/postgres/_wirerows.c; see gateway/postgres/wirerows.py).",
    -1,
    methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

PyMODINIT_FUNC
PyInit__airlock_wirerows(void)
{
    PyObject *module = PyModule_Create(&definition);
    if (module == NULL)
        return NULL;
    if (PyModule_AddStringConstant(module, "SOURCE_SHA256", SOURCE_SHA256) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
