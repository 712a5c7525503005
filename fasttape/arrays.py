"""NumPy's array-building functions on traced arrays, lowered onto slices, gathers, products and sums:
``diff``, ``pad`` (constant, edge, reflect, symmetric, wrap), ``convolve`` and ``correlate`` (full, same,
valid), ``polyval``, ``linspace`` with traced endpoints, ``cumprod`` and ``ufunc.accumulate`` for multiply,
maximum and minimum (a doubling scan).

Each is written as a user would write it by hand with the primitives, so its derivatives in every kind
are theirs: ``pad`` is one gather through the positions NumPy's own ``pad`` gives an index array (and a
selection of the constant), a convolution is one matrix product with the Toeplitz matrix gathered from the
longer operand, ``polyval`` is Horner's rule.  ``jax.numpy`` computes the same values.
"""

from __future__ import annotations

import operator

import numpy as np

from . import numpy as fnp
from .errors import UnsupportedFunctionError
from .recorder import concrete, recorder_of


def diff(a, n=1, axis=-1, prepend=np._NoValue, append=np._NoValue):
    """``numpy.diff``: n-th differences along ``axis`` (with ``prepend`` / ``append`` joined first)."""
    if recorder_of((a, prepend, append)) is None:
        return np.diff(a, n, axis, prepend, append)
    np.diff(np.zeros(np.shape(concrete(a))), n, axis)  # NumPy's errors: a negative order, a 0-d array
    ndim = np.ndim(concrete(a))
    axis = axis % ndim
    ends = []
    for end in (prepend, append):
        if end is np._NoValue:
            ends.append(None)
            continue
        shape = list(np.shape(concrete(a)))
        shape[axis] = 1
        ends.append(fnp.broadcast_to(end, tuple(shape)) if np.ndim(concrete(end)) == 0 else end)
    parts = [x for x in (ends[0], a, ends[1]) if x is not None]
    a = fnp.concatenate(parts, axis=axis) if len(parts) > 1 else a
    head = (slice(None),) * axis
    for _ in range(n):
        a = fnp.subtract(a[head + (slice(1, None),)], a[head + (slice(None, -1),)])
    return a


_INDEX_MODES = ("edge", "reflect", "symmetric", "wrap")


def pad(array, pad_width, mode="constant", **kwargs):
    """``numpy.pad`` in the modes that move elements (edge, reflect, symmetric, wrap: one gather through
    the positions NumPy pads an index array with) or add constants (``constant_values``)."""
    if recorder_of((array, kwargs.get("constant_values"))) is None:
        return np.pad(array, pad_width, mode, **kwargs)
    shape = np.shape(concrete(array))
    positions = np.arange(int(np.prod(shape))).reshape(shape)
    if mode in _INDEX_MODES:
        if kwargs.get("reflect_type", "even") != "even":
            raise UnsupportedFunctionError(
                f"numpy.pad(mode={mode!r}, reflect_type='odd') is not supported on traced arrays (it is not a "
                "movement of elements); pad with reflect_type='even' and add the odd extension yourself."
            )
        return fnp.ravel(array)[np.pad(positions, pad_width, mode, **kwargs)]
    if mode != "constant":
        raise UnsupportedFunctionError(
            f"numpy.pad(mode={mode!r}) is not supported on traced arrays; the modes are 'constant', 'edge', "
            "'reflect', 'symmetric' and 'wrap' (compute statistics such as 'mean' with np.mean and concatenate)."
        )
    values = kwargs.pop("constant_values", 0.0)
    if kwargs:
        raise TypeError(f"numpy.pad(mode='constant') got unexpected keyword arguments {sorted(kwargs)}")
    inside = np.pad(np.ones(shape, dtype=bool), pad_width, "constant", constant_values=False)
    moved = fnp.ravel(array)[np.pad(positions, pad_width, "constant", constant_values=0)]
    if recorder_of((values,)) is not None and np.ndim(concrete(values)) > 0:
        raise UnsupportedFunctionError(
            "numpy.pad with traced constant_values per axis is not supported; pass one traced scalar, or "
            "numbers per axis."
        )
    if recorder_of((values,)) is None:
        values = np.pad(np.zeros(shape), pad_width, "constant", constant_values=values)
    return fnp.where(inside, moved, values)


def convolve(a, v, mode="full"):
    """``numpy.convolve`` of two 1-D arrays: out[n] = Σ_k a[k] v[n - k], as one product of the Toeplitz
    matrix gathered from the longer operand (zeros outside it) with the shorter."""
    if recorder_of((a, v)) is None:
        return np.convolve(a, v, mode)
    expected = np.convolve(_vector(a, "a"), _vector(v, "v"), mode)  # NumPy's errors: empty input, a bad mode
    long, short = (a, v) if np.size(concrete(a)) >= np.size(concrete(v)) else (v, a)
    n_long, n_short = np.size(concrete(long)), np.size(concrete(short))
    start = {"full": 0, "same": (n_short - 1) // 2, "valid": n_short - 1}[_mode(mode)]
    rows = np.arange(start, start + expected.size)[:, None] - np.arange(n_short)[None, :]  # n - k
    inside = (rows >= 0) & (rows < n_long)
    padded = fnp.concatenate([fnp.ravel(long), np.zeros(1)])
    toeplitz = padded[np.where(inside, rows, n_long)]  # the zero past the end where n - k leaves long
    return fnp.matmul(toeplitz, fnp.ravel(short))


def correlate(a, v, mode="valid"):
    """``numpy.correlate`` of two real 1-D arrays: the convolution with v reversed."""
    if recorder_of((a, v)) is None:
        return np.correlate(a, v, mode)
    return convolve(a, fnp.flip(fnp.ravel(v), 0), mode)


def _vector(x, name):
    value = np.asarray(concrete(x), dtype=np.float64)
    if value.ndim > 1:
        raise ValueError(f"object too deep for desired array: {name} must be one-dimensional, not {value.shape}")
    return value.ravel()


def _mode(mode):
    modes = {"full": "full", "f": "full", "same": "same", "s": "same", "valid": "valid", "v": "valid"}
    return modes.get(mode, mode) if isinstance(mode, str) else ("valid", "same", "full")[mode]


def polyval(p, x):
    """``numpy.polyval``: p[0] x^(N-1) + ... + p[N-1], by Horner's rule."""
    if recorder_of((p, x)) is None:
        return np.polyval(p, x)
    coefficients = p if recorder_of((p,)) is not None else np.asarray(p, dtype=np.float64)
    y = np.zeros(np.shape(concrete(x)))  # as NumPy: zeros_like(x), then y x + p[i] (NaN for an infinite x)
    for i in range(np.shape(concrete(coefficients))[0]):
        y = fnp.add(fnp.multiply(y, x), coefficients[i])
    return y


def linspace(start, stop, num=50, endpoint=True, retstep=False, dtype=None, axis=0):
    """``numpy.linspace`` with traced ``start`` and ``stop`` (scalars or arrays): start + i step, the last
    sample ``stop`` itself when ``endpoint``."""
    if recorder_of((start, stop)) is None:
        return np.linspace(start, stop, num, endpoint, retstep, dtype, axis)
    num = operator.index(num)
    expected, step_value = np.linspace(concrete(start), concrete(stop), num, endpoint, True, axis=0)
    div = (num - 1) if endpoint else num
    shape = np.shape(expected)[1:]
    i = np.arange(num, dtype=np.float64).reshape((num,) + (1,) * len(shape))
    delta = fnp.subtract(stop, start)
    step = fnp.divide(delta, div) if div > 0 else fnp.multiply(delta, np.nan)
    samples = fnp.add(fnp.multiply(i, step), start) if div > 0 else fnp.add(fnp.multiply(i, delta), start)
    samples = fnp.broadcast_to(samples, np.shape(expected))
    if endpoint and num > 1:
        samples = fnp.concatenate([samples[:-1], fnp.reshape(fnp.broadcast_to(stop, shape), (1,) + shape)], axis=0)
    if axis != 0:
        samples = fnp.moveaxis(samples, 0, axis)
    return (samples, step) if retstep else samples


def accumulate(ufunc, a, axis=0):
    """``ufunc.accumulate`` along ``axis`` for multiply, maximum and minimum: a doubling scan (Hillis and
    Steele), log₂ n steps that each combine every element with the one 2^k before it, so each step is one
    primitive whose own derivative applies: exact at zeros for products (no division), JAX's tie rule for
    maximum and minimum."""
    combine, identity = {np.multiply: (fnp.multiply, 1.0), np.maximum: (fnp.maximum, -np.inf),
                         np.minimum: (fnp.minimum, np.inf)}[ufunc]  # fmt: skip
    value = ufunc.accumulate(np.asarray(concrete(a), dtype=np.float64), axis=axis)  # NumPy's errors
    axis = axis % value.ndim
    n = value.shape[axis]
    head = (slice(None),) * axis
    shift = 1
    while shift < n:
        pad_shape = value.shape[:axis] + (shift,) + value.shape[axis + 1 :]
        before = fnp.concatenate([np.full(pad_shape, identity), a[head + (slice(None, n - shift),)]], axis=axis)
        a = combine(a, before)
        shift *= 2
    return a


def cumprod(a, axis=None, dtype=None, out=None):
    """``numpy.cumprod``: products of the prefixes along ``axis`` (the flattened array by default), correct
    at zeros."""
    if recorder_of((a,)) is None:
        return np.cumprod(a, axis=axis, dtype=dtype, out=out)
    fnp._no_out("cumprod", out, {})
    if axis is None:
        a, axis = fnp.ravel(a), 0
    return accumulate(np.multiply, a, axis)


FUNCTIONS = {
    np.cumprod: cumprod,
    np.diff: diff,
    np.pad: pad,
    np.convolve: convolve,
    np.correlate: correlate,
    np.polyval: polyval,
    np.linspace: linspace,
}
fnp.FUNCTIONS.update(FUNCTIONS)
