/* zmqmr._speedups: the map side's counting loop, text records' keys, and the reduce
 * side's checks and grouping of map-output segments, in C.
 *
 * Optional: without it the executor counts (key, value) pairs with
 * collections' C helper, makes keys with itertools, and checks and groups a
 * reduce's segments in Python, which gives the same results more slowly (see
 * _Grouper in zmqmr/mapside.py, _lines in zmqmr/inputs.py, bad_segments and
 * merge_segments in zmqmr/mapoutput.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <errno.h>
#include <limits.h>
#include <unistd.h>

PyDoc_STRVAR(count_outputs_doc,
"count_outputs(index, counts, outputs, value, unset) -> (n, value, stopped, pair)\n\n"
"Count the keys of the pairs in ``outputs``, an iterator of mapper results\n"
"(each None or an iterable of pairs), while every pair is an exact 2-tuple\n"
"with a hashable key whose value is ``value``: the same object, or of\n"
"exactly the same type and equal. If ``value`` is ``unset``, the first\n"
"pair's value is taken, provided its type is exactly int, bool, str, bytes\n"
"or None (values that are interchangeable when equal).\n\n"
"``index`` (a dict) maps each key to its slot and ``counts`` (a bytearray)\n"
"holds one native int64 per slot: a new key gets slot ``len(index)`` and\n"
"``counts`` grows by one int64. So counting allocates nothing per pair.\n\n"
"Returns the number of pairs counted and the value, and where counting\n"
"stopped, so that the caller goes on from there and nothing is taken twice:\n"
"``stopped`` is None when ``outputs`` is exhausted; the result itself when it\n"
"does not qualify (a dict, str or bytes, or not iterable), with ``pair`` =\n"
"``unset``; or, at the first pair that does not qualify, the iterator of its\n"
"result, part-consumed, and that pair. ``outputs`` is left just past the\n"
"result counting stopped in. Errors raised while iterating, or by a key's\n"
"``__eq__``, propagate, and counts already made stay made.");

static int
interchangeable(PyObject *v)
{
    return PyLong_CheckExact(v) || PyUnicode_CheckExact(v) || PyBytes_CheckExact(v)
        || PyBool_Check(v) || v == Py_None;
}

/* Add one to key's count. 1: counted; 0: the key is unhashable; -1: error. */
static int
count_key(PyObject *index, PyObject *counts, PyObject *key)
{
    PyObject *slot = PyDict_GetItemWithError(index, key); /* borrowed */
    if (slot == NULL && PyErr_ExceptionMatches(PyExc_TypeError)) {
        PyErr_Clear(); /* unhashable: the caller's checked path says so */
        return 0;
    }
    if (slot != NULL) {
        Py_ssize_t i = PyLong_AsSsize_t(slot);
        if (i < 0 || (size_t)(i + 1) * sizeof(int64_t) > (size_t)PyByteArray_GET_SIZE(counts)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "count_outputs(): index and counts disagree");
            }
            return -1;
        }
        ((int64_t *)PyByteArray_AS_STRING(counts))[i] += 1;
        return 1;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t i = PyDict_GET_SIZE(index);
    if ((size_t)PyByteArray_GET_SIZE(counts) != (size_t)i * sizeof(int64_t)) {
        PyErr_SetString(PyExc_ValueError, "count_outputs(): index and counts disagree");
        return -1;
    }
    /* bytearray over-allocates as it grows, so this is amortised O(1). */
    if (PyByteArray_Resize(counts, (Py_ssize_t)((size_t)(i + 1) * sizeof(int64_t))) < 0) {
        return -1;
    }
    PyObject *s = PyLong_FromSsize_t(i);
    if (s == NULL) {
        return -1;
    }
    int rc = PyDict_SetItem(index, key, s);
    Py_DECREF(s);
    if (rc < 0) {
        PyByteArray_Resize(counts, (Py_ssize_t)((size_t)i * sizeof(int64_t)));
        return -1;
    }
    ((int64_t *)PyByteArray_AS_STRING(counts))[i] = 1;
    return 1;
}

/* 1: counted; 0: the pair does not qualify (and *value is as it was); -1: error. */
static int
count_pair(PyObject *index, PyObject *counts, PyObject *pair, PyObject **value, PyObject *unset)
{
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        return 0;
    }
    PyObject *v = PyTuple_GET_ITEM(pair, 1);
    PyObject *before = *value;
    if (v != *value) {
        if (*value == unset) {
            if (!interchangeable(v)) {
                return 0;
            }
            *value = v;
        }
        else {
            if (Py_TYPE(v) != Py_TYPE(*value)) {
                return 0;
            }
            int eq = PyObject_RichCompareBool(v, *value, Py_EQ);
            if (eq <= 0) {
                return eq;
            }
        }
    }
    int ok = count_key(index, counts, PyTuple_GET_ITEM(pair, 0));
    if (ok == 0) {
        *value = before; /* nothing was counted with it */
    }
    return ok;
}

static PyObject *
count_outputs(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "count_outputs() takes exactly 5 arguments");
        return NULL;
    }
    PyObject *index = args[0];
    PyObject *counts = args[1];
    PyObject *value = args[3]; /* borrowed: the caller's, or held below */
    PyObject *unset = args[4];
    if (!PyDict_CheckExact(index) || !PyByteArray_CheckExact(counts)) {
        PyErr_SetString(PyExc_TypeError, "count_outputs() needs a dict and a bytearray");
        return NULL;
    }
    PyObject *outputs = PyObject_GetIter(args[2]);
    if (outputs == NULL) {
        return NULL;
    }
    PyObject *held = NULL;    /* a strong reference to value once it comes from a pair */
    PyObject *stopped = NULL; /* where counting stopped: a result or its iterator */
    PyObject *refused = NULL; /* the pair counting stopped at */
    Py_ssize_t n = 0;
    int failed = 0;
    PyObject *out;
    while (stopped == NULL && (out = PyIter_Next(outputs)) != NULL) {
        if (out == Py_None) {
            Py_DECREF(out);
            continue;
        }
        if (PyDict_Check(out) || PyUnicode_Check(out) || PyBytes_Check(out)) {
            stopped = out;
            break;
        }
        PyObject *pairs = PyObject_GetIter(out);
        if (pairs == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_TypeError)) {
                Py_DECREF(out);
                failed = 1;
                break;
            }
            PyErr_Clear(); /* not iterable: the caller's checked path says so */
            stopped = out;
            break;
        }
        Py_DECREF(out);
        PyObject *pair;
        while ((pair = PyIter_Next(pairs)) != NULL) {
            PyObject *before = value;
            int ok = count_pair(index, counts, pair, &value, unset);
            if (ok < 0) {
                Py_DECREF(pair);
                failed = 1;
                break;
            }
            if (ok == 0) {
                stopped = Py_NewRef(pairs);
                refused = pair;
                break;
            }
            if (value != before) {
                Py_XSETREF(held, Py_NewRef(value));
            }
            Py_DECREF(pair);
            n++;
        }
        Py_DECREF(pairs);
        if (failed || PyErr_Occurred()) {
            failed = 1;
            break;
        }
    }
    if (!failed && stopped == NULL && PyErr_Occurred()) {
        failed = 1;
    }
    Py_DECREF(outputs);
    PyObject *result = NULL;
    if (!failed) {
        result = Py_BuildValue("(nOOO)", n, value, stopped ? stopped : Py_None,
                               refused ? refused : unset);
    }
    Py_XDECREF(stopped);
    Py_XDECREF(refused);
    Py_XDECREF(held);
    return result;
}

/* -- line_keys: the (path, offset) keys of a text batch's lines ------------------- */

PyDoc_STRVAR(line_keys_doc,
"line_keys(path, pos, lines)\n\n"
"An iterator over the keys ``(path, offset)`` of ``lines``, a list: the\n"
"first line's offset is ``pos``, each next one's the previous offset plus\n"
"``len(line) + 1`` (its newline). So ``lines`` holds the lines' byte\n"
"strings, or their str when every character is one byte (ASCII).\n\n"
"A key the consumer has dropped (only this iterator still holds it) is\n"
"reused for a later key, as ``zip`` and ``enumerate`` reuse their tuples:\n"
"a record loop that does not keep its keys allocates only the offsets.");

#define LINE_KEYS_SPARES 2

typedef struct {
    PyObject_HEAD
    PyObject *path;
    PyObject *lines; /* a list */
    Py_ssize_t index;
    long long pos;
    PyObject *spares[LINE_KEYS_SPARES]; /* keys made, kept to be reused once dropped */
    int next_spare;                     /* the slot a new key takes */
} LineKeys;

static PyTypeObject LineKeysType;

static PyObject *
line_keys(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "line_keys() takes exactly 3 arguments");
        return NULL;
    }
    if (!PyList_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "line_keys() needs a list of lines");
        return NULL;
    }
    long long pos = PyLong_AsLongLong(args[1]);
    if (pos == -1 && PyErr_Occurred()) {
        return NULL;
    }
    LineKeys *it = PyObject_GC_New(LineKeys, &LineKeysType);
    if (it == NULL) {
        return NULL;
    }
    it->path = Py_NewRef(args[0]);
    it->lines = Py_NewRef(args[2]);
    it->index = 0;
    it->pos = pos;
    for (int i = 0; i < LINE_KEYS_SPARES; i++) {
        it->spares[i] = NULL;
    }
    it->next_spare = 0;
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

static PyObject *
line_keys_next(LineKeys *it)
{
    if (it->lines == NULL || it->index >= PyList_GET_SIZE(it->lines)) {
        return NULL;
    }
    PyObject *line = PyList_GET_ITEM(it->lines, it->index);
    Py_ssize_t n = PyUnicode_CheckExact(line) ? PyUnicode_GET_LENGTH(line)
                   : PyBytes_CheckExact(line) ? PyBytes_GET_SIZE(line)
                                              : PyObject_Length(line);
    if (n < 0) {
        return NULL;
    }
    PyObject *offset = PyLong_FromLongLong(it->pos);
    if (offset == NULL) {
        return NULL;
    }
    it->index++;
    it->pos += (long long)n + 1;
    for (int i = 0; i < LINE_KEYS_SPARES; i++) {
        PyObject *key = it->spares[i];
        if (key != NULL && Py_REFCNT(key) == 1) { /* dropped: nobody else can see it */
            PyObject *old = PyTuple_GET_ITEM(key, 1);
            PyTuple_SET_ITEM(key, 1, offset);
            Py_DECREF(old);
            if (!PyObject_GC_IsTracked(key)) {
                PyObject_GC_Track(key); /* as zip does: the collector may have untracked it */
            }
            return Py_NewRef(key);
        }
    }
    PyObject *key = PyTuple_New(2);
    if (key == NULL) {
        Py_DECREF(offset);
        return NULL;
    }
    PyTuple_SET_ITEM(key, 0, Py_NewRef(it->path));
    PyTuple_SET_ITEM(key, 1, offset);
    Py_XSETREF(it->spares[it->next_spare], Py_NewRef(key));
    it->next_spare = (it->next_spare + 1) % LINE_KEYS_SPARES;
    return key;
}

static PyObject *
line_keys_length_hint(LineKeys *it, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t left = it->lines == NULL ? 0 : PyList_GET_SIZE(it->lines) - it->index;
    return PyLong_FromSsize_t(left > 0 ? left : 0);
}

static int
line_keys_traverse(LineKeys *it, visitproc visit, void *arg)
{
    Py_VISIT(it->path);
    Py_VISIT(it->lines);
    for (int i = 0; i < LINE_KEYS_SPARES; i++) {
        Py_VISIT(it->spares[i]);
    }
    return 0;
}

static int
line_keys_clear(LineKeys *it)
{
    Py_CLEAR(it->path);
    Py_CLEAR(it->lines);
    for (int i = 0; i < LINE_KEYS_SPARES; i++) {
        Py_CLEAR(it->spares[i]);
    }
    return 0;
}

static void
line_keys_dealloc(LineKeys *it)
{
    PyObject_GC_UnTrack(it);
    line_keys_clear(it);
    PyObject_GC_Del(it);
}

static PyMethodDef line_keys_methods[] = {
    {"__length_hint__", (PyCFunction)line_keys_length_hint, METH_NOARGS, NULL},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject LineKeysType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "zmqmr._speedups.line_keys_iterator",
    .tp_basicsize = sizeof(LineKeys),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_dealloc = (destructor)line_keys_dealloc,
    .tp_traverse = (traverseproc)line_keys_traverse,
    .tp_clear = (inquiry)line_keys_clear,
    .tp_iter = PyObject_SelfIter,
    .tp_iternext = (iternextfunc)line_keys_next,
    .tp_methods = line_keys_methods,
};

/* -- map-output segments: their blocks' checksums, decoding and grouping ----------- */

/* A block is <codec:u8><length:u32><crc32:u32> then ``length`` bytes of payload; the
 * checksum is zlib's crc32 of the codec and length bytes, then of the payload
 * (zmqmr/mapoutput.py). The CRC here is zlib's (polynomial 0xEDB88320), a table per
 * byte of an 8-byte word at a time. */

#define BLOCK_HEADER 9
#define CODEC_PICKLE 1

static uint32_t crc_table[8][256];

static void
crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) {
            c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        }
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++) {
        for (int s = 1; s < 8; s++) {
            uint32_t c = crc_table[s - 1][i];
            crc_table[s][i] = (c >> 8) ^ crc_table[0][c & 0xff];
        }
    }
}

static uint32_t
crc_update(uint32_t crc, const unsigned char *p, size_t n)
{
    crc = ~crc;
    while (n >= 8) {
        uint32_t lo = ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16
                       | (uint32_t)p[3] << 24) ^ crc;
        uint32_t hi = (uint32_t)p[4] | (uint32_t)p[5] << 8 | (uint32_t)p[6] << 16
                      | (uint32_t)p[7] << 24;
        crc = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff]
              ^ crc_table[5][(lo >> 16) & 0xff] ^ crc_table[4][lo >> 24]
              ^ crc_table[3][hi & 0xff] ^ crc_table[2][(hi >> 8) & 0xff]
              ^ crc_table[1][(hi >> 16) & 0xff] ^ crc_table[0][hi >> 24];
        p += 8;
        n -= 8;
    }
    while (n--) {
        crc = crc_table[0][(crc ^ *p++) & 0xff] ^ (crc >> 8);
    }
    return ~crc;
}

static uint32_t
le32(const unsigned char *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t
le64(const unsigned char *p)
{
    return (uint64_t)le32(p) | (uint64_t)le32(p + 4) << 32;
}

/* 1 if every block of buf checks (lengths, codec, checksum), else 0. */
static int
segment_ok(const unsigned char *buf, Py_ssize_t end)
{
    Py_ssize_t pos = 0;
    while (pos < end) {
        if (end - pos < BLOCK_HEADER || buf[pos] != CODEC_PICKLE) {
            return 0;
        }
        uint32_t length = le32(buf + pos + 1);
        uint32_t crc = le32(buf + pos + 5);
        if ((uint64_t)(end - pos - BLOCK_HEADER) < length) {
            return 0;
        }
        uint32_t got = crc_update(0, buf + pos, 5);
        got = crc_update(got, buf + pos + BLOCK_HEADER, length);
        if (got != crc) {
            return 0;
        }
        pos += BLOCK_HEADER + (Py_ssize_t)length;
    }
    return 1;
}

PyDoc_STRVAR(verify_segments_doc,
"verify_segments(datas) -> int\n\n"
"Check every block of each segment in ``datas`` (a sequence of bytes-like\n"
"objects), as ``mapoutput.verify_segment`` does: a header cut short, an\n"
"unknown codec, a length past the end or a checksum that differs fails it.\n"
"Returns the index of the first segment that fails, or -1.");

static PyObject *
verify_segments(PyObject *Py_UNUSED(module), PyObject *datas)
{
    PyObject *seq = PySequence_Fast(datas, "verify_segments() needs a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    PyObject **items = PySequence_Fast_ITEMS(seq);
    Py_ssize_t bad = -1;
    for (Py_ssize_t i = 0; i < n && bad < 0; i++) {
        int ok;
        if (PyBytes_CheckExact(items[i])) {
            ok = segment_ok((const unsigned char *)PyBytes_AS_STRING(items[i]),
                            PyBytes_GET_SIZE(items[i]));
        }
        else {
            Py_buffer view;
            if (PyObject_GetBuffer(items[i], &view, PyBUF_SIMPLE) < 0) {
                Py_DECREF(seq);
                return NULL;
            }
            ok = segment_ok((const unsigned char *)view.buf, view.len);
            PyBuffer_Release(&view);
        }
        if (!ok) {
            bad = i;
        }
    }
    Py_DECREF(seq);
    return PyLong_FromSsize_t(bad);
}

typedef struct {
    PyObject *groups;     /* dict: key -> list of its values */
    PyObject *merge_part; /* Python: merge_part(part, groups), for any other shape */
} Merge;

/* A key's run of values into the dict; values: a new reference is not taken. */
static int
merge_group(Merge *m, PyObject *key, PyObject *values)
{
    PyObject *held = PyDict_GetItemWithError(m->groups, key); /* borrowed */
    if (held == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        PyObject *list = PySequence_List(values);
        if (list == NULL) {
            return -1;
        }
        int rc = PyDict_SetItem(m->groups, key, list);
        Py_DECREF(list);
        return rc;
    }
    if (!PyList_CheckExact(held)) {
        PyErr_SetString(PyExc_TypeError, "merge_segments(): a group that is not a list");
        return -1;
    }
    Py_ssize_t n = PyList_GET_SIZE(held);
    return PyList_SetSlice(held, n, n, values);
}

/* One value of a flat part: its key's one-value group. */
static int
merge_one(Merge *m, PyObject *key, PyObject *value)
{
    PyObject *held = PyDict_GetItemWithError(m->groups, key); /* borrowed */
    if (held == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        PyObject *list = PyList_New(1);
        if (list == NULL) {
            return -1;
        }
        PyList_SET_ITEM(list, 0, Py_NewRef(value));
        int rc = PyDict_SetItem(m->groups, key, list);
        Py_DECREF(list);
        return rc;
    }
    if (!PyList_CheckExact(held)) {
        PyErr_SetString(PyExc_TypeError, "merge_segments(): a group that is not a list");
        return -1;
    }
    return PyList_Append(held, value);
}

static int
merge_python(Merge *m, PyObject *part)
{
    PyObject *r = PyObject_CallFunctionObjArgs(m->merge_part, part, m->groups, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* A decoded part: the flat (keys, values) of one-value groups, or a list of groups;
 * any other shape goes to merge_part, which does what Python would. */
static int
merge_decoded(Merge *m, PyObject *part)
{
    if (PyTuple_CheckExact(part) && PyTuple_GET_SIZE(part) == 2
        && PyList_CheckExact(PyTuple_GET_ITEM(part, 0))
        && PyList_CheckExact(PyTuple_GET_ITEM(part, 1))
        && PyList_GET_SIZE(PyTuple_GET_ITEM(part, 0))
               == PyList_GET_SIZE(PyTuple_GET_ITEM(part, 1))) {
        PyObject *keys = PyTuple_GET_ITEM(part, 0);
        PyObject *values = PyTuple_GET_ITEM(part, 1);
        /* Lists a key's __eq__ could change as we go: indexed with a check each time. */
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(keys) && i < PyList_GET_SIZE(values); i++) {
            PyObject *key = Py_NewRef(PyList_GET_ITEM(keys, i));
            PyObject *value = Py_NewRef(PyList_GET_ITEM(values, i));
            int rc = merge_one(m, key, value);
            Py_DECREF(key);
            Py_DECREF(value);
            if (rc < 0) {
                return -1;
            }
        }
        return 0;
    }
    if (!PyList_CheckExact(part)) {
        return merge_python(m, part);
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(part); i++) {
        PyObject *group = Py_NewRef(PyList_GET_ITEM(part, i));
        int rc;
        if (PyTuple_CheckExact(group) && PyTuple_GET_SIZE(group) == 2) {
            rc = merge_group(m, PyTuple_GET_ITEM(group, 0), PyTuple_GET_ITEM(group, 1));
        }
        else {
            PyObject *one = PyList_New(1);
            rc = -1;
            if (one != NULL) {
                PyList_SET_ITEM(one, 0, Py_NewRef(group));
                rc = merge_python(m, one);
                Py_DECREF(one);
            }
        }
        Py_DECREF(group);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(merge_segments_doc,
"merge_segments(datas, groups, loads, decode_parts, merge_part, error)\n\n"
"Every group of the verified segments ``datas`` (bytes-like, in order) into\n"
"``groups``, a dict of key -> list of values: a new key gets a list of its\n"
"values, a known one has them appended, so each key's values come in segment\n"
"order (``userfn.hash_merged`` of ``mapoutput.decode_segments``). Blocks'\n"
"lengths and codecs are checked (``error(message)`` is raised), not their\n"
"checksums. A block of one part pickled in one frame is unpickled with\n"
"``loads``; other blocks' parts come from ``decode_parts(codec, payload)``;\n"
"a part of another shape than the flat ``(keys, values)`` or a list of\n"
"``(key, values)`` tuples is given to ``merge_part(part, groups)``.");

static PyObject *
merge_segments(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError, "merge_segments() takes exactly 6 arguments");
        return NULL;
    }
    if (!PyDict_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "merge_segments() needs a dict");
        return NULL;
    }
    Merge m = {args[1], args[4]};
    PyObject *loads = args[2], *decode_parts = args[3], *error = args[5];
    PyObject *seq = PySequence_Fast(args[0], "merge_segments() needs a sequence");
    if (seq == NULL) {
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    int failed = 0;
    for (Py_ssize_t i = 0; i < n && !failed; i++) {
        PyObject *data = PySequence_Fast_GET_ITEM(seq, i);
        Py_buffer view;
        if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
            failed = 1;
            break;
        }
        const unsigned char *buf = (const unsigned char *)view.buf;
        Py_ssize_t pos = 0, end = view.len;
        while (pos < end) {
            if (end - pos < BLOCK_HEADER) {
                PyErr_Format(error, "truncated block header at byte %zd", pos);
                failed = 1;
                break;
            }
            unsigned int codec = buf[pos];
            uint32_t length = le32(buf + pos + 1);
            pos += BLOCK_HEADER;
            if (codec != CODEC_PICKLE || (uint64_t)(end - pos) < length) {
                PyErr_Format(error, "bad block header at byte %zd", pos);
                failed = 1;
                break;
            }
            const unsigned char *p = buf + pos;
            /* The payload as an object of its own: the bytes of a small one (a copy
             * costs less than a view), a view of the segment otherwise. */
            PyObject *payload;
            if (length <= 4096) {
                payload = PyBytes_FromStringAndSize((const char *)p, (Py_ssize_t)length);
            }
            else {
                PyObject *whole = PyMemoryView_FromObject(data);
                payload = whole == NULL ? NULL
                                        : PySequence_GetSlice(whole, pos, pos + (Py_ssize_t)length);
                Py_XDECREF(whole);
            }
            pos += (Py_ssize_t)length;
            if (payload == NULL) {
                failed = 1;
                break;
            }
            int rc;
            if (length > 11 && p[0] == 0x80 && (p[1] == 5 || p[1] == 4) && p[2] == 0x95
                && le64(p + 3) + 11 == length) {
                PyObject *part = PyObject_CallOneArg(loads, payload);
                rc = part == NULL ? -1 : merge_decoded(&m, part);
                Py_XDECREF(part);
            }
            else {
                PyObject *parts = PyObject_CallFunction(decode_parts, "IO", codec, payload);
                PyObject *it = parts == NULL ? NULL : PyObject_GetIter(parts);
                Py_XDECREF(parts);
                rc = it == NULL ? -1 : 0;
                PyObject *part;
                while (rc == 0 && (part = PyIter_Next(it)) != NULL) {
                    rc = merge_decoded(&m, part);
                    Py_DECREF(part);
                }
                if (rc == 0 && PyErr_Occurred()) {
                    rc = -1;
                }
                Py_XDECREF(it);
            }
            Py_DECREF(payload);
            if (rc < 0) {
                failed = 1;
                break;
            }
        }
        PyBuffer_Release(&view);
    }
    Py_DECREF(seq);
    if (failed) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* -- map outputs held in memory: a batch's reads ------------------------------------ */

PyDoc_STRVAR(serve_held_doc,
"serve_held(out, wanted, i, opened, at, max_bytes, budget, gens) -> (i, budget)\n\n"
"What ``OutputReader.read_many`` does for the most common read, for\n"
"``wanted[i:]`` (a list of ``(path, offset)``): an output held open in\n"
"``opened`` (path -> _Held) with its segments in memory (``held``), checked\n"
"at the generation ``gens`` gives for its directory. Appends ``(segment\n"
"length, bytes from offset)`` to ``out`` for each, ``max_bytes`` in all (-1:\n"
"no limit; ``budget`` left of it), and stops at the first read that is not\n"
"of that kind, or once the budget is spent: returns where it stopped and\n"
"the budget left, and the caller reads that one its own way.\n\n"
"An output held open whose segments are not in memory (larger than\n"
"``HOLD_BYTES``) is read here too, with ``pread`` on its descriptor (``fd``,\n"
"from ``base``), when its entry lies before its index (``index_offset``); a\n"
"short read stops the batch there, for the caller to report.");

static PyObject *str_index, *str_held, *str_directory, *str_checked, *str_fd, *str_base,
    *str_index_offset;

/* Reads of more than this release the GIL while the kernel copies. */
#define PREAD_NOGIL_BYTES (64 * 1024)

/* (length, want bytes read with pread from fd at pos), or NULL with no error set if
   the read came up short (the caller's Python path reads it again and reports it). */
static PyObject *
pread_segment(int fd, unsigned long long length, long long want, long long pos)
{
    PyObject *bytes = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)want);
    if (bytes == NULL) {
        return NULL;
    }
    char *buf = PyBytes_AS_STRING(bytes);
    long long got = 0;
    while (got < want) {
        ssize_t n;
        if (want > PREAD_NOGIL_BYTES) {
            Py_BEGIN_ALLOW_THREADS
            n = pread(fd, buf + got, (size_t)(want - got), (off_t)(pos + got));
            Py_END_ALLOW_THREADS
        }
        else {
            n = pread(fd, buf + got, (size_t)(want - got), (off_t)(pos + got));
        }
        if (n < 0 && errno == EINTR) {
            if (PyErr_CheckSignals() < 0) {
                Py_DECREF(bytes);
                return NULL;
            }
            continue;
        }
        if (n <= 0) { /* an error or the file's end: left to the Python path */
            Py_DECREF(bytes);
            return NULL;
        }
        got += n;
    }
    PyObject *out = Py_BuildValue("(KN)", length, bytes);
    return out;
}

/* serve_held's read of one output not held in memory: 1 if served (appended to out),
   0 if left to the caller, -1 on an error set. */
static int
serve_read(PyObject *out, PyObject *held, PyObject *index, PyObject *directory,
           PyObject *checked, PyObject *gens, Py_ssize_t at, PyObject *py_offset,
           long long max_bytes, long long *budget)
{
    PyObject *gen = PyDict_GetItemWithError(gens, directory); /* borrowed */
    if (gen == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    long long g = PyLong_CheckExact(gen) ? PyLong_AsLongLong(gen) : -1;
    long long c = PyLong_CheckExact(checked) ? PyLong_AsLongLong(checked) : -2;
    if (PyErr_Occurred()) {
        return -1;
    }
    if (g < 0 || g != c) {
        return 0; /* the file is checked first (the caller's path) */
    }
    PyObject *fd_obj = PyObject_GetAttr(held, str_fd);
    PyObject *base_obj = fd_obj == NULL ? NULL : PyObject_GetAttr(held, str_base);
    PyObject *end_obj = base_obj == NULL ? NULL : PyObject_GetAttr(held, str_index_offset);
    int served = -1;
    if (end_obj != NULL) {
        long fd = PyLong_CheckExact(fd_obj) ? PyLong_AsLong(fd_obj) : -1;
        long long base = PyLong_CheckExact(base_obj) ? PyLong_AsLongLong(base_obj) : -1;
        long long end = PyLong_CheckExact(end_obj) ? PyLong_AsLongLong(end_obj) : -1;
        long long offset = PyLong_AsLongLong(py_offset);
        served = 0;
        if (PyErr_Occurred()) {
            served = -1;
        }
        else if (fd >= 0 && fd <= INT_MAX && base >= 0 && end >= 0) {
            const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(index) + at;
            uint64_t start = le64(e), length = le64(e + 8);
            if (start <= (uint64_t)end && length <= (uint64_t)end - start && offset >= 0
                && (uint64_t)offset <= length) {
                long long want = (long long)(length - (uint64_t)offset);
                if (max_bytes >= 0 && *budget < want) {
                    want = *budget;
                }
                PyObject *got = pread_segment((int)fd, (unsigned long long)length, want,
                                              base + (long long)start + offset);
                if (got == NULL) {
                    served = PyErr_Occurred() ? -1 : 0;
                }
                else {
                    served = PyList_Append(out, got) < 0 ? -1 : 1;
                    Py_DECREF(got);
                    if (served == 1) {
                        *budget -= want;
                    }
                }
            }
        }
    }
    Py_XDECREF(fd_obj);
    Py_XDECREF(base_obj);
    Py_XDECREF(end_obj);
    return served;
}

static PyObject *
serve_held(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 8) {
        PyErr_SetString(PyExc_TypeError, "serve_held() takes exactly 8 arguments");
        return NULL;
    }
    PyObject *out = args[0], *wanted = args[1], *opened = args[3], *gens = args[7];
    if (!PyList_CheckExact(out) || !PyList_CheckExact(wanted) || !PyDict_CheckExact(opened)
        || !PyDict_CheckExact(gens)) {
        PyErr_SetString(PyExc_TypeError, "serve_held() needs lists and dicts");
        return NULL;
    }
    Py_ssize_t i = PyLong_AsSsize_t(args[2]);
    Py_ssize_t at = PyLong_AsSsize_t(args[4]);
    long long max_bytes = PyLong_AsLongLong(args[5]);
    long long budget = PyLong_AsLongLong(args[6]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    for (; i < PyList_GET_SIZE(wanted); i++) {
        if (max_bytes >= 0 && budget <= 0) {
            break;
        }
        PyObject *item = PyList_GET_ITEM(wanted, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2
            || !PyLong_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            break;
        }
        PyObject *held = PyDict_GetItemWithError(opened, PyTuple_GET_ITEM(item, 0));
        if (held == NULL) {
            if (PyErr_Occurred()) {
                return NULL;
            }
            break;
        }
        Py_INCREF(held);
        PyObject *index = PyObject_GetAttr(held, str_index);
        PyObject *data = index == NULL ? NULL : PyObject_GetAttr(held, str_held);
        PyObject *directory = data == NULL ? NULL : PyObject_GetAttr(held, str_directory);
        PyObject *checked = directory == NULL ? NULL : PyObject_GetAttr(held, str_checked);
        int served = 0;
        if (checked != NULL && data == Py_None && PyBytes_CheckExact(index) && at >= 0
            && at + 24 <= PyBytes_GET_SIZE(index)) {
            served = serve_read(out, held, index, directory, checked, gens, at,
                                PyTuple_GET_ITEM(item, 1), max_bytes, &budget);
        }
        else if (checked != NULL && PyBytes_CheckExact(index) && PyBytes_CheckExact(data)
            && at >= 0 && at + 24 <= PyBytes_GET_SIZE(index)) {
            PyObject *gen = PyDict_GetItemWithError(gens, directory); /* borrowed */
            long long g = gen != NULL && PyLong_CheckExact(gen) ? PyLong_AsLongLong(gen) : -1;
            long long c = PyLong_CheckExact(checked) ? PyLong_AsLongLong(checked) : -2;
            Py_ssize_t offset = PyLong_AsSsize_t(PyTuple_GET_ITEM(item, 1));
            if (!PyErr_Occurred() && g >= 0 && g == c) {
                const unsigned char *e = (const unsigned char *)PyBytes_AS_STRING(index) + at;
                uint64_t start = le64(e), length = le64(e + 8);
                if (offset >= 0 && (uint64_t)offset <= length
                    && start + length <= (uint64_t)PyBytes_GET_SIZE(data)) {
                    long long want = (long long)(length - (uint64_t)offset);
                    if (max_bytes >= 0 && budget < want) {
                        want = budget;
                    }
                    PyObject *got = Py_BuildValue(
                        "(Ky#)", (unsigned long long)length,
                        PyBytes_AS_STRING(data) + start + (uint64_t)offset, (Py_ssize_t)want);
                    if (got == NULL || PyList_Append(out, got) < 0) {
                        Py_XDECREF(got);
                        served = -1;
                    }
                    else {
                        Py_DECREF(got);
                        budget -= want;
                        served = 1;
                    }
                }
            }
        }
        Py_DECREF(held);
        Py_XDECREF(index);
        Py_XDECREF(data);
        Py_XDECREF(directory);
        Py_XDECREF(checked);
        if (served < 0 || PyErr_Occurred()) {
            return NULL;
        }
        if (!served) {
            break;
        }
    }
    return Py_BuildValue("(nL)", i, budget);
}

static PyMethodDef speedups_methods[] = {
    {"count_outputs", (PyCFunction)(void (*)(void))count_outputs, METH_FASTCALL,
     count_outputs_doc},
    {"line_keys", (PyCFunction)(void (*)(void))line_keys, METH_FASTCALL, line_keys_doc},
    {"verify_segments", (PyCFunction)verify_segments, METH_O, verify_segments_doc},
    {"merge_segments", (PyCFunction)(void (*)(void))merge_segments, METH_FASTCALL,
     merge_segments_doc},
    {"serve_held", (PyCFunction)(void (*)(void))serve_held, METH_FASTCALL, serve_held_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zmqmr._speedups",
    .m_doc = "The map side's counting loop, text records' keys and the reduce side's "
             "checks and grouping of segments in C (optional).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&LineKeysType) < 0) {
        return NULL;
    }
    crc_init();
    str_index = PyUnicode_InternFromString("index");
    str_held = PyUnicode_InternFromString("held");
    str_directory = PyUnicode_InternFromString("directory");
    str_checked = PyUnicode_InternFromString("checked");
    str_fd = PyUnicode_InternFromString("fd");
    str_base = PyUnicode_InternFromString("base");
    str_index_offset = PyUnicode_InternFromString("index_offset");
    if (str_index == NULL || str_held == NULL || str_directory == NULL || str_checked == NULL
        || str_fd == NULL || str_base == NULL || str_index_offset == NULL) {
        return NULL;
    }
    return PyModule_Create(&speedups_module);
}
