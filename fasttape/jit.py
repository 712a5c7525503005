"""How fasttape compiles: ``jit`` is Numba's njit with the options every kernel shares.

Every compiled module of fasttape decorates its functions with ``jit``; ``fasttape.cache``
points their on-disk cache at the per-user kernel directory (keyed by the sources).
"""

from __future__ import annotations

import numba

from . import cache

CACHE_ENABLED = cache.ENABLED


def jit(fn=None, **options):
    """njit with nogil and IEEE division (x/0 is inf or NaN, as in NumPy and JAX); cached on disk
    when possible, never failing the import."""
    global CACHE_ENABLED
    if fn is None:
        return lambda f: jit(f, **options)
    if CACHE_ENABLED:
        try:
            return numba.njit(cache=True, nogil=True, error_model="numpy", **options)(fn)
        except Exception:  # no usable cache location
            CACHE_ENABLED = False
    return numba.njit(cache=False, nogil=True, error_model="numpy", **options)(fn)
