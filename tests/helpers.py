"""Helpers shared by the test modules: fasttape against JAX, leaf by leaf; saved tapes edited by hand."""

import functools
import io

import jax
import jax.numpy as jnp
import numpy as np

RTOL = 1e-10
ATOL = 1e-12


def regression_loss(w, X, y):
    """A small least-squares loss with a quartic term (the batches of tests/test_vmap.py, tests/test_dask.py)."""
    r = np.tanh(X @ w) - y
    return np.sum(r * r) + 0.1 * np.sum(w**4)


def branchy_loss(w, X, y):
    """The same residuals, squared or absolute as the sign of sum(w) says: two tapes, one per branch."""
    r = np.tanh(X @ w) - y
    if np.sum(w) > 0.0:
        return np.sum(r * r)
    return np.sum(np.abs(r)) + np.sum(w**2)


def assert_close(actual, desired, rtol=RTOL, atol=ATOL):
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, f"shape {actual.shape} != {desired.shape}"
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol)


def assert_tree_close(actual, desired, rtol=RTOL, atol=ATOL):
    """Same container structure (tuple/list/dict nesting), then leaf-by-leaf closeness."""
    a_leaves, a_def = jax.tree_util.tree_flatten(actual)
    d_leaves, d_def = jax.tree_util.tree_flatten(desired)
    assert a_def == d_def, f"structure {a_def} != {d_def}"
    for a, d in zip(a_leaves, d_leaves):
        assert not isinstance(a, jax.Array), "fasttape returned a JAX array"
        assert_close(a, d, rtol=rtol, atol=atol)


def both(f):
    """``f(xp, ...)`` bound to NumPy (for fasttape) and to jax.numpy (the reference)."""
    return functools.partial(f, np), functools.partial(f, jnp)


def load_with_edited_row(tape, opcode, column, value):
    """``tape`` saved, one column of its first row with ``opcode`` set to ``value`` (the checksum redone, as a
    hostile file would), then loaded."""
    from fasttape import kernels as K
    from fasttape import load_tape, storage

    arrays = storage._arrays_of(tape)
    row = int(np.flatnonzero(arrays["ins"][:, K.C_OP] == opcode)[0])
    arrays["ins"][row, column] = value
    buf = io.BytesIO()
    storage._write(arrays, buf)
    buf.seek(0)
    return load_tape(buf)
