"""Shared benchmark setup: single-threaded OpenBLAS, Numba kernels warmed once, JAX (optional) in float64
on the CPU."""

import os

# The MLP's large matmuls (NumPy's, and fasttape's through Numba's np.dot) run on OpenBLAS, read at import.
# Its threads wait for each other in scheduler ticks when another process holds a core: on a small shared
# machine a 0.55 ms product then takes 4-12 ms at random.  One thread keeps those columns stable and
# like-for-like with fasttape's single-threaded sweeps; set OPENBLAS_NUM_THREADS yourself to override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import ctypes  # noqa: E402

import pytest  # noqa: E402

# The variable only reaches an OpenBLAS loaded after this point, and pytest may have imported NumPy already
# (a ``filterwarnings`` entry naming ``numba.core.errors.NumbaWarning`` imports Numba, hence NumPy, while
# pytest reads its configuration).  So also tell every OpenBLAS already in the process, as threadpoolctl does.
SET_THREADS = ("openblas_set_num_threads", "scipy_openblas_set_num_threads64_", "openblas_set_num_threads64_")


def limit_loaded_openblas(threads=None):
    """Set the thread count of every OpenBLAS library mapped into this process (Linux); returns their paths."""
    threads = int(threads or os.environ["OPENBLAS_NUM_THREADS"])
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:
        return []
    limited = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        setter = next((getattr(lib, name) for name in SET_THREADS if hasattr(lib, name)), None)
        if setter is not None:
            setter(threads)
            limited.append(path)
    return limited


limit_loaded_openblas()


@pytest.fixture(scope="session", autouse=True)
def warm_kernels():
    """Compile (or load from the on-disk cache) every sweep before anything is timed, and time the
    compiled tier only: no call is served by the NumPy executor while a kernel builds."""
    import fasttape as ft
    from fasttape import tiers
    from fasttape.warm import warm

    previous = tiers.set_mode("compiled")
    warm(quiet=True)
    limit_loaded_openblas()  # any OpenBLAS that Numba's np.dot (SciPy's BLAS) has loaded meanwhile
    # a tape's own kernels only where a column asks for them (cases.Case.kernel_tape): the interpreter's
    # columns never switch tier in the middle of their rounds
    kernels = ft.set_options(tape_kernels="never")
    yield
    ft.set_options(**kernels)
    tiers.set_mode(previous)


@pytest.fixture(scope="session")
def jax():
    """The ``jax`` module configured for float64 on the CPU; skips the benchmark if JAX is not installed."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jax.config.update("jax_platforms", "cpu")
    return jax
