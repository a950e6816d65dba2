/* plugins._fold: the sensitive filter's character fold, one C pass over the text.
 *
 * The filter matches words on a normalised text: every character mapped through one table
 * (NFKC, lower case, traditional -> simplified) or deleted (separators).  ``str.translate`` with
 * that table costs about 30 ns a character, twice a whole Aho-Corasick scan of the text; this
 * does the same lookups at about 1 ns a character, and ``words`` collapses repeated characters
 * (fffuuuck -> fuck) for the word scan of directions that ask for it.  The table is built in Python
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

/* fold(text, collapse=False) -> (folded, words, ascii, digits, ascii_in, digits_in, run): the
 * folded text (``text`` itself when nothing changes); the folded text with repeats collapsed
 * when ``collapse`` (see ``words``; the folded text itself when nothing repeats or without
 * ``collapse``); how many characters of the folded text are ASCII and ASCII digits, and the same
 * two counts for ``text`` as typed, and the longest run of ASCII digits in the folded text (the
 * filter's regexes are gated on those counts: patterns on the folded text by the first pair and
 * the run, patterns on the original by the second pair). */
/* Writes the folded values ``vals[0:count]`` into ``out`` (of the right length and width),
 * leaving out the repeats (marked by REPEAT_MARK, above every code point) when ``skip``. */
#define REPEAT_MARK ((int32_t)0x40000000)
#define WRITE_VALUES(TYPE)                                        \
    do {                                                          \
        TYPE *d = (TYPE *)PyUnicode_DATA(out);                    \
        for (Py_ssize_t i = 0; i < count; i++) {                  \
            int32_t v = vals[i];                                  \
            if (v & REPEAT_MARK) {                                \
                if (skip)                                         \
                    continue;                                     \
                v &= ~REPEAT_MARK;                                \
            }                                                     \
            *d++ = (TYPE)v;                                       \
        }                                                         \
    } while (0)

static void
write_values(PyObject *out, const int32_t *vals, Py_ssize_t count, int skip)
{
    switch (PyUnicode_KIND(out)) {
    case PyUnicode_1BYTE_KIND:
        WRITE_VALUES(Py_UCS1);
        break;
    case PyUnicode_2BYTE_KIND:
        WRITE_VALUES(Py_UCS2);
        break;
    default:
        WRITE_VALUES(Py_UCS4);
        break;
    }
}

static PyObject *
Folder_fold(Folder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "fold(text, collapse=False)");
        return NULL;
    }
    PyObject *text = args[0];
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "fold() argument must be str, not %.80s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    int collapse = 0;
    if (nargs == 2 && (collapse = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const int32_t *table = self->table;
    Py_ssize_t size = self->size;
    /* One pass: each kept character's folded value (repeats marked) and the counts. */
    int32_t stack[512];
    int32_t *vals = n <= 512 ? stack : PyMem_Malloc(n * sizeof(int32_t));
    if (vals == NULL)
        return PyErr_NoMemory();
    Py_ssize_t count = 0, ascii = 0, digits = 0, ascii_in = 0, digits_in = 0, repeats = 0, run = 0, longest = 0;
    Py_UCS4 maxchar = 0;
    int32_t last = -1;
    int changed = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        if (cp < 128) {
            ascii_in++;
            if (cp >= '0' && cp <= '9')
                digits_in++;
        }
        int32_t v = (Py_ssize_t)cp < size ? table[cp] : (int32_t)cp;
        if (v < 0) {
            changed = 1;
            continue;
        }
        if ((Py_UCS4)v != cp)
            changed = 1;
        if (v >= '0' && v <= '9') {
            digits++;
            if (++run > longest)
                longest = run;
        }
        else {
            run = 0;
        }
        if (v < 128)
            ascii++;
        if ((Py_UCS4)v > maxchar)
            maxchar = (Py_UCS4)v;
        if (v == last && !Py_UNICODE_ISDECIMAL(cp)) {
            repeats++;
            vals[count++] = v | REPEAT_MARK;  /* code points stay below 0x110000 */
        }
        else {
            vals[count++] = v;
        }
        last = v;
    }
    PyObject *out = NULL, *words = NULL, *result = NULL;
    if (!changed) {
        out = Py_NewRef(text);
    }
    else if ((out = PyUnicode_New(count, maxchar)) != NULL) {
        write_values(out, vals, count, 0);
    }
    if (out != NULL) {
        if (!collapse || !repeats) {
            words = Py_NewRef(out);
        }
        else if ((words = PyUnicode_New(count - repeats, maxchar)) != NULL) {
            /* The collapsed text has the folded text's characters, so the same width fits. */
            write_values(words, vals, count, 1);
        }
    }
    if (vals != stack)
        PyMem_Free(vals);
    if (out == NULL || words == NULL || (result = PyTuple_New(7)) == NULL) {
        Py_XDECREF(out);
        Py_XDECREF(words);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, out);
    PyTuple_SET_ITEM(result, 1, words);
    Py_ssize_t counts[5] = {ascii, digits, ascii_in, digits_in, longest};
    for (int k = 0; k < 5; k++) {
        PyObject *x = PyLong_FromSsize_t(counts[k]);
        if (x == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        PyTuple_SET_ITEM(result, 2 + k, x);
    }
    return result;
}

/* words(text) -> the folded text with repeats collapsed: a character whose fold equals the fold
 * of the character kept before it is dropped, unless it was typed as a decimal digit (so
 * ``fffuuuck`` and ``五五星星`` collapse, ``699`` and ``13888888888`` stay as typed). */
static PyObject *
Folder_words(Folder *self, PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "words() argument must be str, not %.80s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const int32_t *table = self->table;
    Py_ssize_t size = self->size;
    Py_UCS4 *buf = PyMem_Malloc((n ? n : 1) * sizeof(Py_UCS4));
    if (buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t j = 0;
    int32_t last = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        int32_t v = (Py_ssize_t)cp < size ? table[cp] : (int32_t)cp;
        if (v < 0 || (v == last && !Py_UNICODE_ISDECIMAL(cp)))
            continue;
        last = v;
        buf[j++] = (Py_UCS4)v;
    }
    PyObject *out = PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, buf, j);
    PyMem_Free(buf);
    return out;
}

/* spans(text, collapse=True) -> bytes of int32 triples (first, last, count), one per character
 * of ``words(text)`` (``collapse``) or of the folded text: the first and last index in ``text`` of
 * the characters it stands for and how many they are (the filter maps a hit back to the text
 * with it). */
static PyObject *
Folder_spans(Folder *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 2) {
        PyErr_SetString(PyExc_TypeError, "spans(text, collapse=True)");
        return NULL;
    }
    PyObject *text = args[0];
    int collapse = 1;
    if (nargs == 2 && (collapse = PyObject_IsTrue(args[1])) < 0)
        return NULL;
    if (!PyUnicode_Check(text)) {
        PyErr_Format(PyExc_TypeError, "spans() argument must be str, not %.80s", Py_TYPE(text)->tp_name);
        return NULL;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    int kind = PyUnicode_KIND(text);
    const void *data = PyUnicode_DATA(text);
    const int32_t *table = self->table;
    Py_ssize_t size = self->size;
    int32_t *buf = PyMem_Malloc((n ? n : 1) * 3 * sizeof(int32_t));
    if (buf == NULL)
        return PyErr_NoMemory();
    Py_ssize_t j = 0;
    int32_t last = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 cp = PyUnicode_READ(kind, data, i);
        int32_t v = (Py_ssize_t)cp < size ? table[cp] : (int32_t)cp;
        if (v < 0)
            continue;
        if (collapse && v == last && !Py_UNICODE_ISDECIMAL(cp)) {
            buf[j - 2] = (int32_t)i;
            buf[j - 1]++;
            continue;
        }
        last = v;
        buf[j++] = (int32_t)i;
        buf[j++] = (int32_t)i;
        buf[j++] = 1;
    }
    PyObject *out = PyBytes_FromStringAndSize((const char *)buf, j * (Py_ssize_t)sizeof(int32_t));
    PyMem_Free(buf);
    return out;
}

static PyMethodDef Folder_methods[] = {
    {"fold", (PyCFunction)(void (*)(void))Folder_fold, METH_FASTCALL,
     "fold(text, collapse=False) -> (folded, words, ascii, digits, ascii_in, digits_in, run): ``text`` mapped "
     "through the table (deleted characters dropped; ``text`` itself when nothing changes), the same "
     "with repeats collapsed if ``collapse`` (else, or when nothing repeats, the folded text itself), "
     "the counts of ASCII characters and ASCII digits in the folded text and in ``text``, and the longest "
     "run of ASCII digits in the folded text."},
    {"words", (PyCFunction)Folder_words, METH_O,
     "words(text) -> the folded text with each repeat of the previous kept character dropped "
     "(characters typed as decimal digits are never dropped)."},
    {"spans", (PyCFunction)(void (*)(void))Folder_spans, METH_FASTCALL,
     "spans(text, collapse=True) -> bytes of int32 (first, last, count) triples, one per character of "
     "words(text) (collapse) or of the folded text."},
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
