/* plugins._fold: the sensitive filter's character fold, one C pass over the text.
 *
 * The filter matches words on a normalised text: every character mapped through one table
 * (NFKC, lower case, traditional -> simplified) or deleted (separators).  ``str.translate`` with
 * that table costs about 30 ns a character, twice a whole Aho-Corasick scan of the text; this
 * does the same lookups at about 1 ns a character.  The table is built in Python
 * (plugins/sensitive.py, ``Normaliser``); this module only applies it.  Without a C compiler the
 * package installs without it and the filter falls back to its pure-Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    PyObject_HEAD
    Py_ssize_t size;  /* code points below ``size`` are looked up; the rest are kept as they are */
    int32_t *table;   /* table[cp] = replacement code point, or -1 to delete */
} Folder;

static void
Folder_dealloc(Folder *self)
{
    PyMem_Free(self->table);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Folder_init(Folder *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"table", NULL};
    Py_buffer view;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*:Folder", kwlist, &view))
        return -1;
    if (view.len % 4 != 0 || view.len == 0) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "table: expected a non-empty buffer of 32-bit code points");
        return -1;
    }
    Py_ssize_t size = view.len / 4;
    int32_t *table = PyMem_Malloc(view.len);
    if (table == NULL) {
        PyBuffer_Release(&view);
        PyErr_NoMemory();
        return -1;
    }
    memcpy(table, view.buf, view.len);
    PyBuffer_Release(&view);
    for (Py_ssize_t i = 0; i < size; i++) {
        if (table[i] < -1 || table[i] > 0x10FFFF) {
            PyMem_Free(table);
            PyErr_Format(PyExc_ValueError, "table[%zd]: %d is not a code point or -1", i, (int)table[i]);
            return -1;
        }
    }
    PyMem_Free(self->table);
    self->table = table;
    self->size = size;
    return 0;
}

/* fold(text) -> (folded, ascii, digits): the folded text (``text`` itself when nothing changes),
 * how many of its characters are ASCII and how many are ASCII digits (the filter's regexes are
 * gated on those counts). */
static PyObject *
Folder_fold(Folder *self, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "fold() argument must be str, not %.80s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const int32_t *table = self->table;
    Py_ssize_t size = self->size;
    Py_ssize_t out_len = 0, ascii = 0, digits = 0;
    Py_UCS4 maxchar = 0;
    int changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        int32_t v = (Py_ssize_t)cp < size ? table[cp] : (int32_t)cp;
        if (v < 0) {
            changed = 1;
            continue;
        }
        if ((Py_UCS4)v != cp)
            changed = 1;
        out_len++;
        if (v < 128) {
            ascii++;
            if (v >= '0' && v <= '9')
                digits++;
        }
        if ((Py_UCS4)v > maxchar)
            maxchar = (Py_UCS4)v;
    }
    PyObject *out;
    if (!changed) {
        out = Py_NewRef(text);
    }
    else {
        out = PyUnicode_New(out_len, maxchar);
        if (out == NULL)
            return NULL;
        int okind = PyUnicode_KIND(out);
        void *odata = PyUnicode_DATA(out);
        Py_ssize_t j = 0;
        for (Py_ssize_t i = 0; i < n; i++) {
            Py_UCS4 cp = PyUnicode_READ(kind, data, i);
            int32_t v = (Py_ssize_t)cp < size ? table[cp] : (int32_t)cp;
            if (v >= 0)
                PyUnicode_WRITE(okind, odata, j++, (Py_UCS4)v);
        }
    }
    PyObject *result = PyTuple_New(3);
    if (result == NULL) {
        Py_DECREF(out);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, out);
    PyTuple_SET_ITEM(result, 1, PyLong_FromSsize_t(ascii));
    PyTuple_SET_ITEM(result, 2, PyLong_FromSsize_t(digits));
    if (PyTuple_GET_ITEM(result, 1) == NULL || PyTuple_GET_ITEM(result, 2) == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    return result;
}

static PyMethodDef Folder_methods[] = {
    {"fold", (PyCFunction)Folder_fold, METH_O,
     "fold(text) -> (folded, ascii, digits): ``text`` mapped through the table (deleted characters "
     "dropped; ``text`` itself when nothing changes), with the counts of ASCII characters and ASCII "
     "digits in the result."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject FolderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "plugins._fold.Folder",
    .tp_doc = PyDoc_STR("Folder(table): applies a code-point table (a buffer of int32, -1 = delete) to texts."),
    .tp_basicsize = sizeof(Folder),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Folder_init,
    .tp_dealloc = (destructor)Folder_dealloc,
    .tp_methods = Folder_methods,
};

static struct PyModuleDef fold_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "plugins._fold",
    .m_doc = "The sensitive filter's character fold in C (see plugins/sensitive.py).",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fold(void)
{
    if (PyType_Ready(&FolderType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&fold_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "Folder", (PyObject *)&FolderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
