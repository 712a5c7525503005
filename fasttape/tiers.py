"""Tiers of execution: a call runs compiled when its kernel is ready, else in the NumPy executor.

Each sweep entry point (``run_forward``, ``run_value_and_grad``, ``run_reverse``,
``run_jvp``, ``run_hvp``, ``run_vector_reverse``) is compiled by Numba the first time it
is needed, which takes about a minute on a cold cache and about a second to load from
the disk cache.  Neither is waited for: the first call of an entry point starts its
build (or load) on a background thread and is served by ``fasttape.executor``, as are
later calls until the build is done; from then on every call is compiled.  Both tiers
give the same results (to rounding) and the same errors.  On a cold cache the thread
hands the compiling to worker processes (``fasttape.builds``: the sweeps in parallel, one
per core), so that this process keeps its GIL, and then loads the kernel they cached.

``FASTTAPE_TIERS=compiled`` (or ``with tiers.only("compiled"):``) waits for the
compiled kernels instead, as benchmarks and ``python -m fasttape warm`` do;
``FASTTAPE_TIERS=executor`` never compiles (tests of the executor).  ``wait()``
blocks until every build started so far has finished.
"""

from __future__ import annotations

import contextlib
import os
import queue
import threading

import numba

from . import builds, cache, executor, faults
from . import kernels as K

ENTRY_POINTS = ("run_forward", "run_value_and_grad", "run_reverse", "run_jvp", "run_hvp", "run_vector_reverse")
MODES = ("auto", "compiled", "executor")
# FASTTAPE_BUILD_WORKERS=0 keeps the background builds in this process (a thread), as without a disk cache
_WORKERS = [os.environ.get("FASTTAPE_BUILD_WORKERS", "1").strip().lower() not in ("0", "false", "no")]


def _mode_from_environment() -> str:
    if faults.INSTRUMENTED:  # a planted fault lives in the compiled kernels only: every call waits for them
        return "compiled"
    mode = os.environ.get("FASTTAPE_TIERS", "").strip().lower() or "auto"
    if mode not in MODES:
        raise ValueError(f"FASTTAPE_TIERS={mode!r}: use one of {MODES}")
    return mode


_MODE = [_mode_from_environment()]


def mode() -> str:
    return _MODE[0]


class _Entry:
    """One entry point while its kernel is not ready: the compiled dispatcher, its executor twin and
    the build.  Once the kernel is ready, the module attribute is the dispatcher itself (no overhead)."""

    def __init__(self, name):
        self.name = name
        self.compiled = getattr(K, name)
        self.fallback = getattr(executor, name)
        self.build = None  # an Event, set when the background build has finished
        self.error = None
        self.lock = threading.Lock()

    def ready(self) -> bool:
        # a plain function (NUMBA_DISABLE_JIT=1, nox -s debug) is as ready as it will ever be
        return bool(getattr(self.compiled, "overloads", True))

    def _build(self, signature):
        try:
            if self.use_workers(signature):
                cache.announce()
                builds.build_entry(self.name)  # on failure, the compile below does the work here
            self.compiled.compile(signature)
        except BaseException as e:  # noqa: BLE001  (reported at the next call, in the caller's thread)
            self.error = e
            return
        if mode() == "auto":
            globals()[self.name] = self.compiled

    def use_workers(self, signature) -> bool:
        """Build in worker processes (fasttape.builds): the caller keeps the GIL and both cores work."""
        return (
            _WORKERS[0] and mode() == "auto" and builds.usable() and tuple(signature) == builds.signature(self.name)
            and not cache.holds(self.compiled)
        )  # fmt: skip

    def start(self, args):
        with self.lock:
            if self.build is None:
                self.build = threading.Event()
                _QUEUE.put((self, tuple(numba.typeof(a) for a in args)))
                _start_worker()

    def __call__(self, *args):
        if self.ready():
            globals()[self.name] = self.compiled
            return self.compiled(*args)
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        self.start(args)
        return self.fallback(*args)


_ENTRIES = {name: _Entry(name) for name in ENTRY_POINTS}
# one background thread builds the kernels in the order they were first needed (Numba compiles one at a time)
_QUEUE: queue.SimpleQueue = queue.SimpleQueue()
_WORKER: list = []


def _work():
    while True:
        entry, signature = _QUEUE.get()
        entry._build(signature)
        entry.build.set()


def _start_worker():
    if not _WORKER:
        worker = threading.Thread(target=_work, name="fasttape-compiler", daemon=True)
        _WORKER.append(worker)
        worker.start()


def _bind(tier: str):
    for name, entry in _ENTRIES.items():
        if tier == "compiled" or (tier == "auto" and entry.ready()):
            globals()[name] = entry.compiled
        elif tier == "executor":
            globals()[name] = entry.fallback
        else:
            globals()[name] = entry


def set_mode(tier: str) -> str:
    """``"auto"`` (the default), ``"compiled"`` (wait for the kernels) or ``"executor"`` (never compile),
    for the whole process; returns the previous mode."""
    if tier not in MODES:
        raise ValueError(f"tier {tier!r}: use one of {MODES}")
    previous = _MODE[0]
    _MODE[0] = tier
    _bind(tier)
    return previous


@contextlib.contextmanager
def only(tier: str):
    """``with tiers.only("compiled"):`` runs every call of the block in one tier."""
    previous = set_mode(tier)
    try:
        yield
    finally:
        set_mode(previous)


run_forward = run_value_and_grad = run_reverse = run_jvp = run_hvp = run_vector_reverse = None  # bound below
_bind(mode())


def wait(timeout=None) -> bool:
    """Block until every background build started so far has finished; True when none is left."""
    for entry in _ENTRIES.values():
        if entry.build is not None and not entry.build.wait(timeout):
            return False
    return True


def status() -> dict:
    """name -> "compiled", "building" (queued or compiling) or "not started"."""
    out = {}
    for name, entry in _ENTRIES.items():
        if entry.ready():
            out[name] = "compiled"
        elif entry.build is not None and not entry.build.is_set():
            out[name] = "building"
        else:
            out[name] = "not started"
    return out
