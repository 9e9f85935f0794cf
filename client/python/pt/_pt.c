/*
 * _pt.c — the C extension of the Python package `pt`: one Client type over
 * libpt (pt.h), linked statically so that no LD_LIBRARY_PATH is needed.
 *
 * Every libpt call runs with the GIL released; a negative code is raised as
 * pt.Error(code, name, text), PT_SKIPPED is returned as the value SKIPPED
 * (and PT_RECOVER as RECOVER).
 * Registered memory is held by a buffer view (Py_buffer) for the life of the
 * client, so Python cannot free it under libpt's copy threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "snapshot/snap_store.h"

static PyObject *pt_error_type;

typedef struct {
  PyObject_HEAD
  pt_client *c;
  Py_buffer *views; /* one per registered region, released at close */
  Py_ssize_t nviews, capviews;
} client_obj;

/* Bytes from another process (an SMP's message, a name in an object) as
 * str: invalid UTF-8 (a message cut in the middle of a character, a garbage
 * name) replaced, never a UnicodeDecodeError instead of pt.Error. */
static PyObject *text_of(const char *t) {
  return PyUnicode_DecodeUTF8(t, (Py_ssize_t)strlen(t), "replace");
}

static PyObject *raise_text(int rc, const char *text) {
  PyObject *args = Py_BuildValue("(isN)", rc, pt_err_name(rc), text_of(text));
  if (args) {
    PyErr_SetObject(pt_error_type, args);
    Py_DECREF(args);
  }
  return NULL;
}

/* rc as pt.Error, with the client's last message when it has one. */
static PyObject *raise_pt(client_obj *self, int rc) {
  const char *last = self && self->c ? pt_last_error(self->c) : "";
  return raise_text(rc, last && *last ? last : pt_strerror(rc));
}

static int check_open(client_obj *self) {
  if (!self->c) {
    PyErr_SetString(PyExc_ValueError, "the client is closed");
    return -1;
  }
  return 0;
}

static int client_init(client_obj *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"socket_path", "job", "rank", "world", "timeout_ms",
                          "snapshot_timeout_ms", "copy_threads",
                          "recover_in_place", NULL};
  const char *sock = NULL, *job = NULL;
  PyObject *rank = Py_None;
  int world = 0, tmo = 0, stmo = 0, threads = 0, recover = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|zzOiiiip", names, &sock, &job, &rank,
                                   &world, &tmo, &stmo, &threads, &recover))
    return -1;
  if (self->c) {
    PyErr_SetString(PyExc_ValueError, "the client is already open");
    return -1;
  }
  struct pt_options o;
  memset(&o, 0, sizeof o);
  o.size = sizeof o;
  o.socket_path = sock;
  o.job = job;
  if (rank != Py_None) {
    long r = PyLong_AsLong(rank);
    if (r == -1 && PyErr_Occurred()) return -1;
    if (r < 0 || r > INT32_MAX) {
      PyErr_SetString(PyExc_ValueError, "rank must be >= 0");
      return -1;
    }
    o.rank = (int)r;
    o.rank_set = true;
  }
  o.world = world;
  o.timeout_ms = tmo;
  o.snapshot_timeout_ms = stmo;
  o.copy_threads = threads;
  o.recover_in_place = recover != 0;
  pt_client *c = NULL;
  int rc;
  Py_BEGIN_ALLOW_THREADS rc = pt_client_open(&c, &o);
  Py_END_ALLOW_THREADS if (rc < 0) {
    raise_pt(NULL, rc);
    return -1;
  }
  self->c = c;
  return 0;
}

static void release_views(client_obj *self) {
  for (Py_ssize_t i = 0; i < self->nviews; i++) PyBuffer_Release(&self->views[i]);
  PyMem_Free(self->views);
  self->views = NULL;
  self->nviews = self->capviews = 0;
}

static void close_client(client_obj *self, int done) {
  if (self->c) {
    pt_client *c = self->c;
    self->c = NULL;
    Py_BEGIN_ALLOW_THREADS pt_client_close(c, done != 0);
    Py_END_ALLOW_THREADS
  }
  release_views(self);
}

static void client_dealloc(client_obj *self) {
  close_client(self, 0);
  Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *client_close(client_obj *self, PyObject *args, PyObject *kw) {
  static char *names[] = {"done", NULL};
  int done = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|p", names, &done)) return NULL;
  close_client(self, done);
  Py_RETURN_NONE;
}

/* register(name, buffer) — a writable, C-contiguous buffer. */
static PyObject *client_register(client_obj *self, PyObject *args) {
  const char *name;
  PyObject *obj;
  if (!PyArg_ParseTuple(args, "sO", &name, &obj) || check_open(self)) return NULL;
  if (self->nviews == self->capviews) {
    Py_ssize_t cap = self->capviews ? self->capviews * 2 : 64;
    Py_buffer *v = PyMem_Realloc(self->views, (size_t)cap * sizeof *v);
    if (!v) return PyErr_NoMemory();
    self->views = v;
    self->capviews = cap;
  }
  Py_buffer *view = &self->views[self->nviews];
  if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
    PyErr_Clear();
    PyErr_Format(PyExc_ValueError,
                 "region '%s': needs a writable, C-contiguous buffer (a "
                 "non-contiguous array or tensor cannot be registered)",
                 name);
    return NULL;
  }
  int rc = pt_region_register(self->c, name, view->buf, (size_t)view->len, PT_MEM_HOST);
  if (rc < 0) {
    PyBuffer_Release(view);
    return raise_pt(self, rc);
  }
  self->nviews++;
  Py_RETURN_NONE;
}

/* register_ptr(name, address, nbytes, device=False) — memory Python does not
 * own as a buffer (a tensor's data_ptr()); the caller keeps it alive. */
static PyObject *client_register_ptr(client_obj *self, PyObject *args) {
  const char *name;
  unsigned long long addr, n;
  int dev = 0;
  if (!PyArg_ParseTuple(args, "sKK|p", &name, &addr, &n, &dev) || check_open(self))
    return NULL;
  int rc = pt_region_register(self->c, name, (void *)(uintptr_t)addr, (size_t)n,
                              dev ? PT_MEM_DEVICE : PT_MEM_HOST);
  if (rc < 0) return raise_pt(self, rc);
  Py_RETURN_NONE;
}

static PyObject *client_update_ptr(client_obj *self, PyObject *args) {
  const char *name;
  unsigned long long addr;
  if (!PyArg_ParseTuple(args, "sK", &name, &addr) || check_open(self)) return NULL;
  int rc = pt_region_update(self->c, name, (void *)(uintptr_t)addr);
  if (rc < 0) return raise_pt(self, rc);
  Py_RETURN_NONE;
}

static PyObject *client_snapshot(client_obj *self, PyObject *args) {
  unsigned long long step;
  if (!PyArg_ParseTuple(args, "K", &step) || check_open(self)) return NULL;
  int rc;
  pt_client *c = self->c;
  Py_BEGIN_ALLOW_THREADS rc = pt_snapshot(c, step);
  Py_END_ALLOW_THREADS if (rc < 0) return raise_pt(self, rc);
  return PyLong_FromLong(rc);
}

static PyObject *client_fence(client_obj *self, PyObject *unused) {
  (void)unused;
  if (check_open(self)) return NULL;
  int rc;
  pt_client *c = self->c;
  Py_BEGIN_ALLOW_THREADS rc = pt_fence(c);
  Py_END_ALLOW_THREADS if (rc < 0) return raise_pt(self, rc);
  Py_RETURN_NONE;
}

/* restore() -> step, or None on PT_ENOSNAP (a fresh start). */
static PyObject *client_restore(client_obj *self, PyObject *unused) {
  (void)unused;
  if (check_open(self)) return NULL;
  uint64_t step = 0;
  int rc;
  pt_client *c = self->c;
  Py_BEGIN_ALLOW_THREADS rc = pt_restore(c, &step);
  Py_END_ALLOW_THREADS if (rc == PT_ENOSNAP) Py_RETURN_NONE;
  if (rc < 0) return raise_pt(self, rc);
  return PyLong_FromUnsignedLongLong(step);
}

/* cuda_stream_set(handle): pt_cuda_stream_set with a cudaStream_t given as
 * an integer (torch.cuda.current_stream().cuda_stream); 0: none. */
static PyObject *client_cuda_stream_set(client_obj *self, PyObject *arg) {
  if (check_open(self)) return NULL;
  unsigned long long h = PyLong_AsUnsignedLongLong(arg);
  if (h == (unsigned long long)-1 && PyErr_Occurred()) return NULL;
  int rc = pt_cuda_stream_set(self->c, (void *)(uintptr_t)h);
  if (rc < 0) return raise_pt(self, rc);
  Py_RETURN_NONE;
}

/* recover_pending(timeout_ms=0) -> the recovery's generation when the node
 * asks this trainer to restore in place, else None. */
static PyObject *client_recover_pending(client_obj *self, PyObject *args,
                                        PyObject *kw) {
  static char *names[] = {"timeout_ms", NULL};
  int tmo = 0;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "|i", names, &tmo) || check_open(self))
    return NULL;
  if (tmo < 0) {
    PyErr_SetString(PyExc_ValueError, "timeout_ms must be >= 0");
    return NULL;
  }
  uint64_t gen = 0;
  int rc;
  pt_client *c = self->c;
  Py_BEGIN_ALLOW_THREADS rc = pt_recover_pending(c, tmo, &gen);
  Py_END_ALLOW_THREADS if (rc < 0) return raise_pt(self, rc);
  if (rc != PT_RECOVER) Py_RETURN_NONE;
  return PyLong_FromUnsignedLongLong(gen);
}

static PyObject *client_blob_set(client_obj *self, PyObject *args) {
  Py_buffer b;
  if (check_open(self) || !PyArg_ParseTuple(args, "y*", &b)) return NULL;
  int rc = pt_blob_set(self->c, b.buf, (size_t)b.len);
  PyBuffer_Release(&b);
  if (rc < 0) return raise_pt(self, rc);
  Py_RETURN_NONE;
}

/* blob_get() -> bytes, or None when no restore has succeeded. */
static PyObject *client_blob_get(client_obj *self, PyObject *unused) {
  (void)unused;
  if (check_open(self)) return NULL;
  size_t len = 0;
  int rc = pt_blob_get(self->c, NULL, 0, &len);
  if (rc == PT_ENOSNAP) Py_RETURN_NONE;
  if (rc < 0 && rc != -ENOBUFS) return raise_pt(self, rc);
  PyObject *out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)len);
  if (!out || len == 0) return out;
  rc = pt_blob_get(self->c, PyBytes_AS_STRING(out), len, &len);
  if (rc < 0) {
    Py_DECREF(out);
    return raise_pt(self, rc);
  }
  return out;
}

static PyObject *client_status(client_obj *self, PyObject *unused) {
  (void)unused;
  if (check_open(self)) return NULL;
  struct pt_status st;
  int rc = pt_status_get(self->c, &st);
  if (rc < 0) return raise_pt(self, rc);
  return Py_BuildValue(
      "{s:I,s:I,s:K,s:K,s:K,s:K,s:K,s:O,s:N,s:O,s:s}", "rank", st.rank, "world",
      st.world, "regions", (unsigned long long)st.regions, "bytes",
      (unsigned long long)st.bytes, "snapshots_started",
      (unsigned long long)st.snapshots_started, "snapshots_skipped",
      (unsigned long long)st.snapshots_skipped, "snapshots_failed",
      (unsigned long long)st.snapshots_failed, "has_committed",
      st.has_committed ? Py_True : Py_False, "committed_step",
      st.has_committed ? PyLong_FromUnsignedLongLong(st.committed_step) : Py_NewRef(Py_None),
      "in_flight", st.in_flight ? Py_True : Py_False, "backend",
      st.backend ? st.backend : "");
}

static PyObject *client_enter(PyObject *self, PyObject *unused) {
  (void)unused;
  Py_INCREF(self);
  return self;
}

static PyObject *client_exit(client_obj *self, PyObject *args) {
  (void)args;
  close_client(self, 0);
  Py_RETURN_FALSE;
}

static PyMethodDef client_methods[] = {
    {"close", (PyCFunction)(void (*)(void))client_close, METH_VARARGS | METH_KEYWORDS,
     "close(done=False): fence, tell the SMP the rank finished when done, free."},
    {"register", (PyCFunction)client_register, METH_VARARGS,
     "register(name, buffer): register a writable C-contiguous buffer as a region."},
    {"register_ptr", (PyCFunction)client_register_ptr, METH_VARARGS,
     "register_ptr(name, address, nbytes, device=False): register raw memory."},
    {"update_ptr", (PyCFunction)client_update_ptr, METH_VARARGS,
     "update_ptr(name, address): point a region at memory that moved."},
    {"snapshot", (PyCFunction)client_snapshot, METH_VARARGS,
     "snapshot(step) -> OK (0), SKIPPED (1) or RECOVER (2: a client opened\n"
     "with recover_in_place, asked to restore in place); raises pt.Error on\n"
     "failure."},
    {"cuda_stream_set", (PyCFunction)client_cuda_stream_set, METH_O,
     "cuda_stream_set(handle): the CUDA stream (an integer cudaStream_t, e.g.\n"
     "torch.cuda.current_stream().cuda_stream; 0: none) whose queued work\n"
     "every following snapshot's device copies wait for."},
    {"recover_pending", (PyCFunction)(void (*)(void))client_recover_pending,
     METH_VARARGS | METH_KEYWORDS,
     "recover_pending(timeout_ms=0) -> the recovery's generation when ptd asks\n"
     "this trainer to restore in place (asking every 20 ms until timeout_ms),\n"
     "else None. Needs recover_in_place=True."},
    {"fence", (PyCFunction)client_fence, METH_NOARGS,
     "fence(): wait until the last snapshot's copy is done."},
    {"restore", (PyCFunction)client_restore, METH_NOARGS,
     "restore() -> the restored step, or None when there is nothing to restore."},
    {"blob_set", (PyCFunction)client_blob_set, METH_VARARGS,
     "blob_set(data): bytes stored with every following snapshot (<= 1 MiB)."},
    {"blob_get", (PyCFunction)client_blob_get, METH_NOARGS,
     "blob_get() -> the restored step's blob, or None before a restore."},
    {"status", (PyCFunction)client_status, METH_NOARGS, "status() -> dict"},
    {"__enter__", client_enter, METH_NOARGS, NULL},
    {"__exit__", (PyCFunction)client_exit, METH_VARARGS, NULL},
    {NULL, NULL, 0, NULL}};

static PyTypeObject client_type = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "pt._pt.Client",
    .tp_basicsize = sizeof(client_obj),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Client(socket_path=None, job=None, rank=None, world=0, timeout_ms=0,\n"
              "       snapshot_timeout_ms=0, copy_threads=0, recover_in_place=False)\n"
              "One rank's connection to its SMP; unset options come from the\n"
              "environment ptd sets for the trainer (pt.h, struct pt_options).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)client_init,
    .tp_dealloc = (destructor)client_dealloc,
    .tp_methods = client_methods,
};

static PyObject *mod_strerror(PyObject *m, PyObject *arg) {
  (void)m;
  long rc = PyLong_AsLong(arg);
  if (rc == -1 && PyErr_Occurred()) return NULL;
  return PyUnicode_FromString(pt_strerror((int)rc));
}

/* object_name(prefix, job, rank) -> "/<prefix>pt.<job>.<rank>" */
static PyObject *mod_object_name(PyObject *m, PyObject *args) {
  (void)m;
  const char *prefix, *job;
  unsigned int rank;
  char name[256];
  if (!PyArg_ParseTuple(args, "zsI", &prefix, &job, &rank)) return NULL;
  int rc = snap_store_name(name, sizeof name, prefix, job, rank);
  if (rc < 0) return raise_text(rc, pt_strerror(rc));
  return PyUnicode_FromString(name);
}

static bool same_record(const struct snap_slot_info *a, const struct snap_slot_info *b) {
  return a->record_ok && b->record_ok && a->state == b->state && a->step == b->step &&
         a->generation == b->generation && a->blob_crc == b->blob_crc;
}

/* The reads of read_committed, guarded against SIGBUS (an object truncated
 * under us): verify the slot, then copy its regions and blob into buffers
 * allocated before (nothing here allocates or takes a lock). */
struct read_job {
  const struct snap_store *s;
  uint32_t slot, nregions, bad;
  char **dst;          /* nregions region buffers, then the blob's */
  uint32_t blob_bytes;
  int rc;
};

static int read_guarded(void *arg) {
  struct read_job *j = arg;
  j->rc = snap_slot_verify(j->s, j->slot, &j->bad);
  if (j->rc != PT_OK) return 0;
  const uint8_t *data = snap_slot_data(j->s, j->slot);
  for (uint32_t i = 0; i < j->nregions; i++) {
    const struct snap_region *r = snap_store_region(j->s, i);
    memcpy(j->dst[i], data + r->offset, r->bytes);
  }
  memcpy(j->dst[j->nregions], snap_slot_blob(j->s, j->slot), j->blob_bytes);
  return 0;
}

static struct sigaction read_old_bus;

static void read_on_bus(int sig, siginfo_t *si, void *uc) {
  (void)sig;
  (void)uc;
  snap_fault_catch(si->si_addr); /* returns only for a fault not in our read */
  sigaction(SIGBUS, &read_old_bus, NULL); /* theirs: refaults as before */
}

/* read_committed(object, step=None) -> dict: a committed step of a rank's
 * snapshot object, read without its SMP: the object validated as the SMP
 * validates it (owner, mode, format), the slot's every block and its blob
 * checked against their CRC32C, the bytes copied out, and the slot's record
 * read again after the copy, so that a step replaced while it was read is
 * an error (-EAGAIN), never a mix of two steps. */
static PyObject *mod_read_committed(PyObject *m, PyObject *args, PyObject *kw) {
  (void)m;
  static char *names[] = {"object", "step", NULL};
  const char *name;
  PyObject *stepo = Py_None;
  if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O", names, &name, &stepo)) return NULL;
  char err[512] = "";
  struct snap_store *s = NULL;
  int rc = snap_store_open(&s, name, err, sizeof err);
  if (rc < 0) return raise_text(rc, err[0] ? err : pt_strerror(rc));
  uint32_t slot = 0;
  uint64_t step = 0;
  if (stepo == Py_None) {
    rc = snap_slot_newest_committed(s, &slot, &step);
    if (rc != PT_OK) {
      snprintf(err, sizeof err, "'%s' holds no committed step", name);
      goto fail;
    }
  } else {
    step = PyLong_AsUnsignedLongLong(stepo);
    if (PyErr_Occurred()) {
      snap_store_close(s);
      return NULL;
    }
    rc = snap_slot_find_step(s, step, &slot);
    if (rc != PT_OK) {
      snprintf(err, sizeof err, "'%s' does not hold step %llu", name,
               (unsigned long long)step);
      goto fail;
    }
  }
  struct snap_slot_info before;
  snap_slot_get(s, slot, &before);
  if (!before.record_ok || before.state != SNAP_COMMITTED || before.step != step) {
    rc = PT_ESTATE;
    snprintf(err, sizeof err, "'%s': step %llu is %s, not committed", name,
             (unsigned long long)step, snap_state_name(before.state));
    goto fail;
  }
  rc = snap_store_check(s, name, false, err, sizeof err);
  if (rc != PT_OK) goto fail;
  uint32_t nreg = snap_store_nregions(s);
  PyObject *regions = PyList_New(nreg), *blob = NULL, *out = NULL;
  char **dst = regions ? PyMem_Calloc(nreg + 1u, sizeof *dst) : NULL;
  if (!dst) {
    Py_XDECREF(regions);
    if (!PyErr_Occurred()) PyErr_NoMemory();
    goto fail_py;
  }
  for (uint32_t i = 0; i < nreg; i++) {
    const struct snap_region *r = snap_store_region(s, i);
    PyObject *b = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)r->bytes);
    PyObject *nm = PyUnicode_DecodeUTF8(r->name, (Py_ssize_t)strnlen(r->name, SNAP_NAME_MAX),
                                        "surrogateescape");
    PyObject *t = b && nm ? PyTuple_Pack(2, nm, b) : NULL;
    if (t) dst[i] = PyBytes_AS_STRING(b);
    Py_XDECREF(b);
    Py_XDECREF(nm);
    if (!t) {
      PyMem_Free(dst);
      Py_DECREF(regions);
      goto fail_py;
    }
    PyList_SET_ITEM(regions, i, t);
  }
  blob = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)before.blob_bytes);
  if (!blob) {
    PyMem_Free(dst);
    Py_DECREF(regions);
    goto fail_py;
  }
  dst[nreg] = PyBytes_AS_STRING(blob);
  struct read_job job = {.s = s, .slot = slot, .nregions = nreg, .dst = dst,
                         .blob_bytes = before.blob_bytes, .rc = PT_OK};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = read_on_bus;
  sa.sa_flags = SA_SIGINFO;
  sigemptyset(&sa.sa_mask);
  Py_BEGIN_ALLOW_THREADS
  sigaction(SIGBUS, &sa, &read_old_bus);
  rc = snap_fault_run(s, read_guarded, &job);
  sigaction(SIGBUS, &read_old_bus, NULL);
  Py_END_ALLOW_THREADS
  PyMem_Free(dst);
  if (rc == PT_OK) rc = job.rc;
  if (rc != PT_OK) {
    Py_DECREF(regions);
    Py_DECREF(blob);
    if (rc == -EFAULT)
      snprintf(err, sizeof err, "'%s' was truncated while step %llu was read", name,
               (unsigned long long)step);
    else
      snprintf(err, sizeof err, "'%s': step %llu fails its checksums (block %u of %u)",
               name, (unsigned long long)step, job.bad, snap_store_nblocks(s));
    goto fail;
  }
  /* the copy's reads before the record's second read */
  atomic_thread_fence(memory_order_acquire);
  struct snap_slot_info after;
  snap_slot_get(s, slot, &after);
  if (!same_record(&before, &after)) {
    Py_DECREF(regions);
    Py_DECREF(blob);
    rc = -EAGAIN;
    snprintf(err, sizeof err, "'%s': step %llu was replaced while it was read; read again",
             name, (unsigned long long)step);
    goto fail;
  }
  out = Py_BuildValue("{s:K,s:N,s:I,s:I,s:N,s:N}", "step", (unsigned long long)step,
                      "job", text_of(snap_store_job(s)), "rank", snap_store_rank(s), "world",
                      snap_store_world(s), "regions", regions, "blob", blob);
  snap_store_close(s);
  return out;
fail_py:
  snap_store_close(s);
  return NULL;
fail:
  snap_store_close(s);
  return raise_text(rc, err);
}

static PyObject *mod_err_name(PyObject *m, PyObject *arg) {
  (void)m;
  long rc = PyLong_AsLong(arg);
  if (rc == -1 && PyErr_Occurred()) return NULL;
  return PyUnicode_FromString(pt_err_name((int)rc));
}

static PyMethodDef mod_methods[] = {
    {"strerror", mod_strerror, METH_O, "strerror(code) -> libpt's text for code"},
    {"err_name", mod_err_name, METH_O, "err_name(code) -> e.g. 'PT_ECHECKSUM', 'ENOENT'"},
    {"object_name", mod_object_name, METH_VARARGS,
     "object_name(prefix, job, rank) -> the rank's shm object name"},
    {"read_committed", (PyCFunction)(void (*)(void))mod_read_committed,
     METH_VARARGS | METH_KEYWORDS,
     "read_committed(object, step=None) -> {step, job, rank, world, regions, blob}:\n"
     "a committed step (the newest, or step) read from a snapshot object, checked."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef mod_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "pt._pt",
    .m_doc = "libpt, linked in (see pt.h).",
    .m_size = -1,
    .m_methods = mod_methods,
};

PyMODINIT_FUNC PyInit__pt(void) {
  if ((pt_version() >> 16) != PT_VERSION_MAJOR) {
    PyErr_SetString(PyExc_ImportError, "libpt's ABI major differs from pt.h's");
    return NULL;
  }
  if (PyType_Ready(&client_type) < 0) return NULL;
  PyObject *m = PyModule_Create(&mod_def);
  if (!m) return NULL;
  pt_error_type = PyErr_NewExceptionWithDoc(
      "pt._pt.Error", "A libpt failure: args are (code, name, text).", NULL, NULL);
  if (!pt_error_type || PyModule_AddObjectRef(m, "Error", pt_error_type) < 0 ||
      PyModule_AddObjectRef(m, "Client", (PyObject *)&client_type) < 0 ||
      PyModule_AddIntConstant(m, "OK", PT_OK) < 0 ||
      PyModule_AddIntConstant(m, "SKIPPED", PT_SKIPPED) < 0 ||
      PyModule_AddIntConstant(m, "RECOVER", PT_RECOVER) < 0 ||
      PyModule_AddIntConstant(m, "ENOSNAP", PT_ENOSNAP) < 0 ||
      PyModule_AddIntConstant(m, "VERSION", (long)pt_version()) < 0) {
    Py_DECREF(m);
    return NULL;
  }
  return m;
}
