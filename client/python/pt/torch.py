"""pt for PyTorch: a model's, an optimizer's and a training loop's state,
snapshotted every step by pt and restored bit-exact after a failure.

    import pt.torch
    state = pt.torch.State(model, optimizer, extra={"sampler": sampler})
    start = state.restore()            # None on a fresh start, else a step
    for step in range(0 if start is None else start + 1, steps):
        ...forward, backward, optimizer.step()...
        state.snapshot(step)
    state.close(done=True)

What is captured (every snapshot, and put back by restore()):

- every parameter and buffer of the model (named_parameters() and
  named_buffers(), in that order), registered in place: the copy is pt's,
  from the tensors' own memory, asynchronous;
- every tensor of the optimizer's state. Adam and AdamW create theirs
  lazily, at the first step(); State creates it up front with torch's own
  code and resets it to what the first step would have found, so the
  trajectory is the one without pt. Other optimizers with state are refused
  (their lazy state cannot be made up front without changing the run);
  SGD without momentum has none;
- the optimizer's param_groups (the learning rate a scheduler set), and
  state values that are not tensors;
- the CPU RNG (torch.get_rng_state()), every initialised CUDA device's RNG,
  Python's random and, when NumPy is imported, NumPy's global RNG;
- each extra object's state_dict(), pickled, within its declared size.

Each snapshot's blob begins with a JSON table of the tensors (name, dtype,
shape, kind), so a snapshot can be read without the program that wrote it;
a restore whose table differs (another model, another dtype) is refused.

The regions must not change while pt copies them: State waits for the copy
(fences) in an optimizer step pre-hook and, when the model has buffers
(see buffers_change), a forward pre-hook, so a loop that only calls
snapshot() once per step is safe. State that
changes outside forward() and optimizer.step() between two snapshots must be
fenced by the caller (state.fence()).

Without an SMP (PT_SMP_SOCKET unset: not started by ptd) State says so once
on stderr and every call is a no-op: restore() returns None, snapshot()
returns pt.SKIPPED, and the run goes on without snapshots.
"""
import json
import pickle
import random
import struct
import sys
import os
import warnings

import torch

from . import _pt
from . import Client, Error, RECOVER, SKIPPED

__all__ = ["State", "ConfigError", "BLOB_MAGIC", "read_table", "export"]

BLOB_MAGIC = b"PTT1"
_BLOB_MAX = 1 << 20          # PT_BLOB_MAX
_EXTRA_DEFAULT = 64 << 10    # bytes an extra object's pickled state may take
_PT_ENORESTORE = -1017       # pt.h
_PT_ESTATE = -1007
_RECOVER_ASK_MS = 5000       # a failed step: how long to wait for ptd's word
# restore() reads the other replicas' shares held on this machine from
# their snapshot objects; False: every share over the group's broadcasts
# (as for replicas on other machines; the tests take both paths)
NEAR_SHARES = True
_EX_CONFIG = 78              # ptd fails the job, without a restart, on this exit


class ConfigError(Exception):
    """A mistake no restart cures (an optimizer State cannot take, a tensor it
    cannot copy, an extra over its size). Under ptd an uncaught one ends the
    process with status 78 (EX_CONFIG), so that ptd fails the job at once
    rather than restarting it up to --max-restarts times."""


class ConfigTypeError(ConfigError, TypeError):
    pass


class ConfigValueError(ConfigError, ValueError):
    pass


# libpt's codes that no restart cures either, raised from State's calls
_PERMANENT = {"PT_EREGIONS", "PT_ENORESTORE", "PT_ESTEP", "PT_ETOOBIG", "PT_EBUDGET",
              "PT_EOVERLAP", "PT_ECONFIG", "PT_ENODEVICE", "E2BIG"}
_PT_EREGIONS = -1008         # pt.h
_hook_installed = False


def _install_excepthook():
    global _hook_installed
    if _hook_installed:
        return
    _hook_installed = True
    prev = sys.excepthook

    def hook(tp, value, tb):
        prev(tp, value, tb)
        if isinstance(value, ConfigError) or (isinstance(value, Error) and
                                              getattr(value, "name", "") in _PERMANENT):
            sys.stderr.write("pt: a configuration error: exiting %d (EX_CONFIG), so "
                             "that ptd does not restart the job\n" % _EX_CONFIG)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(_EX_CONFIG)

    sys.excepthook = hook

# Optimizers whose lazily created state State can make up front exactly:
# torch's first step() builds it from zeros (and a zero step count).
_LAZY_ZERO = (torch.optim.Adam, torch.optim.AdamW)


def _dtype_name(dt):
    return str(dt).replace("torch.", "")


def read_table(blob):
    """The tensor table of a snapshot's blob (bytes from Client.blob_get()):
    a list of dicts with name, dtype, shape, kind and bytes (and share, the
    bytes [lo, hi) this rank holds, when the tensors were sharded across
    replicas), in region order. Raises ValueError when the blob was not
    written by pt.torch."""
    return _read_top(blob)["tensors"]


def _read_top(blob):
    if blob is None or len(blob) < 8 or blob[:4] != BLOB_MAGIC:
        raise ValueError("not a pt.torch blob (no %r header)" % BLOB_MAGIC)
    (n,) = struct.unpack_from("<I", blob, 4)
    if 8 + n > len(blob):
        raise ValueError("pt.torch blob: table of %d bytes overruns the blob" % n)
    return json.loads(blob[8:8 + n].decode())


class _Entry:
    __slots__ = ("name", "kind", "get", "ptr", "nbytes", "ref", "lo", "hi", "sharded")

    def __init__(self, name, kind, get):
        self.name, self.kind, self.get = name, kind, get
        self.ptr, self.nbytes, self.ref = 0, 0, None
        self.lo = self.hi = None  # the bytes registered: all, or this replica's share
        self.sharded = False


def _share(n, r, replicas):
    """Replica r's share [lo, hi) of n bytes: 64-byte aligned, in order."""
    chunk = -(-n // replicas)
    chunk = -(-chunk // 64) * 64
    lo = min(n, r * chunk)
    return lo, min(n, lo + chunk)


def _flat(t):
    """The tensor's memory as bytes, a view in any dense memory format."""
    t = t.detach()
    return t.as_strided((t.numel(),), (1,), t.storage_offset()).view(torch.uint8)


class State:
    """The state of one training rank under pt.

    model: a torch.nn.Module (a DistributedDataParallel wrapper is fine).
    optimizer: a torch.optim.Optimizer over the model's parameters, or None.
    extra: {name: obj} or {name: (obj, max_bytes)}: objects with state_dict()
      and load_state_dict() (a sampler, a data-loader position, an LR
      scheduler); the pickled state_dict must fit max_bytes (default 64 KiB)
      and all of it, with the RNG states, pt's blob (1 MiB).
    buffers_change: True (default) when forward() writes the model's buffers
      (BatchNorm's running statistics, DDP's buffer broadcast): State then
      also fences before every forward(), so the copy of a snapshot overlaps
      only the rest of the loop. False when buffers are constants: the copy
      then overlaps forward and backward too, and is fenced before
      optimizer.step().
    replicas: the data-parallel group (a torch.distributed ProcessGroup, or
      True for the whole world) whose ranks hold the same parameters, buffers
      and optimizer state. Each rank then snapshots only its share (1/R of
      every tensor's bytes, R the group's size), and restore() rebuilds the
      tensors on every rank from the shares (R broadcasts of packed shares
      over the group: gloo on CPU, NCCL on GPU), bit-exact. None (default):
      every rank snapshots all of its tensors.
    client: a pt.Client to use, else one is opened from the environment ptd
      sets (PT_SMP_SOCKET, RANK, WORLD_SIZE), with client_options passed on.
    recover_in_place (a client option): when another rank dies, ptd restarts
      only that one, and this process restores in place and goes on (see
      run() and recover()) instead of being restarted with it.
    """

    def __init__(self, model, optimizer=None, extra=None, client=None,
                 buffers_change=True, replicas=None, **client_options):
        self.model = model
        self.optimizer = optimizer
        self.extra = {}
        for name, v in (extra or {}).items():
            obj, cap = v if isinstance(v, tuple) else (v, _EXTRA_DEFAULT)
            if not (hasattr(obj, "state_dict") and hasattr(obj, "load_state_dict")):
                raise ConfigTypeError("pt.torch: extra %r has no state_dict()/"
                                      "load_state_dict() (a stock DataLoader or "
                                      "RandomSampler has none: give State an object "
                                      "that can say where the data is)" % name)
            self.extra[name] = (obj, int(cap))
        if sum(c for _o, c in self.extra.values()) > _BLOB_MAX - (64 << 10):
            raise ConfigValueError("pt.torch: the extras' declared sizes (%d bytes) leave "
                                   "no room in pt's blob of %d bytes for the RNG and "
                                   "optimizer state" % (sum(c for _o, c in
                                                            self.extra.values()), _BLOB_MAX))
        if optimizer is not None and hasattr(optimizer.step, "_wrapped_by_lr_sched") and \
                not any(isinstance(o, torch.optim.lr_scheduler.LRScheduler)
                        for o, _c in self.extra.values()):
            sys.stderr.write("pt: warning: the optimizer has an LR scheduler that is not "
                             "in extra: its position is not snapshotted, and a restored "
                             "run will not follow the schedule of the run that failed\n")
        if os.environ.get("PT_SMP_SOCKET"):
            _install_excepthook()
        self.client = None
        self.job_name = None
        self.recover_in_place = False
        self.entries = []
        self.hooks = []
        self.restored = False
        self.ddp_layout = None
        self.shares_near, self.shares_sent = [], []
        self.group, self.replica, self.replicas = None, 0, 1
        if replicas is not None and replicas is not False:
            import torch.distributed as dist
            if replicas is not True and client_options.get("recover_in_place"):
                raise ConfigValueError("pt.torch: recover_in_place re-forms the default "
                                       "process group only: give replicas=True (the "
                                       "whole world), not a group of its own")
            self.group = None if replicas is True else replicas
            self.replica = dist.get_rank(self.group)
            self.replicas = dist.get_world_size(self.group)
            self.group_ranks = [dist.get_global_rank(self.group, i) if self.group is not None
                                else i for i in range(self.replicas)]
            # what the group's backend can broadcast is sharded; the rest
            # (Adam's CPU step counters on an NCCL group) is kept whole
            self.shard_type = "cuda" if dist.get_backend(self.group) == "nccl" else "cpu"
        # The same checks, and the same up-front optimizer state, with or
        # without an SMP: a run without ptd is the run with it, unsnapshotted.
        if optimizer is not None:
            _init_lazy_state(model, optimizer)
        self._collect()
        for e in self.entries:
            t = e.get()
            _check_dense(e.name, t)
            e.ref, e.nbytes = t, t.numel() * t.element_size()
            e.sharded = self.replicas > 1 and t.device.type == self.shard_type
            e.lo, e.hi = self._range(e, self.replica)
        self.cuda_devices = sorted({e.ref.device for e in self.entries
                                    if e.ref.is_cuda}, key=str)
        top = {"tensors": [self._describe(e) for e in self.entries]}
        if self.replicas > 1:
            top["replicas"] = {"replica": self.replica, "of": self.replicas,
                               "ranks": self.group_ranks}
        self.table = json.dumps(top, sort_keys=True).encode()
        if client is None and not os.environ.get("PT_SMP_SOCKET") and \
                "socket_path" not in client_options:
            sys.stderr.write("pt: no SMP (PT_SMP_SOCKET is unset: not started by "
                             "ptd): training without snapshots\n")
            return
        self.client = client if client is not None else Client(**client_options)
        self.recover_in_place = bool(client_options.get("recover_in_place"))
        # the job's name, as its snapshot objects are named (a client given
        # by the caller: the environment's)
        self.job_name = client_options.get("job") or os.environ.get("PT_JOB") or "job"
        try:
            for e in self.entries:
                self._register(e)
            if self.replicas > 1:
                # Every replica's slot the same size: the erasure code of a
                # cluster job protects members of equal size (shares differ
                # by a tail), so the smaller ones are padded.
                size = lambda r: sum(-(-(hi - lo) // 64) * 64 for lo, hi in
                                     (self._range(e, r) for e in self.entries))
                self.pad = bytearray(max(size(r) for r in range(self.replicas))
                                     - size(self.replica) + 64)
                self.client.register("pt.pad", self.pad)
        except BaseException:
            if client is None:
                self.client.close()
            self.client = None
            raise
        if optimizer is not None:
            self.hooks.append(optimizer.register_step_pre_hook(
                lambda *_a, **_k: self.fence()))
        if buffers_change and any(e.kind == "buffer" for e in self.entries):
            self.hooks.append(model.register_forward_pre_hook(
                lambda *_a, **_k: self.fence()))

    # ---- the tensors ----

    def _collect(self):
        seen = set()

        def add(name, kind, get):
            t = get()
            if not isinstance(t, torch.Tensor):
                return
            if t.is_sparse or t.layout != torch.strided:
                raise ConfigValueError("pt.torch: %s is not a dense tensor (%s)"
                                       % (name, t.layout))
            if t.numel() == 0 or t.data_ptr() in seen:
                return  # nothing to copy; or tied to one registered already
            seen.add(t.data_ptr())
            self.entries.append(_Entry(name, kind, get))

        for name, p in self.model.named_parameters():
            add(name, "param", lambda p=p: p.data)
        for name, b in self.model.named_buffers():
            mod, _, attr = name.rpartition(".")
            owner = self.model.get_submodule(mod) if mod else self.model
            add(name, "buffer", lambda o=owner, a=attr: getattr(o, a))
        if self.optimizer is None:
            return
        names = {id(p): n for n, p in self.model.named_parameters()}
        self.opt_params = _opt_params(self.optimizer)
        for gi, g in enumerate(self.optimizer.param_groups):
            for pi, p in enumerate(g["params"]):
                if id(p) not in names:  # the optimizer's, not the model's
                    add("optparam.%d.%d" % (gi, pi), "param", lambda p=p: p.data)
        for gi, g in enumerate(self.optimizer.param_groups):
            for pi, p in enumerate(g["params"]):
                base = names.get(id(p), "optparam.%d.%d" % (gi, pi))
                st = self.optimizer.state.get(p, {})
                for key in sorted(st):
                    add("optim.%s.%s" % (base, key), "optim",
                        lambda p=p, k=key: self.optimizer.state[p][k])

    def _register(self, e):
        t = e.get()
        e.ref, e.ptr = t, t.data_ptr()
        if e.hi > e.lo:  # a replica's share may be empty (a tiny tensor)
            self.client.register_ptr(e.name, e.ptr + e.lo, e.hi - e.lo, t.is_cuda)

    def _describe(self, e):
        t = e.get()
        d = {"name": e.name, "kind": e.kind, "dtype": _dtype_name(t.dtype),
             "shape": list(t.shape), "stride": list(t.stride()), "bytes": e.nbytes,
             "device": "cuda" if t.is_cuda else "cpu"}
        if e.sharded:
            d["share"] = [e.lo, e.hi]
        return d

    def _range(self, e, r):
        """The bytes of e replica r holds: its share, or all of them."""
        return _share(e.nbytes, r, self.replicas) if e.sharded else (0, e.nbytes)

    def _follow(self):
        """Points regions whose tensor moved (a new .data, a replaced state
        tensor) at the new memory; the copy must be fenced."""
        if self.optimizer is not None and _opt_params(self.optimizer) != self.opt_params:
            raise ConfigValueError("pt.torch: the optimizer's parameter groups changed "
                                   "since State was built (add_param_group, a new "
                                   "optimizer): build State once they are final")
        for e in self.entries:
            t = e.get()
            if not isinstance(t, torch.Tensor) or t.numel() * t.element_size() != e.nbytes \
                    or t.dtype != e.ref.dtype or t.device != e.ref.device:
                raise ConfigValueError(
                    "pt.torch: %s changed size, dtype or device, or went away, since State "
                    "registered it (was %s %s on %s, now %s): build State after the model "
                    "and optimizer have their final dtype and device"
                    % (e.name, tuple(e.ref.shape), _dtype_name(e.ref.dtype), e.ref.device,
                       "gone" if not isinstance(t, torch.Tensor) else "%s %s on %s"
                       % (tuple(t.shape), _dtype_name(t.dtype), t.device)))
            _check_dense(e.name, t)
            if t.data_ptr() != e.ptr:
                if e.hi > e.lo:
                    self.client.update_ptr(e.name, t.data_ptr() + e.lo)
                e.ref, e.ptr = t, t.data_ptr()

    # ---- host state: RNGs, param_groups, extras ----

    def _host_state(self):
        h = {"rng": {"torch": torch.get_rng_state(), "random": random.getstate()}}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            h["rng"]["cuda"] = torch.cuda.get_rng_state_all()
        if "numpy" in sys.modules:
            h["rng"]["numpy"] = sys.modules["numpy"].random.get_state()
        if self.optimizer is not None:
            h["groups"] = [{k: v for k, v in g.items() if k != "params"}
                           for g in self.optimizer.param_groups]
            h["scalars"] = [[{k: v for k, v in self.optimizer.state.get(p, {}).items()
                              if not isinstance(v, torch.Tensor)}
                             for p in g["params"]] for g in self.optimizer.param_groups]
        if self.ddp_layout is None and _is_ddp(self.model) and \
                getattr(self.model, "_has_rebuilt_buckets", False):
            self.ddp_layout = _ddp_layout(self.model)
        if self.ddp_layout is not None:
            h["ddp_layout"] = self.ddp_layout
        h["extra"] = {}
        for name, (obj, cap) in self.extra.items():
            b = _dumps(obj.state_dict())
            if len(b) > cap:
                raise Error(-7, "E2BIG", "pt.torch: extra %r: its state takes %d bytes, "
                            "more than the %d declared" % (name, len(b), cap))
            h["extra"][name] = b
        return h

    def _put_host_state(self, h):
        torch.set_rng_state(h["rng"]["torch"])
        random.setstate(h["rng"]["random"])
        if "cuda" in h["rng"]:
            states = h["rng"]["cuda"]
            if torch.cuda.device_count() != len(states):
                raise Error(-22, "EINVAL", "pt.torch: the snapshot holds the RNG of %d "
                            "CUDA devices, this process sees %d"
                            % (len(states), torch.cuda.device_count()))
            torch.cuda.set_rng_state_all(states)
        if "numpy" in h["rng"]:
            import numpy
            numpy.random.set_state(h["rng"]["numpy"])
        if self.optimizer is not None:
            if len(h["groups"]) != len(self.optimizer.param_groups):
                raise ConfigValueError("pt.torch: the snapshot's optimizer has %d parameter "
                                       "groups, this one %d" % (len(h["groups"]),
                                                                len(self.optimizer.param_groups)))
            for g, saved in zip(self.optimizer.param_groups, h["groups"]):
                g.update(saved)
            for g, sc in zip(self.optimizer.param_groups, h["scalars"]):
                for p, d in zip(g["params"], sc):
                    if d:
                        self.optimizer.state[p].update(d)
        if h.get("ddp_layout") is not None and _is_ddp(self.model) and \
                not getattr(self.model, "_has_rebuilt_buckets", False):
            if getattr(self.model, "mixed_precision", None) is not None or \
                    getattr(self.model, "_require_manual_backward_finalization", False):
                sys.stderr.write("pt: warning: DDP with mixed precision or manual "
                                 "finalization: its bucket layout is not rebuilt, and with "
                                 "3 or more ranks the first step after this restore may "
                                 "differ in the last bits from the run that failed\n")
            else:
                _ddp_relayout(self.model, h["ddp_layout"])
        self.ddp_layout = h.get("ddp_layout")
        for name, (obj, _cap) in self.extra.items():
            if name not in h["extra"]:
                raise Error(-22, "EINVAL", "pt.torch: the snapshot has no extra %r" % name)
            obj.load_state_dict(pickle.loads(h["extra"][name]))

    # ---- the calls of a training loop ----

    def restore(self):
        """Brings back the newest committed step: every tensor, the RNGs, the
        optimizer's groups and the extras. Returns that step (the loop goes
        on with step + 1), or None when there is nothing to restore."""
        if self.client is None:
            self.restored = True
            return None
        self.fence()
        err, step, near = None, None, {}
        try:
            step = self._restore_local()
            if step is not None and self.replicas > 1:
                near = self._read_near_shares(step)
        except Exception as e:  # noqa: BLE001 (said to the other replicas first)
            err = e
        self.restored = True
        if self.replicas > 1:
            # every replica's outcome before any of them waits on the others
            # in the gather: a rank-local failure fails every replica, none hangs
            import torch.distributed as dist
            outs = [None] * self.replicas
            dist.all_gather_object(outs, (step, None if err is None else str(err),
                                          sorted(near)), group=self.group)
            if err is not None:
                raise err
            bad = [(r, o[1]) for r, o in enumerate(outs) if o[1] is not None]
            if bad:
                raise Error(-5, "EIO", "pt.torch: replica %d failed to restore: %s"
                            % bad[0])
            if any(o[0] != step for o in outs):
                raise Error(-22, "EINVAL", "pt.torch: the replicas restored different steps "
                            "(%s): their shares cannot be put together"
                            % [o[0] for o in outs])
            if step is not None:
                # an owner whose object every replica read here is not sent
                near_all = set.intersection(*[set(o[2]) | {r} for r, o in enumerate(outs)])
                self._gather_shares(near_all, near)
        elif err is not None:
            raise err
        return step

    def _restore_local(self):
        self._follow()
        step = self.client.restore()
        if step is None:
            return None
        blob = self.client.blob_get()
        table = read_table(blob)
        mine = json.loads(self.table.decode())["tensors"]
        if table != mine:
            diff = next((a, b) for a, b in zip(table + [None] * len(mine),
                                                mine + [None] * len(table)) if a != b)
            raise Error(_PT_EREGIONS, "PT_EREGIONS", "pt.torch: step %d was taken with "
                        "another tensor table: snapshot %s, this program %s"
                        % (step, diff[0], diff[1]))
        (n,) = struct.unpack_from("<I", blob, 4)
        self._put_host_state(pickle.loads(blob[8 + n:]))
        return step

    def _read_near_shares(self, step):
        """The other replicas' shares of step that this machine holds: read
        from their ranks' snapshot objects here (under ptd, which names the
        shm prefix in PT_SHM_PREFIX), each checked as export checks it
        (every block and the blob against their CRC32C, the step committed
        and not replaced while read). {owner: {region name: bytes}}; an
        owner whose object is not here (another node) or does not hold
        step is left to the broadcasts."""
        prefix = os.environ.get("PT_SHM_PREFIX")
        job = self.job_name
        if prefix is None or job is None or not NEAR_SHARES:
            return {}
        import torch.distributed as dist
        world = dist.get_world_size()
        near = {}
        for owner in range(self.replicas):
            if owner == self.replica:
                continue
            rank = self.group_ranks[owner]
            name = _pt.object_name(prefix, job, rank)
            if not os.path.exists("/dev/shm/" + name.lstrip("/")):
                continue
            try:
                snap = _pt.read_committed(name, step)
            except Error:
                continue  # not this step here: the broadcast brings it
            if (snap["job"], snap["rank"], snap["world"], snap["step"]) != \
                    (job, rank, world, step):
                continue
            regions = dict(snap["regions"])
            shares = {}
            for e in self.entries:
                if not e.sharded:
                    continue
                lo, hi = _share(e.nbytes, owner, self.replicas)
                if hi > lo:
                    b = regions.get(e.name)
                    if b is None or len(b) != hi - lo:
                        shares = None
                        break
                    shares[e.name] = b
            if shares is not None:
                near[owner] = shares
        return near

    def _gather_shares(self, near_all=(), near=None):
        """Every replica's share to every replica: per owner, its shares of
        every tensor packed into one buffer per device and broadcast, or,
        for an owner every replica read on its own machine (near_all),
        copied from what this one read (near)."""
        import torch.distributed as dist
        # how the last restore got the other replicas' shares (owners)
        self.shares_near = sorted(o for o in near_all if o != self.replica)
        self.shares_sent = [o for o in range(self.replicas)
                            if o not in near_all and o != self.replica]
        for owner in near_all:
            if owner == self.replica:
                continue
            with torch.no_grad(), warnings.catch_warnings():
                # read only: the bytes are copied from, never written
                warnings.simplefilter("ignore", UserWarning)
                for e in self.entries:
                    if not e.sharded:
                        continue
                    lo, hi = _share(e.nbytes, owner, self.replicas)
                    if hi > lo:
                        src = torch.frombuffer(near[owner][e.name], dtype=torch.uint8)
                        _flat(e.get())[lo:hi].copy_(src)
        for owner in range(self.replicas):
            if owner in near_all:
                continue
            by_dev = {}
            for e in self.entries:
                if not e.sharded:
                    continue
                t = e.get()
                lo, hi = _share(e.nbytes, owner, self.replicas)
                if hi > lo:
                    by_dev.setdefault(t.device, []).append((_flat(t), lo, hi))
            for dev, parts in by_dev.items():
                if owner == self.replica:
                    buf = torch.cat([f[lo:hi] for f, lo, hi in parts])
                else:
                    buf = torch.empty(sum(hi - lo for _f, lo, hi in parts),
                                      dtype=torch.uint8, device=dev)
                dist.broadcast(buf, src=self.group_ranks[owner], group=self.group)
                if owner != self.replica:
                    at = 0
                    with torch.no_grad():
                        for f, lo, hi in parts:
                            f[lo:hi].copy_(buf[at:at + hi - lo])
                            at += hi - lo

    def snapshot(self, step):
        """Takes step `step` (call it once the step's optimizer.step() is
        done): returns pt.OK (the copy runs on in the background) or
        pt.SKIPPED; raises pt.Error when libpt refuses it. A DDP model's first
        step, before DDP rebuilt its buckets, is SKIPPED."""
        if not self.restored:
            raise Error(_PT_ENORESTORE, _pt.err_name(_PT_ENORESTORE),
                        "pt.torch: snapshot() before restore(): call restore() once, "
                        "before the first step (also on a fresh start)")
        if self.client is None:
            self._host_blob()  # the same size checks as under ptd
            return SKIPPED
        if _ddp_rebuild_pending(self.model):
            return SKIPPED
        self.fence()
        self._follow()
        self.client.blob_set(self._host_blob())
        # libpt copies device memory on its own stream: the step's kernels,
        # queued on the current stream, must have written the tensors first.
        # One device: libpt's copy stream waits on an event of the current
        # stream (nothing blocks here); several: each is synchronised.
        if len(self.cuda_devices) == 1:
            self.client.cuda_stream_set(torch.cuda.current_stream(
                self.cuda_devices[0]).cuda_stream)
        else:
            for dev in self.cuda_devices:
                torch.cuda.current_stream(dev).synchronize()
        return self.client.snapshot(step)

    # ---- recovery in place ----

    def run(self, step_fn, steps):
        """The training loop: restore(), then step_fn(step) and
        snapshot(step) for every step from the restored one + 1 (0 on a
        fresh start) up to steps - 1. step_fn does one step: forward,
        backward, optimizer.step() and what else belongs to it.

        With recover_in_place, when another rank dies ptd restarts only
        that one and asks this process to restore in place: snapshot()
        says pt.RECOVER, or a collective with the dead rank fails inside
        step_fn (any exception: run() asks ptd, within 5 s, whether that
        is why, and raises it if not). run() then calls recover() and goes
        on from the step it restored. Returns the number of recoveries in
        place."""
        start = self.restore()
        step = 0 if start is None else start + 1
        recoveries = 0
        while step < steps:
            try:
                step_fn(step)
                rc = self.snapshot(step)
            except Exception:
                if self._recover_asked(_RECOVER_ASK_MS) is None:
                    raise
                rc = RECOVER
            if rc == RECOVER:
                restored = self.recover()
                recoveries += 1
                step = 0 if restored is None else restored + 1
                continue
            step += 1
        return recoveries

    def _recover_asked(self, timeout_ms):
        if self.client is None or not self.recover_in_place:
            return None
        try:
            return self.client.recover_pending(timeout_ms)
        except Error:
            return None

    def recover(self):
        """Restores in place, as ptd asked (snapshot() said pt.RECOVER, or
        recover_pending() a generation): re-forms the default process
        group with the restarted ranks at the recovery's rendezvous
        (PT_MASTER_PORT_BASE + generation % 64), builds a DDP model's
        reducer again over it as a new DistributedDataParallel would, and
        restores the step ptd chose. Returns that step."""
        gen = self._recover_asked(0)
        if gen is None:
            raise Error(_PT_ESTATE, _pt.err_name(_PT_ESTATE), "pt.torch: recover(): ptd "
                        "did not ask this rank to restore in place")
        self.fence()
        for p in self.model.parameters():  # as in a new process: no gradients
            p.grad = None
        import torch.distributed as dist
        if dist.is_available() and dist.is_initialized():
            if _is_ddp(self.model):
                _ddp_release(self.model)
            _reform_world(gen)
            if _is_ddp(self.model):
                _ddp_rejoin(self.model)
        step = self.restore()
        if step is None:
            raise Error(_PT_ESTATE, _pt.err_name(_PT_ESTATE), "pt.torch: recover(): "
                        "nothing to restore in place")
        sys.stderr.write("pt: rank %d restored step %d in place (recovery %d)\n"
                         % (self.client.status()["rank"], step, gen))
        return step

    def _host_blob(self):
        host = _dumps(self._host_state())
        blob = BLOB_MAGIC + struct.pack("<I", len(self.table)) + self.table + host
        if len(blob) > _BLOB_MAX:
            raise Error(-7, "E2BIG", "pt.torch: the RNG, optimizer and extra state take "
                        "%d bytes, more than pt's blob (%d)" % (len(blob), _BLOB_MAX))
        return blob

    def fence(self):
        """Waits for the copy of the last snapshot (a no-op when none is in
        flight). A failed snapshot is said on stderr; the run goes on."""
        if self.client is None:
            return
        try:
            self.client.fence()
        except Error as e:
            sys.stderr.write("pt: a snapshot failed: %s (the run goes on)\n" % e)

    def status(self):
        return None if self.client is None else self.client.status()

    def close(self, done=False):
        """Fences, tells the SMP the rank finished when done, and removes the
        hooks."""
        for h in self.hooks:
            h.remove()
        self.hooks = []
        if self.client is not None:
            self.client.close(done=done)
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close(done=False)
        return False


def export(job, out_dir, shm_prefix="", step=None):
    """Writes a committed step of a pt.torch job as one safetensors file per
    rank, out_dir/rank<R>.safetensors, each tensor under its recorded name,
    dtype and shape (safetensors.torch.load_file reads them back), with the
    job, rank, world and step in the file's metadata. Reads the ranks' shm
    objects on this machine directly (no SMP needed; the job may be running,
    failed, or kept with --keep), every block checked against its CRC32C.
    step: the newest step committed on rank 0 (None) or that step; every
    rank is read at the same step. Returns (step, [paths])."""
    from safetensors.torch import save_file

    first = _pt.read_committed(_pt.object_name(shm_prefix, job, 0), step)
    step = first["step"]
    os.makedirs(out_dir, exist_ok=True)
    snaps = [first] + [_pt.read_committed(_pt.object_name(shm_prefix, job, r), step)
                       for r in range(1, first["world"])]
    tops = [_read_top(x["blob"]) for x in snaps]
    datas = [dict(x["regions"]) for x in snaps]
    paths = []
    for rank in range(first["world"]):
        tensors = {}
        for t in tops[rank]["tensors"]:
            if "share" in t:  # put the replicas' shares together
                raw = bytearray(t["bytes"])
                for g in tops[rank]["replicas"]["ranks"]:
                    tg = next((x for x in tops[g]["tensors"] if x["name"] == t["name"]), None)
                    lo, hi = tg["share"] if tg is not None else (0, -1)
                    part = datas[g].get(t["name"], b"")
                    if tg is None or len(part) != hi - lo:
                        raise Error(-22, "EINVAL", "pt.torch: rank %d step %d: %r has no "
                                    "share %s on rank %d" % (rank, step, t["name"],
                                                             tg and tg["share"], g))
                    raw[lo:hi] = part
            else:
                raw = datas[rank].get(t["name"])
            if raw is None or len(raw) != t["bytes"]:
                raise Error(-22, "EINVAL", "pt.torch: rank %d step %d: region %r is not the "
                            "one its table describes" % (rank, step, t["name"]))
            dt = getattr(torch, t["dtype"])
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8).view(dt)
            tensors[t["name"]] = flat.as_strided(t["shape"], t.get("stride") or
                                                 _row_major(t["shape"])).contiguous()
        path = os.path.join(out_dir, "rank%d.safetensors" % rank)
        save_file(tensors, path, metadata={"pt.job": job, "pt.rank": str(rank),
                                           "pt.world": str(first["world"]),
                                           "pt.step": str(step)})
        paths.append(path)
    return step, paths


def _main(argv):
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pt.torch",
                                 description="Export a committed step of a pt.torch job "
                                 "as one safetensors file per rank.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write OUT/rank<R>.safetensors")
    ex.add_argument("--job", required=True, help="the job name (ptd node --job)")
    ex.add_argument("--shm-prefix", default="", help="ptd node --shm-prefix")
    ex.add_argument("--step", type=int, default=None, help="default: the newest committed")
    ex.add_argument("--out", required=True, help="the folder to write into")
    a = ap.parse_args(argv)
    try:
        step, paths = export(a.job, a.out, a.shm_prefix, a.step)
    except Error as e:
        sys.stderr.write("export: %s\n" % e)
        return 1
    print("step %d: %s" % (step, " ".join(paths)))
    return 0


def _row_major(shape):
    st, acc = [], 1
    for d in reversed(shape):
        st.append(acc)
        acc *= d
    return list(reversed(st))


def _dense(t):
    """One range of memory in some memory format (channels_last included)."""
    return t.is_contiguous() or (t.dim() == 4 and t.is_contiguous(
        memory_format=torch.channels_last)) or (t.dim() == 5 and t.is_contiguous(
            memory_format=torch.channels_last_3d))


def _opt_params(opt):
    return [[id(p) for p in g["params"]] for g in opt.param_groups]


def _check_dense(name, t):
    if not _dense(t):
        raise ConfigValueError("pt.torch: %s is not contiguous (shape %s, stride %s): "
                         "pt copies a tensor's memory as one range"
                         % (name, tuple(t.shape), t.stride()))


def _is_ddp(m):
    return isinstance(m, torch.nn.parallel.DistributedDataParallel)


# DistributedDataParallel reduces gradients in buckets, laid out first in
# reverse registration order, then, after the first iteration, rebuilt in
# the order the gradients became ready. The layout decides the order in which
# a collective sums an element over 3 or more ranks (gloo's ring: by the
# element's offset in its bucket), so a restarted process, back in the first
# layout for its first step, would reduce that step in another order than
# the run that never failed, and differ from it in the last bits. State
# therefore keeps the rebuilt layout (by parameter name) with every snapshot
# taken after the rebuild and puts it back into the reducer on restore.


def _ddp_rebuild_pending(m):
    """A DDP model before its buckets were rebuilt (the first step): a
    snapshot then would resume in the first layout, so none is taken; a
    failure in the first step starts the run again from the beginning."""
    return _is_ddp(m) and (m.static_graph or not m.find_unused_parameters) and \
        not getattr(m, "_has_rebuilt_buckets", False)


def _ddp_layout(ddp):
    names = {id(p): n for n, p in ddp.named_parameters()}
    return [[names[id(p)] for p in b.parameters()]
            for b in ddp.reducer._get_zeros_like_grad_buckets()]


def _ddp_relayout(ddp, layout):
    import torch.distributed as dist

    by_name = dict(ddp.named_parameters())
    if sorted(n for b in layout for n in b) != sorted(
            n for n, p in ddp.named_parameters() if p.requires_grad):
        raise Error(-22, "EINVAL", "pt.torch: the snapshot's DDP bucket layout names "
                    "other parameters than this model's")
    orig = dist._compute_bucket_assignment_by_size

    def recorded(parameters, limits, *_a, **_k):
        idx = {id(p): i for i, p in enumerate(parameters)}
        buckets = [[idx[id(by_name[n])] for n in b] for b in layout]
        caps = [ddp.bucket_bytes_cap] * len(buckets)
        return list(reversed(buckets)), caps  # DDP reverses them back

    dist._compute_bucket_assignment_by_size = recorded
    try:
        # The path DDP's own __setstate__ takes to build a reducer again.
        parameters, sparse = ddp._build_params_for_reducer()
        ddp._ddp_init_helper(parameters, sparse,
                             ddp._build_debug_param_to_name_mapping(parameters),
                             ddp.static_graph)
    finally:
        dist._compute_bucket_assignment_by_size = orig
    if ddp.static_graph:
        ddp.reducer._set_static_graph()
    for hook, state in getattr(ddp, "_comm_hooks", []):  # the new reducer has none
        dist._register_comm_hook(ddp.reducer, state, hook)


def _recover_port(gen):
    """The rendezvous of recovery gen: the MASTER_PORT ptd node gives the
    ranks it restarts (node_proc.c)."""
    base = int(os.environ.get("PT_MASTER_PORT_BASE") or os.environ.get("MASTER_PORT")
               or 29500)
    port = base + gen % 64
    return port - 64 if port > 65535 else port


def _ddp_release(ddp):
    """Lets the old process group go: its sockets close only when nothing
    holds it, and a rank still blocked in a collective with this one (not
    with the dead rank) then fails too, and recovers, instead of waiting
    for the group's timeout."""
    import gc
    ddp.reducer = None
    ddp.logger = None
    ddp.process_group = None
    gc.collect()


def _reform_world(gen):
    """The default process group again, over a new store at the
    recovery's rendezvous, as the restarted ranks' init_process_group()
    makes it from the environment (env://, as under ptd or torchrun: its
    store under the prefix "default_pg"; same backend, ranks and timeout;
    the group count starts over as in a new process)."""
    import datetime
    import torch.distributed as dist

    backend = dist.get_backend()
    rank, world = dist.get_rank(), dist.get_world_size()
    timeout = datetime.timedelta(minutes=30)
    try:
        timeout = dist.distributed_c10d._get_default_timeout(backend)
    except Exception:  # noqa: BLE001 (a private helper; the default is fine)
        pass
    dist.destroy_process_group()
    import gc
    gc.collect()  # the old group's sockets close now (see _ddp_release)
    store = dist.PrefixStore("default_pg", dist.TCPStore(
        os.environ.get("MASTER_ADDR", "127.0.0.1"), _recover_port(gen), world, rank == 0,
        timeout=timeout))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world,
                            timeout=timeout)


def _ddp_rejoin(ddp):
    """What a new DistributedDataParallel(module) does on the restarted
    ranks, on this one's: the collectives of its constructor (parameter
    shapes checked, module states broadcast from rank 0; restore() then
    overwrites them) and a fresh reducer over the new default group."""
    import torch.distributed as dist
    from torch.distributed.utils import (_sync_module_states,
                                         _verify_param_shape_across_processes)

    ddp.process_group = dist.distributed_c10d._get_default_group()
    parameters, sparse = ddp._build_params_for_reducer()
    _verify_param_shape_across_processes(ddp.process_group, parameters)
    _sync_module_states(module=ddp.module, process_group=ddp.process_group,
                        broadcast_bucket_size=ddp.broadcast_bucket_size, src=0,
                        params_and_buffers_to_ignore=ddp.parameters_to_ignore,
                        broadcast_buffers=ddp.broadcast_buffers)
    ddp._ddp_init_helper(parameters, sparse,
                         ddp._build_debug_param_to_name_mapping(parameters),
                         ddp.static_graph)
    # as in a new one: its buckets not rebuilt yet (restore() then lays them
    # out as the snapshot's, on every rank alike)
    ddp._has_rebuilt_buckets = False
    if ddp.static_graph:
        ddp.reducer._set_static_graph()
    for hook, state in getattr(ddp, "_comm_hooks", []):
        dist._register_comm_hook(ddp.reducer, state, hook)


def _dumps(obj):
    return pickle.dumps(obj, protocol=4)


def _init_lazy_state(model, optimizer):
    """Creates the optimizer's lazily made state now, as its first step()
    would find it, without changing a parameter."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    # only what the first step would create: trainable parameters without
    # state (a loaded or already stepped one keeps its own; a frozen one gets
    # none, as in a run without pt)
    need = [p for p in params if p.requires_grad and not optimizer.state.get(p)]
    if not need:
        return
    if isinstance(optimizer, torch.optim.SGD):
        if all(g.get("momentum", 0) == 0 for g in optimizer.param_groups):
            return  # no state at all
        raise ConfigTypeError("pt.torch: SGD with momentum creates its momentum buffer "
                              "from the first gradient, which State cannot make up front "
                              "without changing the run (taken: Adam, AdamW, SGD without "
                              "momentum, and optimizers whose state exists before their "
                              "first step, e.g. Adagrad)")
    if not isinstance(optimizer, _LAZY_ZERO):
        raise ConfigTypeError("pt.torch: %s creates its state lazily and State cannot make "
                              "it up front without changing the run (taken: Adam, AdamW, "
                              "SGD without momentum, and any optimizer whose state exists "
                              "before its first step, e.g. Adagrad)"
                        % type(optimizer).__name__)
    grads = [(p, p.grad) for p in params]
    saved = [(p, p.detach().clone()) for p in need]
    with torch.no_grad():
        for p in params:  # a parameter without a gradient is skipped by step()
            p.grad = torch.zeros_like(p) if any(p is q for q in need) else None
    # torch's own step builds the state (dtypes, devices, amsgrad); then every
    # tensor of it goes back to what the first real step expects: zeros.
    optimizer.step()
    with torch.no_grad():
        for p, grad in grads:
            p.grad = grad
        for p, data in saved:
            p.copy_(data)
            st = optimizer.state[p]
            for k, v in st.items():
                if isinstance(v, torch.Tensor):
                    v.zero_()
                elif k == "step":
                    st[k] = 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
