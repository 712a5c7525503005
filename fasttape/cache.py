"""Where compiled kernels are kept on disk, and the key that keeps them correct.

Numba's own cache lives beside each source file and is keyed by that file's
timestamp: a kernel that inlines code from another module (the generated
elementwise math, the scalar functions) would be reused after an edit there, and
every install location (each venv, each clone) compiles its own copy.  fasttape
keeps its kernels in one per-user directory instead::

    $FASTTAPE_CACHE_DIR            if set
    $XDG_CACHE_HOME/fasttape       else, or ~/.cache/fasttape

in a subdirectory named by a hash (``KEY``) of everything the kernels are built
from: the source of every module that holds compiled code, the generated
elementwise source (so the primitive declarations), and the versions of fasttape,
Numba, NumPy and Python.  Any edit gives a new key, so a stale kernel never runs;
two installs of the same sources share one set of compiled kernels.

The first compilation in a process logs one line on the ``fasttape`` logger (a
warning, so it shows without any logging set up; silence it with
``logging.getLogger("fasttape").setLevel(logging.ERROR)``).

Caching is off (kernels compile in memory) when ``FASTTAPE_NO_CACHE`` is set, when
a fault is injected (``FASTTAPE_FAULT``), or when the directory cannot be written;
importing never fails because of the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import tempfile

import numba
import numpy as np

from . import codegen, faults
from ._version import __version__ as VERSION

# the files whose code is compiled (and cached) or shapes compiled code: every family module too
SOURCE_FILES = ("jit.py", "layout.py", "loops.py", "runs.py", "scalar_runs.py", "regions.py", "sweeps.py",
                "dispatch.py", "kernels.py", "scalar_math.py", "codegen.py", "primitives.py", "cache.py",
                "lapack.py", "duals.py", "kernel_calls.py", "batch_calls.py", "vector_math.py", "generated_loops.py",
                "_version.py")  # fmt: skip
FAMILY_DIRECTORY = "families"


def _source_paths() -> list[str]:
    here = os.path.dirname(os.path.abspath(__file__))
    families = os.path.join(here, FAMILY_DIRECTORY)
    paths = [os.path.join(here, name) for name in SOURCE_FILES]
    return paths + sorted(os.path.join(families, n) for n in os.listdir(families) if n.endswith(".py"))


def cache_root() -> str:
    explicit = os.environ.get("FASTTAPE_CACHE_DIR", "").strip()
    if explicit:
        return os.path.abspath(os.path.expanduser(explicit))
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "fasttape")


def source_key() -> str:
    """SHA-256 over the kernel sources, the generated elementwise code and the versions that shape them."""
    digest = hashlib.sha256()
    for part in (VERSION, numba.__version__, np.__version__, sys.version, codegen.SOURCE):
        digest.update(part.encode())
        digest.update(b"\0")
    for path in _source_paths():
        with open(path, "rb") as f:
            digest.update(f.read())
        digest.update(b"\0")
    return digest.hexdigest()


def _wanted() -> bool:
    flag = os.environ.get("FASTTAPE_NO_CACHE", "").strip().lower()
    return flag in ("", "0", "false", "no") and not faults.INSTRUMENTED


STALE_SECONDS = 30 * 24 * 3600  # other keys' kernels unused this long are deleted when a new key appears


def _writable(path: str) -> bool:
    try:
        new = not os.path.isdir(path)
        os.makedirs(path, exist_ok=True)
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return False
    if new:
        _prune(os.path.dirname(path), keep=path)
    else:
        try:
            os.utime(path)  # in use: not stale for the pruning of another key
        except OSError:
            pass
    return True


def _prune(root: str, keep: str):
    """Delete the kernel directories of other keys (older versions, edited sources) that no process
    has written to for ``STALE_SECONDS``; best effort, never an error."""
    import shutil
    import time

    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        path = os.path.join(root, name)
        if not name.startswith("kernels-") or path == keep:
            continue
        try:
            if time.time() - os.path.getmtime(path) > STALE_SECONDS:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass


KEY = source_key()
DIRECTORY = os.path.join(cache_root(), f"kernels-{VERSION}-{KEY[:16]}")


def _install_locator() -> bool:
    """Point Numba's cache for fasttape's kernel modules at ``DIRECTORY``, stamped with ``KEY``."""
    try:
        from numba.core import caching

        base = getattr(caching, "CacheLocator", None) or caching._CacheLocator
        locators = (getattr(caching, "CacheImpl", None) or caching._CacheImpl)._locator_classes
    except (ImportError, AttributeError):  # another Numba layout: compile in memory rather than risk staleness
        return False

    class KernelLocator(base):
        def __init__(self, py_func, py_file):
            self._lineno = py_func.__code__.co_firstlineno
            self._py_file = py_file  # (Numba names it in its warning about a function it cannot cache)

        def ensure_cache_path(self):
            pass  # checked once, below

        def get_cache_path(self):
            return DIRECTORY

        def get_source_stamp(self):
            return KEY

        def get_disambiguator(self):
            return str(self._lineno)

        @classmethod
        def from_function(cls, py_func, py_file):
            if not (getattr(py_func, "__module__", None) or "").startswith("fasttape."):
                return None
            return cls(py_func, py_file)

    locators.insert(0, KernelLocator)
    return True


ENABLED = _wanted() and _writable(DIRECTORY) and _install_locator()


def is_built() -> bool:
    """True when this key's directory holds compiled kernels (``python -m fasttape warm`` ran, or a
    program did)."""
    try:
        return any(name.endswith(".nbc") for name in os.listdir(DIRECTORY))
    except OSError:
        return False


LOG = logging.getLogger("fasttape")


def _notice() -> str:
    where = f"cached in {DIRECTORY}" if ENABLED else "not cached: the cache is off"
    from . import tiers  # imported here: tiers imports the kernels, which import this module

    meanwhile = "; meanwhile calls run uncompiled, in NumPy" if tiers.mode() == "auto" else ""
    return (
        f"fasttape: compiling kernels for first use (a minute or two, once per machine and version; {where})"
        f"{meanwhile}. `python -m fasttape warm` builds them all ahead of time."
    )


def _install_notice():  # the listener, or None where Numba has no event API
    """Log ``_notice()`` once, when a kernel of fasttape's starts compiling (not when it loads from disk)."""
    try:
        from numba.core import event
    except ImportError:
        return None

    class CompileNotice(event.Listener):
        announced = False

        def on_start(self, ev):
            if self.announced:
                return
            data = ev.data if isinstance(ev.data, dict) else {}
            module = getattr(getattr(data.get("dispatcher"), "py_func", None), "__module__", "") or ""
            # (an object-mode block -- NumPy's SIMD loops called from a kernel -- is lifted at its first run)
            lifted = any(str(a) == "ffi_forced_object" for a in data.get("args") or ())
            # a tape's own kernels (fasttape.tape_kernels) and a batch's drivers (fasttape.batch_calls): seconds
            seconds = module.startswith(("fasttape.tape_", "fasttape.batch_"))
            if module.startswith("fasttape.") and not lifted and not seconds:
                announce()

        def on_end(self, ev):
            pass

    listener = CompileNotice()
    event.register("numba:compile", listener)
    return listener


class _NoListener:
    announced = False


def announce():
    """Log the notice once per process: a kernel starts compiling, here or in a build worker."""
    owner = type(NOTICE) if NOTICE is not None else _NoListener
    if not owner.announced:
        owner.announced = True
        LOG.warning(_notice())


def holds(dispatcher) -> bool:
    """Whether the cache directory has an index for this compiled function (it was built before)."""
    func = dispatcher.py_func
    module = os.path.splitext(os.path.basename(func.__code__.co_filename))[0]
    prefix = f"{module}.{func.__qualname__}-{func.__code__.co_firstlineno}."
    try:
        return any(n.startswith(prefix) and n.endswith(".nbi") for n in os.listdir(DIRECTORY))
    except OSError:
        return False


NOTICE = _install_notice()
