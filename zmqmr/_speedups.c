/* zmqmr._speedups: the map side's counting loop in C.
 *
 * Optional: without it the executor counts (key, value) pairs with
 * collections' C helper, which gives the same results more slowly (see
 * _Grouper in zmqmr/executor.py).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

PyDoc_STRVAR(count_outputs_doc,
"count_outputs(index, counts, outputs, value, unset) -> (n, value) or None\n\n"
"Count the keys of the pairs in ``outputs``, an iterable of mapper results\n"
"(each None or an iterable of pairs), while every pair is an exact 2-tuple\n"
"whose value is ``value``: the same object, or of exactly the same type and\n"
"equal. If ``value`` is ``unset``, the first pair's value is taken, provided\n"
"its type is exactly int, bool, str, bytes or None (values that are\n"
"interchangeable when equal).\n\n"
"``index`` (a dict) maps each key to its slot and ``counts`` (a bytearray)\n"
"holds one native int64 per slot: a new key gets slot ``len(index)`` and\n"
"``counts`` grows by one int64. So counting allocates nothing per pair.\n\n"
"Returns the number of pairs counted and the value, or None at the first\n"
"result or pair that does not qualify (a dict, str or bytes result; anything\n"
"but such a pair). Errors raised while iterating, or by hashing a key,\n"
"propagate. On None or an error, counts already made stay made: the caller\n"
"undoes them (new keys are the last ones of ``index``).");

static int
interchangeable(PyObject *v)
{
    return PyLong_CheckExact(v) || PyUnicode_CheckExact(v) || PyBytes_CheckExact(v)
        || PyBool_Check(v) || v == Py_None;
}

/* Add one to key's count. 0 on success, -1 on error. */
static int
count_key(PyObject *index, PyObject *counts, PyObject *key)
{
    PyObject *slot = PyDict_GetItemWithError(index, key); /* borrowed */
    if (slot != NULL) {
        Py_ssize_t i = PyLong_AsSsize_t(slot);
        if (i < 0 || (size_t)(i + 1) * sizeof(int64_t) > (size_t)PyByteArray_GET_SIZE(counts)) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_ValueError, "count_outputs(): index and counts disagree");
            }
            return -1;
        }
        ((int64_t *)PyByteArray_AS_STRING(counts))[i] += 1;
        return 0;
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
    return 0;
}

/* 1: counted; 0: the pair does not qualify; -1: error. */
static int
count_pair(PyObject *index, PyObject *counts, PyObject *pair, PyObject **value, PyObject *unset)
{
    if (!PyTuple_CheckExact(pair) || PyTuple_GET_SIZE(pair) != 2) {
        return 0;
    }
    PyObject *v = PyTuple_GET_ITEM(pair, 1);
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
    return count_key(index, counts, PyTuple_GET_ITEM(pair, 0)) < 0 ? -1 : 1;
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
    PyObject *held = NULL; /* a strong reference to value once it comes from a pair */
    Py_ssize_t n = 0;
    int ok = 1;
    PyObject *out;
    while (ok > 0 && (out = PyIter_Next(outputs)) != NULL) {
        if (out == Py_None) {
            Py_DECREF(out);
            continue;
        }
        if (PyDict_Check(out) || PyUnicode_Check(out) || PyBytes_Check(out)) {
            Py_DECREF(out);
            ok = 0;
            break;
        }
        PyObject *pairs = PyObject_GetIter(out);
        Py_DECREF(out);
        if (pairs == NULL) {
            ok = -1;
            break;
        }
        PyObject *pair;
        while ((pair = PyIter_Next(pairs)) != NULL) {
            PyObject *before = value;
            ok = count_pair(index, counts, pair, &value, unset);
            if (ok > 0 && value != before) {
                Py_XSETREF(held, Py_NewRef(value));
            }
            Py_DECREF(pair);
            if (ok <= 0) {
                break;
            }
            n++;
        }
        Py_DECREF(pairs);
        if (ok > 0 && PyErr_Occurred()) {
            ok = -1;
        }
    }
    if (ok > 0 && PyErr_Occurred()) {
        ok = -1;
    }
    Py_DECREF(outputs);
    PyObject *result;
    if (ok < 0) {
        result = NULL;
    }
    else if (ok == 0) {
        result = Py_NewRef(Py_None);
    }
    else {
        result = Py_BuildValue("(nO)", n, value);
    }
    Py_XDECREF(held);
    return result;
}

static PyMethodDef speedups_methods[] = {
    {"count_outputs", (PyCFunction)(void (*)(void))count_outputs, METH_FASTCALL,
     count_outputs_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "zmqmr._speedups",
    .m_doc = "The map side's counting loop in C (optional).",
    .m_size = -1,
    .m_methods = speedups_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    return PyModule_Create(&speedups_module);
}
