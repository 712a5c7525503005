"""Process-wide options: the memory budget of one tape, the size of each tape cache, when a
tape gets compiled kernels of its own, and the threads of a batch.

``ft.set_options(memory_budget=..., cache_size=..., tape_kernels=..., workers=...)`` changes them (and
returns the previous values), ``ft.get_options()`` reads them, and ``with
ft.options(...):`` changes them for a block.  Without a call, the environment
decides: ``FASTTAPE_MEMORY_BUDGET`` (bytes, or with a suffix: ``512M``,
``8GiB``; ``0``/``none`` for no limit), ``FASTTAPE_CACHE_SIZE`` (tapes kept
per transformed function, one per input signature) and ``FASTTAPE_TAPE_KERNELS``
(``auto``, ``always`` or ``never``; see ``fasttape.tape_kernels``) and ``FASTTAPE_WORKERS`` (the
threads a batch runs on, ``fasttape.batch``; by default every thread Numba has).

The memory budget bounds the buffers of one tape: its values and adjoints
(16 bytes per recorded value), its instruction table and its index arrays.  It
is checked when a tape is recorded or loaded, before those buffers are
allocated.  The default is half of the machine's physical memory.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading

DEFAULT_CACHE_SIZE = 64
_FALLBACK_BUDGET = 8 * 2**30  # when the physical memory cannot be read

_UNITS = {
    "": 1,
    "b": 1,
    "k": 10**3,
    "kb": 10**3,
    "kib": 2**10,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}


def _physical_memory() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def default_memory_budget() -> int:
    """Half of the physical memory (8 GiB where it cannot be determined)."""
    total = _physical_memory()
    return total // 2 if total else _FALLBACK_BUDGET


def parse_bytes(text, what="FASTTAPE_MEMORY_BUDGET") -> int | None:
    """``"512M"``, ``"8GiB"``, ``"1e9"`` -> bytes; ``"0"``, ``"none"``, ``"inf"`` -> None (no limit)."""
    s = str(text).strip().lower().replace("_", "")
    if s in ("0", "none", "inf", "unlimited", "off"):
        return None
    m = re.fullmatch(r"([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)", s)
    if not m or m.group(2) not in _UNITS:
        raise ValueError(
            f"{what}={text!r} is not a size in bytes; write e.g. 4000000000, 512M, 8GiB, or 'none' for no limit."
        )
    return int(float(m.group(1)) * _UNITS[m.group(2)])


def _check_budget(value):
    if value is None:
        return None
    if isinstance(value, str):
        return parse_bytes(value, "memory_budget")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or value != value:
        raise ValueError(f"memory_budget must be a number of bytes (or None for no limit), got {value!r}.")
    return None if value == 0 or value == float("inf") else int(value)


TAPE_KERNELS = ("auto", "always", "never")


def _check_tape_kernels(value):
    if value not in TAPE_KERNELS:
        raise ValueError(
            f"tape_kernels must be one of {TAPE_KERNELS} (auto: compile a tape's own kernels in the background "
            f"once it is hot; always: at its first call, waiting; never: interpreter only), got {value!r}."
        )
    return value


def _check_workers(value):
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or (value < 1 and value != -1)):
        raise ValueError(
            f"workers must be a positive int, -1 (every thread Numba has) or None (the same), got {value!r}."
        )
    return value


def _check_cache_size(value):
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"cache_size must be a positive int (tapes kept per transformed function), got {value!r}.")
    return value


class _Options:
    def __init__(self):
        self._lock = threading.Lock()
        env_budget = os.environ.get("FASTTAPE_MEMORY_BUDGET", "").strip()
        self.memory_budget = parse_bytes(env_budget) if env_budget else default_memory_budget()
        env_cache = os.environ.get("FASTTAPE_CACHE_SIZE", "").strip()
        if env_cache:
            try:
                self.cache_size = _check_cache_size(int(env_cache))
            except ValueError:
                raise ValueError(f"FASTTAPE_CACHE_SIZE={env_cache!r} must be a positive integer.") from None
        else:
            self.cache_size = DEFAULT_CACHE_SIZE
        env_kernels = os.environ.get("FASTTAPE_TAPE_KERNELS", "").strip().lower()
        try:
            self.tape_kernels = _check_tape_kernels(env_kernels or "auto")
        except ValueError:
            raise ValueError(f"FASTTAPE_TAPE_KERNELS={env_kernels!r}: use one of {TAPE_KERNELS}.") from None
        env_workers = os.environ.get("FASTTAPE_WORKERS", "").strip()
        try:
            self.workers = _check_workers(int(env_workers)) if env_workers else None
        except ValueError:
            raise ValueError(f"FASTTAPE_WORKERS={env_workers!r} must be a positive integer or -1.") from None


_OPTIONS = _Options()
_CHECKS = {
    "memory_budget": _check_budget,
    "cache_size": _check_cache_size,
    "tape_kernels": _check_tape_kernels,
    "workers": _check_workers,
}


def get_options() -> dict:
    """The current options: ``{"memory_budget": bytes or None, "cache_size": int, "tape_kernels": str,
    "workers": int or None}``."""
    return {name: getattr(_OPTIONS, name) for name in _CHECKS}


def set_options(**options) -> dict:
    """Set ``memory_budget`` (bytes, a string such as ``"8GiB"``, or None for no limit),
    ``cache_size`` (tapes kept per transformed function, LRU) and/or ``tape_kernels``
    (``"auto"``, ``"always"`` or ``"never"``: when a tape gets compiled kernels of its own,
    see ``fasttape.tape_kernels``) and/or ``workers`` (the threads of a batch, ``fasttape.batch``:
    a positive int, or None / -1 for every thread Numba has); returns the previous values of the options given, so
    they can be restored."""
    unknown = sorted(set(options) - set(_CHECKS))
    if unknown:
        raise TypeError(f"set_options: unknown option(s) {unknown}; the options are {sorted(_CHECKS)}.")
    checked = {name: _CHECKS[name](value) for name, value in options.items()}
    with _OPTIONS._lock:
        previous = {name: getattr(_OPTIONS, name) for name in checked}
        for name, value in checked.items():
            setattr(_OPTIONS, name, value)
    return previous


@contextlib.contextmanager
def options(**opts):
    """``with ft.options(memory_budget="1GiB"): ...`` sets options for a block."""
    previous = set_options(**opts)
    try:
        yield
    finally:
        set_options(**previous)


def memory_budget() -> int | None:
    return _OPTIONS.memory_budget


def cache_size() -> int:
    return _OPTIONS.cache_size


def tape_kernels() -> str:
    return _OPTIONS.tape_kernels


def workers() -> int | None:
    return _OPTIONS.workers


def _format_bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n} bytes"


def check_memory(needed: int, what: str):
    """Raise MemoryError (before allocating) when ``needed`` bytes exceed the budget."""
    budget = _OPTIONS.memory_budget
    if budget is not None and needed > budget:
        raise MemoryError(
            f"{what} needs {needed} bytes ({_format_bytes(needed)}) of buffers, more than the memory budget of "
            f"{budget} bytes ({_format_bytes(budget)}). Raise it with ft.set_options(memory_budget=...) or the "
            "environment variable FASTTAPE_MEMORY_BUDGET (e.g. 16GiB, or 'none' for no limit), or make the "
            "function smaller (fewer or smaller intermediate arrays)."
        )
