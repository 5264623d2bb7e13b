/* zmqmr._speedups: the map side's counting loop, text records' keys and the
 * reduce side's grouping loop in C.
 *
 * Optional: without it the executor counts (key, value) pairs with
 * collections' C helper, makes keys with itertools and groups a reduce's
 * segments in a Python loop, which gives the same results more slowly (see
 * _Grouper in zmqmr/mapside.py, _lines in zmqmr/inputs.py, hash_merged in
 * zmqmr/userfn.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

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

PyDoc_STRVAR(group_into_doc,
"group_into(groups, stream) -> n\n\n"
"Add the (key, values) groups of the list ``stream`` to the dict ``groups``,\n"
"which maps each key to a list of its values: a new key gets a new list of\n"
"its group's values, a known key's list is extended with them. Stops at the\n"
"first item that is not an exact 2-tuple and returns how many groups it\n"
"added (``len(stream)`` when all), so the caller goes on from there. Errors\n"
"(an unhashable key, values that are not iterable) propagate, and the groups\n"
"added before stay added.");

static PyObject *
group_into(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "group_into() takes exactly 2 arguments");
        return NULL;
    }
    PyObject *groups = args[0], *stream = args[1];
    if (!PyDict_CheckExact(groups) || !PyList_CheckExact(stream)) {
        PyErr_SetString(PyExc_TypeError, "group_into() needs a dict and a list");
        return NULL;
    }
    Py_ssize_t i = 0;
    for (; i < PyList_GET_SIZE(stream); i++) {
        PyObject *item = PyList_GET_ITEM(stream, i);
        if (!PyTuple_CheckExact(item) || PyTuple_GET_SIZE(item) != 2) {
            break;
        }
        Py_INCREF(item); /* the list may change under a key's __eq__ */
        PyObject *key = PyTuple_GET_ITEM(item, 0), *values = PyTuple_GET_ITEM(item, 1);
        PyObject *held = PyDict_GetItemWithError(groups, key); /* borrowed */
        int failed;
        if (held != NULL && PyList_CheckExact(held)) {
            if (PyList_CheckExact(values) || PyTuple_CheckExact(values)) {
                Py_ssize_t n = PyList_GET_SIZE(held);
                failed = PyList_SetSlice(held, n, n, values) < 0;
            }
            else { /* list.extend's own errors for what is not a sequence */
                PyObject *none = PyObject_CallMethod(held, "extend", "O", values);
                failed = none == NULL;
                Py_XDECREF(none);
            }
        }
        else if (held == NULL && !PyErr_Occurred()) {
            PyObject *fresh = PySequence_List(values);
            failed = fresh == NULL || PyDict_SetItem(groups, key, fresh) < 0;
            Py_XDECREF(fresh);
        }
        else {
            if (held != NULL) {
                PyErr_SetString(PyExc_TypeError, "group_into(): a key's values are not a list");
            }
            failed = 1;
        }
        Py_DECREF(item);
        if (failed) {
            return NULL;
        }
    }
    return PyLong_FromSsize_t(i);
}

static PyMethodDef speedups_methods[] = {
    {"count_outputs", (PyCFunction)(void (*)(void))count_outputs, METH_FASTCALL,
     count_outputs_doc},
    {"line_keys", (PyCFunction)(void (*)(void))line_keys, METH_FASTCALL, line_keys_doc},
    {"group_into", (PyCFunction)(void (*)(void))group_into, METH_FASTCALL, group_into_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zmqmr._speedups",
    .m_doc = "The map side's counting loop, text records' keys and the reduce side's "
             "grouping in C (optional).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&LineKeysType) < 0) {
        return NULL;
    }
    return PyModule_Create(&speedups_module);
}
