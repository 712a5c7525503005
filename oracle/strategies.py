"""hypothesis strategies for the oracle's per-primitive checks.

Each primitive of fasttape's table declares the domain on which it is smooth
(``positive`` for ``log``, ``unit`` = (-1, 1) for ``arcsin``, ``nonzero`` for
``abs``...).  :func:`domain_arrays` draws float64 arrays inside such a domain,
with a margin from its edges and kinks, so finite differences stay a fair
witness; :func:`primitive_examples` draws a whole check for one primitive:
operand shapes (mutually broadcastable ones for binary primitives, an axis and
``keepdims`` for reductions) and the operands.  ``primitive_examples(prim, edge)`` draws
the operands on one of the edges the primitive declares instead (exact ties, exact zeros,
magnitudes near 1e300 or 1e-300), where the check is against JAX alone.

The random programs of :mod:`oracle.programs` are built from the same table.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fasttape import PRIMITIVES
from fasttape.primitives import EDGES

from .cases import (
    BESIDE_ZEROS,
    EDGE_EXPONENTS,
    NONFINITE,
    NONFINITE_VALUES,
    TIED,
    ZEROS,
    Case,
    _eigh_both,
    _lu_factor_both,
    _qr_all,
    _sla,
    _svd_all,
    _sym,
    checked_edges,
)

MAX_DIMS = 3
MAX_SIDE = 4


def _floats(lo, hi):
    return st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False, width=64)


def domain_values(domain: str) -> st.SearchStrategy:
    """Scalars inside ``domain``, kept at least 0.1 from its edges and from the kinks of the
    primitives that use it."""
    if domain == "real":
        return _floats(-3.0, 3.0)
    if domain == "positive":
        return _floats(0.2, 3.0)
    if domain == "unit":
        return _floats(-0.9, 0.9)
    if domain == "above_one":
        return _floats(1.1, 3.0)
    if domain == "probability":
        return _floats(0.1, 0.9)
    if domain == "nonzero":
        return st.one_of(_floats(0.2, 3.0), _floats(-3.0, -0.2))
    if domain == "off_integers":  # floor/ceil are constant on (k + 0.1, k + 0.9)
        return st.builds(lambda k, f: k + f, st.integers(-3, 2), _floats(0.1, 0.9))
    if domain == "off_half_integers":  # round is constant on (k - 0.4, k + 0.4)
        return st.builds(lambda k, f: k + f, st.integers(-3, 3), _floats(-0.4, 0.4))
    if domain == "off_multiples":  # k + 1/4: x / y stays 1/12 or more from an integer for the "divisors"
        return st.builds(lambda k, f: k + 0.25 + f, st.integers(-3, 2), _floats(-0.03, 0.03))
    if domain == "divisors":
        return st.sampled_from([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0])
    if domain == "grid":  # integers; with "offgrid" two operands are never within 0.5 of each other
        return st.integers(-3, 3).map(float)
    if domain == "offgrid":
        return st.integers(-3, 2).map(lambda k: k + 0.5)
    raise ValueError(f"unknown domain {domain!r}")


def _beside_nonfinite(domain) -> st.SearchStrategy:
    """The ordinary values among NaN and inf: inside the primitive's own domain (gammaln beside -2 is a
    pole, not propagation), and for the real line away from 0 (near 1e-145 a second partial over- or
    underflows inside the rule, and whether that ends as NaN or inf is each side's grouping)."""
    if domain in (None, "real", "distinct", "grid", "offgrid"):
        return _floats(-2.0, -0.25) | _floats(0.25, 2.0)
    return domain_values(domain)


def edge_values(edge: str, beside=None) -> st.SearchStrategy:
    """Scalars on one of the declarations' ``EDGES`` (as ``oracle.cases.sample`` draws them); on the NaN
    and inf edge, the ordinary values among them lie in the domain ``beside``."""
    if edge == "ties":
        return st.sampled_from(TIED)
    if edge == "zeros":
        return st.sampled_from(ZEROS) | _floats(*BESIDE_ZEROS)
    if edge in EDGE_EXPONENTS:
        return st.builds(lambda s, e: s * 10.0**e, st.sampled_from([-1.0, 1.0]), _floats(*EDGE_EXPONENTS[edge]))
    if edge == NONFINITE:
        return st.sampled_from(NONFINITE_VALUES) | _beside_nonfinite(beside)
    raise ValueError(f"unknown edge {edge!r}")


def domain_arrays(domain: str, shape, beside=None) -> st.SearchStrategy:
    """float64 arrays of ``shape`` inside ``domain`` (or on an edge, its ordinary values in ``beside``);
    ``distinct`` (max/min) draws elements at least 0.25 apart, so no tie is within finite-difference reach."""
    if domain in EDGES or domain == NONFINITE:
        return hnp.arrays(np.float64, shape, elements=edge_values(domain, beside))
    if domain == "distinct":
        elements = st.integers(-12, 12).map(lambda k: 0.25 * k)
        return hnp.arrays(np.float64, shape, elements=elements, unique=True)
    return hnp.arrays(np.float64, shape, elements=domain_values(domain))


def shapes(min_dims=0):
    return hnp.array_shapes(min_dims=min_dims, max_dims=MAX_DIMS, min_side=1, max_side=MAX_SIDE)


@dataclass
class Example:
    """One drawn check: the case (a program of one primitive) and its float64 operands."""

    case: Case
    args: tuple

    def __repr__(self):
        shapes_ = ", ".join(str(a.shape) for a in self.args)
        values = ", ".join(np.array2string(a, precision=17, separator=", ") for a in self.args)
        return f"{self.case.name}{{{shapes_}}} at ({values})"


def _call(name, *fixed):
    """``xp.<name>``, with ``fixed`` leading operands (an order) before the drawn ones."""

    def fn(xp, *args):
        return getattr(xp, name)(*fixed, *args)

    return fn


@st.composite
def _unary(draw, prim, edge=None):
    domain = edge or prim.domain
    x = draw(shapes().flatmap(lambda s: domain_arrays(domain, s, prim.domain)))
    return Example(Case(prim.name, _call(prim.call_name), (x.shape,), (domain,), smooth=edge is None), (x,))


@st.composite
def _binary(draw, prim, edge=None):
    if prim.static == (0,):  # an order: drawn, then held fixed
        n = draw(st.integers(0, 6))
        y = draw(shapes().flatmap(lambda s: domain_arrays(edge or prim.domains[1], s, prim.domains[1])))
        case = Case(f"{prim.name}-order{n}", _call(prim.call_name, n), (y.shape,), (edge or prim.domains[1],),
                    smooth=edge is None)  # fmt: skip
        return Example(case, (y,))
    beside = prim.domains
    if edge is not None:
        domains = (edge, edge)
    elif "ties" in prim.edges:  # maximum/minimum: operands on interleaved grids, either one the larger
        domains = draw(st.sampled_from([("grid", "offgrid"), ("offgrid", "grid")]))
    else:
        domains = prim.domains
    pair = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=MAX_DIMS, max_side=MAX_SIDE))
    x, y = (draw(domain_arrays(d, s, b)) for d, s, b in zip(domains, pair.input_shapes, beside))
    case = Case(prim.name, _call(prim.call_name), (x.shape, y.shape), domains, smooth=edge is None)
    return Example(case, (x, y))


@st.composite
def _comparison(draw, prim, edge=None):
    """``where(x OP y, x * y, x - 2y)``: the selected branch's derivative, on operands with some ties (or,
    on the NaN and inf edge, among NaN and inf)."""
    pair = draw(hnp.mutually_broadcastable_shapes(num_shapes=2, max_dims=MAX_DIMS, max_side=MAX_SIDE))
    grid = st.integers(-2, 2).map(float)  # small integers: equal elements are likely, as they should be
    elements = grid if edge is None else grid | edge_values(edge)
    x, y = (draw(hnp.arrays(np.float64, s, elements=elements)) for s in pair.input_shapes)
    name = prim.numpy[0]

    def fn(xp, a, b):
        return xp.where(getattr(xp, name)(a, b), a * b, a - 2.0 * b)

    domains = () if edge is None else (edge, edge)
    return Example(Case(prim.name, fn, (x.shape, y.shape), domains, smooth=False), (x, y))


@st.composite
def _reduction(draw, prim, edge=None):
    name = prim.numpy[0] if prim.numpy else prim.name
    domain = edge or prim.domain
    x = draw(shapes(min_dims=1).flatmap(lambda s: domain_arrays(domain, s, prim.domain)))
    axes = st.none() | st.integers(-x.ndim, x.ndim - 1)
    if x.ndim > 1:
        axes |= st.lists(st.integers(0, x.ndim - 1), min_size=2, max_size=x.ndim, unique=True).map(tuple)
    axis, keepdims = draw(axes), draw(st.booleans())

    def fn(xp, a):
        return getattr(xp, name)(a, axis=axis, keepdims=keepdims)

    label = f"{prim.name}-axis{axis}-keep{keepdims}".replace(" ", "")
    return Example(Case(label, fn, (x.shape,), (domain,), smooth=edge is None), (x,))


def _generic(draw, shape):
    """Entries in [-1, 1]: half drawn, half a fixed pseudo-random matrix of the shape, so that what hypothesis
    shrinks to (zeros) is still a matrix in general position: at exactly aligned columns LAPACK's Householder
    steps skip a reflection, and the signs of singular vectors jump there."""
    fixed = np.random.default_rng(zlib.crc32(repr(shape).encode())).uniform(-1.0, 1.0, size=shape)
    return 0.5 * draw(hnp.arrays(np.float64, shape, elements=_floats(-1.0, 1.0))) + 0.5 * fixed


def _orthonormal(G):
    """Orthonormal columns from drawn entries (the identity's where they are all zero, as hypothesis shrinks)."""
    return np.linalg.qr(G)[0]


@st.composite
def matrices(draw, domain, batch, n, m=None):
    """float64 matrices (*batch, n, n) (or (*batch, n, m)) in a linear-algebra domain, built from entries G
    in [-1, 1] (``_generic``; hypothesis shrinks their drawn half): ``invertible`` 1.5 I + G / (2 √n)
    (singular values in [0.5, 2.5]), ``positive_definite`` G Gᵀ / n + I, ``separated_spectrum``
    Q diag(1, ..., n) Qᵀ and ``separated_singular`` U diag(k, ..., 1) Vᵀ (each value moved by at most 0.1:
    eigenvalues and singular values stay 0.8 apart)."""
    m = n if m is None else m
    G = _generic(draw, batch + (n, m))
    if domain == "real":
        return G
    if domain == "invertible":
        return 1.5 * np.eye(n) + G / (2.0 * np.sqrt(n))
    if domain == "positive_definite":
        return G @ np.swapaxes(G, -1, -2) / n + np.eye(n)
    k = min(n, m)
    jitter = draw(hnp.arrays(np.float64, batch + (k,), elements=_floats(-0.1, 0.1)))
    if domain == "separated_spectrum":
        Q = _orthonormal(G)
        return (Q * (np.arange(1.0, n + 1.0) + jitter)[..., None, :]) @ np.swapaxes(Q, -1, -2)
    if domain == "separated_singular":
        V = _orthonormal(_generic(draw, batch + (m, k)))
        U = _orthonormal(G[..., :k] if n >= m else G[..., :, :k])
        return (U * (np.arange(k, 0.0, -1.0) + jitter)[..., None, :]) @ np.swapaxes(V, -1, -2)
    raise ValueError(f"unknown matrix domain {domain!r}")


LINALG_KINDS = frozenset(("solve", "slogdet", "cholesky", "trisolve", "eigh", "svd", "qr", "lu", "permute"))
_ONE_MATRIX = {
    "slogdet": lambda xp, a: xp.linalg.slogdet(a)[1],
    "cholesky": lambda xp, a: xp.linalg.cholesky(_sym(xp, a)),  # NumPy reads one triangle: symmetric steps
    "eigh": lambda xp, a: _eigh_both(xp, xp.linalg.eigh(_sym(xp, a))),
    "svd": _svd_all,
    "qr": _qr_all,
    "lu": _lu_factor_both,
}


@st.composite
def _linalg(draw, prim, edge=None):
    """A check of one linear-algebra primitive through the function users call, on drawn batch axes, sizes
    and matrices inside its domain (the NaN and inf edge keeps its hand-written case)."""
    batch = draw(st.sampled_from([(), (), (2,)]))
    n, m = draw(st.integers(1, 4)), draw(st.integers(1, 3))
    kind = prim.kind
    if kind in _ONE_MATRIX:
        a = draw(matrices(prim.domain, batch, n, m if kind in ("svd", "qr") else None))
        return Example(Case(f"{prim.name}-drawn", _ONE_MATRIX[kind], (a.shape,), (prim.domain,)), (a,))
    if kind == "permute":  # lu_solve, on one matrix
        batch = ()
    a = draw(matrices("invertible", batch, n))
    rhs = (n,) if not batch and draw(st.booleans()) else batch + (n, m)
    b = draw(hnp.arrays(np.float64, rhs, elements=_floats(-2.0, 2.0)))
    lower, unit, trans = draw(st.booleans()), draw(st.booleans()), draw(st.sampled_from([0, 1]))

    def fn(xp, a, b):
        if kind == "solve":
            return xp.linalg.solve(a, b)
        if kind == "trisolve":
            return _sla(xp).solve_triangular(a, b, trans=trans, lower=lower, unit_diagonal=unit)
        return _sla(xp).lu_solve(_sla(xp).lu_factor(a), b, trans=trans)

    return Example(Case(f"{prim.name}-drawn", fn, (a.shape, b.shape), ("invertible", "real")), (a, b))


INDEXING_KINDS = frozenset(("take", "scatter", "argsort", "argreduce", "searchsorted"))


def _updated(x, index, values, add):
    """``x.at[index].add / set(values)`` for traced and JAX arrays, NumPy's in-place update on a copy of a
    plain one (whose output shape the oracle's loss reads)."""
    if hasattr(x, "at"):
        return x.at[index].add(values) if add else x.at[index].set(values)
    out = np.array(x, dtype=np.float64)
    if add:
        np.add.at(out, index, values)
    else:
        out[index] = values
    return out


@st.composite
def _indexing(draw, prim, edge=None):
    """A check of one primitive of the indexing or sorting families on drawn shapes, axes and tie-free
    operands (elements 0.25 apart); the indices are computed from the operand in the sweep -- an argsort's
    ranks, reduced modulo the axis and shifted negative at will -- so they are in range by construction."""
    x = draw(shapes(min_dims=1).flatmap(lambda s: domain_arrays("distinct", s)))
    axis = draw(st.integers(-x.ndim, x.ndim - 1))
    n = x.shape[axis]
    kind = prim.kind
    if kind == "argsort":

        def fn(xp, a):
            return a * xp.argsort(a, axis=axis, stable=True)

    elif kind == "argreduce":
        keepdims = draw(st.booleans())

        def fn(xp, a):
            return xp.sum(a) * getattr(xp, prim.name)(a, axis=axis, keepdims=keepdims)

    elif kind == "take":
        m, negative, along = draw(st.integers(1, 5)), draw(st.booleans()), draw(st.booleans())

        def fn(xp, a):
            if along:  # one index per element: a sort along the axis
                return xp.take_along_axis(a, xp.argsort(a, axis=axis, stable=True), axis=axis)
            ranks = xp.argsort(xp.ravel(a), stable=True)[:m] % n
            return xp.take(a, ranks - n if negative else ranks, axis=axis)

    elif kind == "scatter":
        add = draw(st.booleans())
        k = draw(st.integers(1, x.size))

        def fn(xp, a):
            flat = xp.ravel(a)
            ranks = xp.argsort(flat, stable=True)  # a permutation: set writes each position once
            return _updated(flat * flat, ranks % k if add else ranks, flat, add)

    else:  # searchsorted, into the sorted operand: values 0.125 off its grid, so none sits on an element
        v = np.round(4.0 * draw(domain_arrays("real", draw(shapes())))) / 4.0 + 0.125
        right = draw(st.booleans())

        def fn(xp, a, b):
            return b * xp.searchsorted(xp.sort(xp.ravel(a)), b, side="right" if right else "left")

        return Example(Case(f"{prim.name}-drawn", fn, (x.shape, v.shape), ("distinct", "offgrid")), (x, v))
    return Example(Case(f"{prim.name}-drawn", fn, (x.shape,), ("distinct",)), (x,))


_BY_KIND = {"unary": _unary, "binary": _binary, "comparison": _comparison, "reduction": _reduction}
_BY_KIND |= dict.fromkeys(LINALG_KINDS, _linalg)
_BY_KIND |= dict.fromkeys(INDEXING_KINDS, _indexing)
DRAWN = tuple(p for p in PRIMITIVES if p.kind in _BY_KIND)  # the other structural primitives keep hand-written cases


def primitive_examples(prim, edge=None) -> st.SearchStrategy:
    """Checks of one elementwise, comparison or reduction primitive: shapes, then operands (on ``edge``,
    one of the primitive's ``checked_edges``, when given)."""
    if edge is not None and edge not in checked_edges(prim):
        raise ValueError(f"{prim.name} has no edge {edge!r} (its edges: {checked_edges(prim)})")
    if edge is not None and (prim.kind in LINALG_KINDS or prim.kind in INDEXING_KINDS):
        raise ValueError(f"{prim.name}'s NaN and inf edge is its hand-written case; its drawn checks are smooth")
    return _BY_KIND[prim.kind](prim) if edge is None else _BY_KIND[prim.kind](prim, edge)
