"""Programs for every primitive of fasttape's table, each written once against a
namespace ``xp`` so the same source runs as plain NumPy (traced by fasttape)
and as ``jax.numpy`` (the reference).  Shared by the oracle and the test suite.

``PRIMITIVE_CASES`` is generated from ``fasttape.PRIMITIVES`` for the
elementwise, comparison and reduction primitives, and written out by hand for
the structural ones (broadcast, gather, matmul), which NumPy reaches through
many functions.  ``test_primitives.py`` checks that together they exercise
every opcode in the table.

``sample(domain, shape, rng)`` draws inputs on which a primitive is smooth.
"""

from __future__ import annotations

import functools
import zlib
from dataclasses import dataclass, field

import numpy as np
import scipy.special

import fasttape.numpy as fnp
from fasttape import PRIMITIVES

from .check import KINDS


class Namespace:
    """``module`` plus a few extras, then ``special`` (the SciPy functions the primitives answer to)."""

    def __init__(self, module, special=None, **extras):
        self._module = module
        self._special = special
        self._extras = extras

    def __getattr__(self, name):
        if name in self._extras:
            return self._extras[name]
        if self._special is not None and not hasattr(self._module, name):
            return getattr(self._special, name)
        return getattr(self._module, name)


# scipy.special's own ufuncs: fasttape must receive them through NumPy's protocol, as a user's code does
NP = Namespace(np, scipy.special, logsumexp=fnp.logsumexp)


@functools.lru_cache(maxsize=1)
def jax_namespace():
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    return Namespace(jnp, jsp, logsumexp=jsp.logsumexp)


def _extended(xp):
    """The namespace the cases expect, for a bare module (as ``oracle.check`` passes) or a namespace."""
    if isinstance(xp, Namespace):
        return xp
    return NP if xp is np else jax_namespace()


def scalar_loss(case, args, rng):
    """``loss(xp, *args)``: the case's output ``y`` weighed by fixed random weights, ``sum(w y)``, plus
    a quadratic ``sum(c y²) / 2`` whose curvature ``c`` is scaled to ``1 / max |y|`` (no overflow at
    1e300).  The quadratic makes the adjoint reaching the case's primitives vary with the inputs, so
    the second-order sweep has an adjoint tangent to carry through each of them: under a linear loss
    it is a structural zero, and a wrong second-order rule of a piecewise-linear primitive (``max``
    at a tie, ``abs`` at 0) would go unseen.

    Cases with NaN and inf inputs keep the linear loss: an infinite adjoint would turn their exact
    comparison into one of how each rule groups its arithmetic (inf or NaN), which the random
    programs check loosely (``check(exact_nonfinite=False)``)."""
    # the output's shape (and scale); NaN and inf inputs are replaced by stand-ins (NumPy's cholesky refuses them)
    out = np.asarray(case.fn(NP, *(np.nan_to_num(a, nan=0.5, posinf=2.0, neginf=-2.0) if case.eager else a
                                   for a in args)), dtype=np.float64)  # fmt: skip
    weight = rng.normal(size=out.shape)
    curvature = None
    if not case.eager:
        scale = max(1.0, float(np.max(np.abs(out[np.isfinite(out)]), initial=0.0)))
        curvature = rng.uniform(0.5, 1.0, size=out.shape) / scale

    def loss(xp, *a):
        y = case.fn(_extended(xp), *a)
        linear = xp.sum(y * weight)
        return linear if curvature is None else linear + 0.5 * xp.sum((curvature * y) * y)  # (c y) y: finite

    loss.__name__ = case.name
    return loss


# -- input domains -----------------------------------------------------------
# what the edges draw (``sample`` here, ``oracle.strategies.edge_values`` for hypothesis)
TIED = (-1.5, 0.0, 0.5, 2.0)  # "ties": a few values, so equal elements and equal operands are common
ZEROS, BESIDE_ZEROS = (0.0, -0.0), (0.5, 2.0)  # "zeros": exact zeros of both signs among values in a range
EDGE_EXPONENTS = {"huge": (295.0, 300.0), "tiny": (-300.0, -295.0)}  # log10 |x|, either sign
# every primitive's edge besides its declared ones: NaN and ±inf among ordinary values, compared with JAX run
# op by op (``check(eager=True)``), which propagates them as IEEE arithmetic does
NONFINITE = "nonfinite"
NONFINITE_VALUES = (np.nan, np.inf, -np.inf)


def checked_edges(prim) -> tuple[str, ...]:
    """The edges where the oracle checks a primitive: its declared ones, then NaN and inf."""
    return (*prim.edges, NONFINITE)


def sample(domain, shape, rng):
    """Random float64 inputs on which a primitive is smooth."""
    if domain == "real":
        return rng.normal(size=shape)
    if domain == "positive":
        return rng.uniform(0.5, 2.0, size=shape)
    if domain == "unit":
        return rng.uniform(-0.9, 0.9, size=shape)
    if domain == "above_one":
        return rng.uniform(1.2, 3.0, size=shape)
    if domain == "probability":
        return rng.uniform(0.1, 0.9, size=shape)
    if domain == "nonzero":
        return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.5, 2.0, size=shape)
    if domain == "invertible":  # (..., n, n): 1.5 I plus a spectrum of radius about 0.5, condition number < 5
        n = shape[-1]
        return 1.5 * np.eye(n) + 0.5 * rng.normal(size=shape) / np.sqrt(n)
    if domain == "positive_definite":  # (..., n, n) symmetric, eigenvalues in [1, about 5]
        n = shape[-1]
        G = rng.normal(size=shape) / np.sqrt(n)
        return G @ np.swapaxes(G, -1, -2) + np.eye(n)
    if domain == "separated_spectrum":  # (..., n, n) symmetric, eigenvalues 1, 2, ..., n (each +-0.1)
        n = shape[-1]
        Q, _ = np.linalg.qr(rng.normal(size=shape))
        w = np.arange(1.0, n + 1.0) + rng.uniform(-0.1, 0.1, size=shape[:-1])
        return (Q * w[..., None, :]) @ np.swapaxes(Q, -1, -2)
    if domain == "separated_singular":  # (..., n, m), singular values 1, 2, ..., min(n, m) (each +-0.1)
        n, m = shape[-2:]
        k = min(n, m)
        U, _ = np.linalg.qr(rng.normal(size=shape[:-2] + (n, k)))
        V, _ = np.linalg.qr(rng.normal(size=shape[:-2] + (m, k)))
        s = np.arange(k, 0.0, -1.0) + rng.uniform(-0.1, 0.1, size=shape[:-2] + (k,))
        return (U * s[..., None, :]) @ np.swapaxes(V, -1, -2)
    if domain == "distinct":
        # 0.37 apart, each with its own jitter in [0.02, 0.08]: no two elements tie, none is within 0.01
        # of 0 (abs), and sums of them (a matrix 1-norm's column sums) do not tie either
        grid = rng.permutation(np.arange(int(np.prod(shape)), dtype=float)).reshape(shape) * 0.37 - 1.1
        return grid + rng.uniform(0.02, 0.08, size=shape)
    if domain == "off_integers":
        return rng.integers(-3, 3, size=shape) + rng.uniform(0.1, 0.9, size=shape)
    if domain == "off_half_integers":
        return rng.integers(-3, 3, size=shape) + rng.choice([0.2, 0.7], size=shape) + rng.uniform(-0.1, 0.1, shape)
    if domain == "off_multiples":  # k + 1/4: x / y stays 1/12 or more from an integer for the "divisors"
        return rng.integers(-3, 3, size=shape) + 0.25 + rng.uniform(-0.03, 0.03, size=shape)
    if domain == "divisors":
        return rng.choice([-3.0, -2.0, -1.0, 1.0, 2.0, 3.0], size=shape)
    if domain == "ties":
        return rng.choice(TIED, size=shape)
    if domain == "zeros":  # about a third exact zeros (and -0.0)
        return rng.choice([*ZEROS, 1.0], size=shape) * rng.uniform(*BESIDE_ZEROS, size=shape)
    if domain == NONFINITE:  # each of NaN, +inf, -inf once (as far as the size allows), then one in eight
        x = rng.normal(size=shape)
        flat = x.reshape(-1)
        special = rng.choice(NONFINITE_VALUES, size=flat.size)
        special[: min(3, flat.size)] = NONFINITE_VALUES[: min(3, flat.size)]
        chosen = np.arange(flat.size) < 3
        chosen |= rng.uniform(size=flat.size) < 0.125
        order = rng.permutation(flat.size)
        flat[order[chosen]] = special[chosen]
        return x
    if domain in EDGE_EXPONENTS:  # huge: exp and squares overflow; tiny: 1 + x is 1, squares underflow
        return rng.choice([-1.0, 1.0], size=shape) * 10.0 ** rng.uniform(*EDGE_EXPONENTS[domain], size=shape)
    raise ValueError(domain)


@dataclass
class Case:
    """A program ``fn(xp, *args)`` and how to draw its float inputs."""

    name: str
    fn: object
    shapes: tuple
    domains: tuple = ()
    smooth: bool = True  # finite differences apply
    int_args: tuple = field(default_factory=tuple)
    kinds: tuple = ()  # the derivative kinds the oracle checks (all when empty)

    @property
    def eager(self) -> bool:
        """Compare with JAX run op by op: NaN and inf inputs, whose propagation XLA's rewrites may change."""
        return NONFINITE in self.domains

    def rng(self, salt=""):
        """A generator seeded by the case's name: the same draws in every process (``hash`` of a str
        changes with ``PYTHONHASHSEED``, so a failure seeded by it could not be reproduced)."""
        return np.random.default_rng(zlib.crc32((self.name + salt).encode()))

    def inputs(self, rng):
        domains = self.domains or ("real",) * len(self.shapes)
        return [sample(d, s, rng) for d, s in zip(domains, self.shapes)]


def _unary(prim):
    name = prim.call_name
    return Case(
        f"{prim.name}",
        lambda xp, x: getattr(xp, name)(x),
        ((3, 4),),
        prim.domains,
        smooth=True,
    )


def _binary(prim):
    name = prim.call_name
    domains = prim.domains
    if prim.static == (0,):  # an order: a constant of each case, the other operand drawn
        return [Case(f"{prim.name}-order{n}", lambda xp, y, n=n: getattr(xp, name)(n, y), ((3, 4),), domains[1:])
                for n in (1, 0, 2, 3, 6)]  # fmt: skip
    fn = lambda xp, x, y: getattr(xp, name)(x, y)  # noqa: E731
    cases = [
        Case(f"{prim.name}", fn, ((3, 4), (3, 4)), domains),
        Case(f"{prim.name}-bcast-3x1-1x4", fn, ((3, 1), (1, 4)), domains),
        Case(f"{prim.name}-bcast-4-2x3x4", fn, ((4,), (2, 3, 4)), domains),
        Case(f"{prim.name}-scalar-array", fn, ((), (3, 4)), domains),
        Case(f"{prim.name}-array-const", lambda xp, x: getattr(xp, name)(x, 1.5), ((5,),), domains[:1]),
        Case(f"{prim.name}-const-array", lambda xp, y: getattr(xp, name)(0.75, y), ((5,),), domains[1:]),
    ]
    return cases


def _comparison(prim):
    name = prim.numpy[0]

    def fn(xp, x, y):
        y = xp.where(xp.arange(12).reshape(3, 4) % 3 == 0, x, y)  # some exact ties
        return xp.where(getattr(xp, name)(x, y), x * y, x - 2.0 * y)

    return [Case(prim.name, fn, ((3, 4), (3, 4)), smooth=False)]


def _reduction(prim):
    name = prim.name
    domain = prim.domain
    cases = []
    for axis, keepdims in [(None, False), (0, False), (1, True), ((0, 2), False), (-1, False), ((2, 0), True)]:
        cases.append(
            Case(
                f"{name}-axis{axis}-keep{keepdims}".replace(" ", ""),
                lambda xp, x, axis=axis, keepdims=keepdims: getattr(xp, name)(x, axis=axis, keepdims=keepdims),
                ((2, 3, 4),),
                (domain,),
            )
        )
    return cases


# primitives whose cases are not named after them: their first cases
_FIRST_CASE = {
    "gather": "index-int-array",
    "trisolve": "solve-triangular",
    "lu": "lu-factor",
    "permute": "lu-solve",
    "take": "take-argsort-rows",
    "scatter": "scatter-at-argmax",
    "searchsorted": "searchsorted-interp",
}


def first_case(prim, cases):
    """The case that stands for a primitive: the first named after it (or ``_FIRST_CASE``'s)."""
    name = _FIRST_CASE.get(prim.name, prim.name)
    return next(c for c in cases if c.name == name or c.name.startswith(name + "-"))


def _edge_cases(prim, cases):
    """The primitive's first case again on each of its edges (``checked_edges``), compared with JAX only:
    at a tie or a kink finite differences do not apply, at 1e300 they overflow, at NaN they are NaN."""
    first = first_case(prim, cases)
    return [
        Case(f"{prim.name}-edge-{edge}", first.fn, first.shapes, (edge,) * len(first.shapes), smooth=False)
        for edge in checked_edges(prim)
    ]


def generated_cases():
    cases = []
    for prim in PRIMITIVES:
        if prim.kind == "unary":
            cases.append(_unary(prim))
        elif prim.kind == "binary":
            cases += _binary(prim)
        elif prim.kind == "comparison":
            cases += _comparison(prim)
        elif prim.kind == "reduction":
            cases += _reduction(prim)
    return cases


def _sla(xp):
    """scipy.linalg for NumPy programs, jax.scipy.linalg for JAX ones."""
    if (xp._module if isinstance(xp, Namespace) else xp) is np:
        import scipy.linalg

        return scipy.linalg
    import jax.scipy.linalg

    return jax.scipy.linalg


def _spd(xp, a):
    """A A^T / n + I: symmetric positive definite (eigenvalues at least 1) for any real A (..., n, n)."""
    n = a.shape[-1]
    return a @ xp.swapaxes(a, -1, -2) / n + xp.eye(n)


def _sym(xp, a):
    return 0.5 * (a + xp.swapaxes(a, -1, -2))


def _eigh_both(xp, pair):
    """Eigenvalues and eigenvectors side by side (..., n + n²)."""
    w, V = pair
    return xp.concatenate([w, xp.reshape(V, w.shape[:-1] + (-1,))], axis=-1)


def _eigh_squared(xp, pair):
    """Eigenvalues and squared eigenvectors: SciPy's default driver (evr) may pick other signs than
    LAPACK's dsyevd, which NumPy, JAX and fasttape use."""
    w, V = pair
    return _eigh_both(xp, (w, V * V))


def _matrix_exp(xp, a):
    """exp(A) of a symmetric A by its eigendecomposition: V diag(exp w) Vᵀ (no eigenvector sign matters)."""
    w, V = xp.linalg.eigh(a)
    return (V * xp.exp(w)[..., None, :]) @ xp.swapaxes(V, -1, -2)


def _svd_all(xp, a):
    """U, s and Vt of the thin SVD side by side (..., n k + k + k m)."""
    U, s, Vt = xp.linalg.svd(a, full_matrices=False)
    batch = s.shape[:-1]
    return xp.concatenate([xp.reshape(U, batch + (-1,)), s, xp.reshape(Vt, batch + (-1,))], axis=-1)


def _qr_all(xp, a, mode="reduced"):
    Q, R = xp.linalg.qr(a, mode=mode)
    batch = Q.shape[:-2]
    return xp.concatenate([xp.reshape(Q, batch + (-1,)), xp.reshape(R, batch + (-1,))], axis=-1)


def _scipy_svd(xp, a):
    U, s, Vt = _sla(xp).svd(a, full_matrices=False)
    return xp.concatenate([U.ravel(), s, Vt.ravel()])


def _lstsq_and_residuals(xp, a, b):
    x, residuals, _, _ = xp.linalg.lstsq(a, b)
    return xp.concatenate([xp.ravel(x), xp.ravel(residuals)])


def _spectral_norms(xp, a):
    norm = xp.linalg.norm
    return xp.stack([norm(a, 2), norm(a, -2), norm(a, "nuc")])


def _lu_factor_both(xp, a):
    """lu_factor's factors and pivots side by side (the pivots' derivative is zero)."""
    lu, piv = _sla(xp).lu_factor(a)
    return xp.concatenate([xp.ravel(lu), xp.ravel(piv) * 1.0])


def _lu_solves(xp, a, b, trans):
    return _sla(xp).lu_solve(_sla(xp).lu_factor(a), b, trans=trans)


def _plu(xp, a):
    P, L, U = _sla(xp).lu(a)
    return xp.concatenate([xp.ravel(P), xp.ravel(L), xp.ravel(U)])


def _scaled(xp, a, norm):
    """a scaled to the given 1-norm, matrix by matrix."""
    return a * (norm / xp.linalg.norm(a, 1, axis=(-2, -1), keepdims=True))


def _expm_at(xp, a, norm):
    return _sla(xp).expm(_scaled(xp, a, norm))


def _log_det_by_cholesky(xp, a):
    L = xp.linalg.cholesky(a)
    return 2.0 * xp.sum(xp.log(xp.diagonal(L)))


def _cho_solve(xp, a, b, lower):
    return _sla(xp).cho_solve(_sla(xp).cho_factor(_spd(xp, a), lower=lower), b)


def _gp_nll(xp, log_params, X, y):
    """A Gaussian process's negative log marginal likelihood (squared-exponential kernel), by Cholesky."""
    ell, sf, sn = xp.exp(0.3 * log_params[0]), xp.exp(0.3 * log_params[1]), xp.exp(0.3 * log_params[2] - 1.0)
    d2 = xp.sum((X[:, None, :] - X[None, :, :]) ** 2, axis=-1)
    K = sf**2 * xp.exp(-0.5 * d2 / ell**2) + (sn**2 + 1e-2) * xp.eye(len(y))
    L = xp.linalg.cholesky(K)
    alpha = _sla(xp).cho_solve((L, True), y)
    return 0.5 * y @ alpha + xp.sum(xp.log(xp.diag(L)))


def _stencil(xp, u):
    """A Laplacian written into a zero array: item assignment in NumPy, .at[].set in JAX."""
    if xp.zeros_like is np.zeros_like:  # NumPy's namespace (fasttape traces it)
        v = np.zeros_like(u)
        v[1:-1] = u[2:] - 2 * u[1:-1] + u[:-2]
        v[[0, 0]] = u[-1]  # a repeated index: the last write wins
        return v
    u = xp.asarray(u)
    return xp.zeros_like(u).at[1:-1].set(u[2:] - 2 * u[1:-1] + u[:-2]).at[0].set(u[-1])


_AT = np.array([0, 2, 2, 4, 0])


def _scatters(xp, x, w):
    """np.add.at and np.minimum.at (JAX: .at[].add / .min): repeated indices accumulate."""
    if xp.zeros_like is np.zeros_like:
        t, m = np.zeros_like(x), x.copy()
        np.add.at(t, _AT, w)
        np.minimum.at(m, _AT, w)
        return t + m
    x, w = xp.asarray(x), xp.asarray(w)
    return xp.zeros_like(x).at[_AT].add(w) + x.at[_AT].min(w)


def _running_max(xp, x):
    """np.maximum.accumulate (JAX: lax.cummax)."""
    if xp.zeros_like is np.zeros_like:
        return np.maximum.accumulate(x)
    import jax

    return jax.lax.cummax(xp.asarray(x))


def _is_numpy(xp) -> bool:
    """NumPy's namespace (which fasttape traces), not jax.numpy's."""
    return xp.zeros_like is np.zeros_like


def _scatter_at_argmax(xp, x, w):
    """Updates at computed indices: w added at each row's argmax (repeated columns accumulate), and written
    at the order of column 1; NumPy in place, JAX with .at[]."""
    cols, order = xp.argmax(x, axis=1), xp.argsort(x[:, 1])
    if _is_numpy(xp):
        t = np.zeros_like(w, shape=(4,))
        np.add.at(t, cols, w)
        y = x[0].copy()
        y[order] = w
        return t + y
    x, w = xp.asarray(x), xp.asarray(w)
    return xp.zeros(4).at[cols].add(w) + x[0].at[order].set(w)  # a permutation: no repeated index to set


def _rows_at_argmin(xp, d):
    """k-means' pattern: each row's smallest entry, picked by an index array computed from the input."""
    return d[xp.arange(d.shape[0]), xp.argmin(d, axis=1)] * 1.0


def _quantiles(xp, x):
    return xp.concatenate([xp.atleast_1d(xp.median(x)), xp.quantile(x, xp.asarray([0.1, 0.75])),
                           xp.percentile(x.reshape(3, 4), 40.0, axis=0)])  # fmt: skip


def _interp(xp, x, xp_, fp):
    return xp.interp(x, xp.sort(xp_), fp)


_MASK_3x4 = np.array([[True, False, True, True], [True, True, False, False], [True, False, False, True]])


def _c(name, fn, *shapes, domains=(), smooth=True, kinds=()):
    return Case(name, fn, tuple(shapes), tuple(domains), smooth, kinds=kinds)


# the compiled path that small cases never reach: fused regions (elementwise chains of 8 192 elements or
# more, replayed a tile at a time).  These cases skip the dense Jacobian and Hessian (9 000² entries);
# every other kind is checked.
PER_SWEEP_KINDS = tuple(k for k in KINDS if k not in ("jacobian", "hessian"))


def _scalar_steps(xp, x):
    """A loop over two scalars, as Python code over floats is written: every step is one-element adds,
    subtracts and multiplies, which the sweeps stream as the scalar code (``layout.scalar_code``)."""
    a, b = x[0], x[1]
    for _ in range(10):
        a, b = 0.5 * a - 0.2 * a * b + 0.1, 0.3 * a + 0.6 * b - 0.1 * b * b
    return a * b + a - b


def _scalar_pairs(xp, x):
    """Two loops like ``_scalar_steps``, over (x0, x1) and (x2, x3): a NaN or inf in one pair leaves
    the other pair's derivatives finite."""
    return _scalar_steps(xp, x[:2]) + 0.5 * _scalar_steps(xp, x[2:])


def _fused_chain(xp, x):
    return xp.sum(100.0 * (x[1:] - x[:-1] ** 2) ** 2 + (1.0 - x[:-1]) ** 2) + xp.sum(xp.tanh(x) * xp.exp(-x * x))


def _fused_binary(xp, x, y):
    return xp.sum(xp.log1p(x * x) * y - xp.sqrt(y * y + 1.0) * xp.sin(x))


STRUCTURAL_CASES = [
    # fused regions
    _c("fused-chain", _fused_chain, (9000,), kinds=PER_SWEEP_KINDS),
    _c("fused-binary", _fused_binary, (96, 96), (96, 96), kinds=PER_SWEEP_KINDS),
    # the scalar code
    _c("scalar-steps", _scalar_steps, (2,)),
    # NaN and inf through the fused regions and the scalar code (JAX run op by op)
    _c("fused-chain-nonfinite", _fused_chain, (9000,), domains=(NONFINITE,), smooth=False, kinds=PER_SWEEP_KINDS),
    _c(
        "fused-binary-nonfinite",
        _fused_binary,
        (96, 96),
        (96, 96),
        domains=(NONFINITE,) * 2,
        smooth=False,
        kinds=PER_SWEEP_KINDS,
    ),  # fmt: skip
    _c("scalar-pairs-nonfinite", _scalar_pairs, (4,), domains=(NONFINITE,), smooth=False),
    # size-0 axes: empty values, adjoints and tangents, broadcast against size-1 axes
    _c("empty-broadcast", lambda xp, x, y: xp.tanh(x) * y + x, (0, 3), (1, 3)),
    _c("empty-matmul", lambda xp, x, y: x @ y + 1.0, (2, 0), (0, 3)),
    _c(
        "empty-reductions",
        lambda xp, x: xp.sum(xp.sin(x), axis=1) + xp.prod(x, axis=1) + xp.max(x, axis=0).sum(),
        (3, 0),
    ),  # fmt: skip
    # select
    _c("where", lambda xp, x, y: xp.where(x > 0, x * y, xp.sin(y)), (3, 4), (3, 4)),
    _c("where-bcast", lambda xp, x, y: xp.where(x > 0.0, y, 2.0), (3, 1), (1, 4)),
    _c("where-const-cond", lambda xp, x: xp.where(np.arange(6) % 2 == 0, x, -x), (6,)),
    # scans
    _c("cumsum-flat", lambda xp, x: xp.cumsum(x), (3, 4)),
    _c("cumsum-axis0", lambda xp, x: xp.cumsum(x, axis=0), (3, 4)),
    _c("cumsum-axis1", lambda xp, x: xp.cumsum(x, axis=1), (2, 3, 4)),
    # broadcast
    _c("broadcast_to", lambda xp, x: xp.broadcast_to(x, (2, 3, 4)), (3, 1)),
    _c("broadcast-implicit", lambda xp, x, y: x * y + x, (2, 1, 4), (3, 1)),
    _c("broadcast-scalar-shape1", lambda xp, x, y: x * y, (1,), (2, 3)),
    # reshapes are views (no instruction); checked through their consumers
    _c("reshape", lambda xp, x: xp.sin(x.reshape(4, 3)) @ x, (3, 4)),
    _c("ravel-squeeze-expand", lambda xp, x: xp.expand_dims(xp.squeeze(x), 0).ravel() * 2.0, (1, 3, 1, 4)),
    # overlapping views of one input as operands of one instruction (adjoint initialisation)
    _c("overlap-shifted-small", lambda xp, x: x[:-1] * x[1:] + x[1:] * x[:-1], (7,)),
    _c("overlap-shifted-large", lambda xp, x: x[1:] * x[:-1] - x[:-1], (41,)),
    _c("overlap-scalar-view", lambda xp, x: x * x[0] + x[-1] * x, (5,)),
    _c("overlap-where", lambda xp, x: xp.where(x[:-1] > 0, x[1:], x[:-1]), (9,)),
    _c("overlap-unary-views", lambda xp, x: xp.sin(x[2:]) + xp.cos(x[:-2]), (40,)),
    # gathers
    _c("transpose", lambda xp, x: xp.transpose(x) * 1.0, (3, 4)),
    _c("transpose-axes", lambda xp, x: xp.transpose(x, (2, 0, 1)) * 1.0, (2, 3, 4)),
    _c("T", lambda xp, x: x.T * 1.0, (3, 4)),
    _c("swapaxes", lambda xp, x: xp.swapaxes(x, 0, 2) * 1.0, (2, 3, 4)),
    _c("moveaxis", lambda xp, x: xp.moveaxis(x, 0, -1) * 1.0, (2, 3, 4)),
    _c("slice-step", lambda xp, x: x[::2] * 1.0, (7,)),
    _c("slice-negative", lambda xp, x: x[-1:-6:-2, 1:] * 1.0, (6, 3)),
    _c("slice-contiguous", lambda xp, x: x[1:3] * 1.0, (5, 2)),
    _c("index-int", lambda xp, x: x[2] * 1.0, (4, 3)),
    _c("index-int-array", lambda xp, x: x[np.array([0, 2, 2, 1])] * 1.0, (4, 3)),
    _c("index-2d-arrays", lambda xp, x: x[np.array([0, 1, 3]), np.array([2, 0, 1])] * 1.0, (4, 3)),
    _c("index-bool-mask", lambda xp, x: x[np.array([True, False, True, True])] * 1.0, (4,)),
    _c("index-ellipsis-newaxis", lambda xp, x: x[..., None, 1] * 1.0, (2, 3, 4)),
    _c("concatenate", lambda xp, x, y: xp.concatenate([x, y, x], axis=0) * 1.0, (2, 3), (1, 3)),
    _c("concatenate-const", lambda xp, x: xp.concatenate([x, np.ones(2)]) * 1.0, (3,)),
    _c("stack", lambda xp, x, y: xp.stack([x, y], axis=1) * 1.0, (3, 2), (3, 2)),
    _c("hstack", lambda xp, x, y: xp.hstack([x, y]) * 1.0, (3,), (2,)),
    _c("vstack", lambda xp, x, y: xp.vstack([x, y]) * 1.0, (3,), (3,)),
    _c("flip", lambda xp, x: xp.flip(x, axis=1) * 1.0, (3, 4)),
    _c("tile", lambda xp, x: xp.tile(x, (2, 3)) * 1.0, (2, 2)),
    _c("repeat", lambda xp, x: xp.repeat(x, 3, axis=0) * 1.0, (2, 2)),
    _c("diag-of-matrix", lambda xp, x: xp.diag(x) * 1.0, (4, 4)),
    _c("diag-from-vector", lambda xp, x: xp.diag(x, 1) * 1.0, (3,)),
    _c("diagonal", lambda xp, x: xp.diagonal(x, 1) * 1.0, (3, 4)),
    _c("trace", lambda xp, x: xp.trace(x), (4, 4)),
    _c("roll", lambda xp, x: xp.roll(x, 2) * 1.0, (5,)),
    # linear algebra
    _c("matmul-2x2", lambda xp, x, y: x @ y, (3, 4), (4, 5)),
    _c("matmul-1x2", lambda xp, x, y: x @ y, (4,), (4, 5)),
    _c("matmul-2x1", lambda xp, x, y: xp.matmul(x, y), (3, 4), (4,)),
    _c("matmul-1x1", lambda xp, x, y: x @ y, (4,), (4,)),
    _c("matmul-batched", lambda xp, x, y: x @ y, (2, 3, 4), (2, 4, 5)),
    _c("matmul-batch-bcast", lambda xp, x, y: x @ y, (1, 3, 4), (2, 4, 2)),
    _c("matmul-batch-2d", lambda xp, x, y: x @ y, (2, 3, 4), (4, 2)),
    _c("matmul-large", lambda xp, x, y: x @ y, (40, 30), (30, 50)),
    _c("solve-vector", lambda xp, a, b: xp.linalg.solve(a, b), (4, 4), (4,), domains=("invertible", "real")),
    _c("solve-matrix", lambda xp, a, b: xp.linalg.solve(a, b), (3, 3), (3, 2), domains=("invertible", "real")),
    _c("solve-batched", lambda xp, a, b: xp.linalg.solve(a, b), (2, 3, 3), (2, 3, 2), domains=("invertible", "real")),
    _c("solve-batch-bcast", lambda xp, a, b: xp.linalg.solve(a, b), (2, 3, 3), (3, 1), domains=("invertible", "real")),
    _c(
        "solve-twice",
        lambda xp, a, b: xp.linalg.solve(a, xp.linalg.solve(a, b) * b),
        (3, 3),
        (3,),
        domains=("invertible", "real"),
    ),  # fmt: skip
    _c("inv", lambda xp, a: xp.linalg.inv(a), (3, 3), domains=("invertible",)),
    _c("inv-batched", lambda xp, a: xp.linalg.inv(a) @ a.sum(axis=0), (2, 3, 3), domains=("invertible",)),
    _c("slogdet", lambda xp, a: xp.linalg.slogdet(a)[1], (3, 3), domains=("invertible",)),
    _c("slogdet-batched", lambda xp, a: xp.linalg.slogdet(a)[1], (2, 4, 4), domains=("invertible",)),
    _c("slogdet-sign", lambda xp, a: xp.linalg.slogdet(a)[0] * xp.sum(a * a), (3, 3), domains=("invertible",)),
    _c("det", lambda xp, a: xp.linalg.det(a), (2, 3, 3), domains=("invertible",)),
    # a factor of a symmetric matrix built from the input (as users build one): NumPy reads one triangle, JAX
    # (and fasttape) factor ½ (A + Aᵀ), which agree there, so finite differences of NumPy's apply
    _c("cholesky", lambda xp, a: xp.linalg.cholesky(_spd(xp, a)), (4, 4)),
    _c("cholesky-batched", lambda xp, a: xp.linalg.cholesky(_spd(xp, a)), (2, 3, 3)),
    _c("cholesky-upper", lambda xp, a: xp.linalg.cholesky(_spd(xp, a), upper=True), (3, 3)),
    _c("cholesky-logdet", lambda xp, a: _log_det_by_cholesky(xp, _spd(xp, a)), (3, 3)),
    _c("scipy-cholesky", lambda xp, a: _sla(xp).cholesky(_spd(xp, a)), (3, 3)),
    _c("scipy-cholesky-lower", lambda xp, a: _sla(xp).cholesky(_spd(xp, a), lower=True), (3, 3)),
    _c("cho-solve", lambda xp, a, b: _cho_solve(xp, a, b, True), (3, 3), (3,)),
    _c("cho-solve-upper", lambda xp, a, b: _cho_solve(xp, a, b, False), (3, 3), (3, 2)),
    _c("solve-pos", lambda xp, a, b: _sla(xp).solve(_spd(xp, a), b, assume_a="pos"), (3, 3), (3, 2)),
    _c(
        "solve-triangular",
        lambda xp, a, b: _sla(xp).solve_triangular(a, b, lower=True),
        (4, 4),
        (4,),
        domains=("invertible", "real"),
    ),  # fmt: skip
    _c(
        "solve-triangular-upper-t",
        lambda xp, a, b: _sla(xp).solve_triangular(a, b, trans="T"),
        (3, 3),
        (3, 2),
        domains=("invertible", "real"),
    ),  # fmt: skip
    _c(
        "solve-triangular-unit",
        lambda xp, a, b: _sla(xp).solve_triangular(a, b, trans=1, lower=True, unit_diagonal=True),
        (2, 3, 3),
        (2, 3, 2),
        domains=("invertible", "real"),
    ),  # fmt: skip
    # eigenvalues and eigenvectors of a symmetric matrix built from the input (NumPy reads one triangle, JAX
    # and fasttape symmetrize): eigenvalues apart, so the derivatives are well conditioned
    _c("eigh", lambda xp, a: _eigh_both(xp, xp.linalg.eigh(_sym(xp, a))), (4, 4), domains=("separated_spectrum",)),
    _c(
        "eigh-batched",
        lambda xp, a: _eigh_both(xp, xp.linalg.eigh(_sym(xp, a))),
        (2, 3, 3),
        domains=("separated_spectrum",),
    ),  # fmt: skip
    _c("eigvalsh", lambda xp, a: xp.linalg.eigvalsh(_sym(xp, a)), (3, 3), domains=("separated_spectrum",)),
    _c("eigh-matrix-exp", lambda xp, a: _matrix_exp(xp, _sym(xp, a)), (3, 3), domains=("separated_spectrum",)),
    _c(
        "scipy-eigh-upper",
        lambda xp, a: _eigh_squared(xp, _sla(xp).eigh(_sym(xp, a), lower=False)),
        (3, 3),
        domains=("separated_spectrum",),
    ),  # fmt: skip
    # singular values and vectors, QR (square, tall, wide): inputs with singular values apart
    _c("svd", lambda xp, a: _svd_all(xp, a), (4, 4), domains=("separated_singular",)),
    _c("svd-tall", lambda xp, a: _svd_all(xp, a), (5, 3), domains=("separated_singular",)),
    _c("svd-wide-batched", lambda xp, a: _svd_all(xp, a), (2, 2, 4), domains=("separated_singular",)),
    _c("svdvals", lambda xp, a: xp.linalg.svd(a, compute_uv=False), (3, 5), domains=("separated_singular",)),
    _c("scipy-svd", lambda xp, a: _scipy_svd(xp, a), (4, 3), domains=("separated_singular",)),
    _c("norm-spectral", lambda xp, a: _spectral_norms(xp, a), (4, 3), domains=("separated_singular",)),
    _c("cond", lambda xp, a: xp.linalg.cond(a), (2, 3, 3), domains=("separated_singular",)),
    _c("pinv", lambda xp, a: xp.linalg.pinv(a), (4, 3), domains=("separated_singular",)),
    _c(
        "lstsq", lambda xp, a, b: _lstsq_and_residuals(xp, a, b), (5, 3), (5, 2), domains=("separated_singular", "real")
    ),  # fmt: skip
    _c("qr", lambda xp, a: _qr_all(xp, a), (4, 4), domains=("separated_singular",)),
    _c("qr-tall", lambda xp, a: _qr_all(xp, a), (5, 3), domains=("separated_singular",)),
    _c("qr-wide-batched", lambda xp, a: _qr_all(xp, a), (2, 3, 5), domains=("separated_singular",)),
    _c("qr-r", lambda xp, a: xp.linalg.qr(a, mode="r"), (4, 2), domains=("separated_singular",)),
    _c("qr-complete", lambda xp, a: _qr_all(xp, a, "complete"), (5, 3), domains=("separated_singular",)),
    _c("qr-complete-batched", lambda xp, a: _qr_all(xp, a, "complete"), (2, 4, 2), domains=("separated_singular",)),
    # LU with partial pivoting: the pivots are read during the sweep (lu_solve's interchanges, lu's P)
    _c("lu-factor", lambda xp, a: _lu_factor_both(xp, a), (4, 4), domains=("invertible",)),
    _c("lu-factor-batched", lambda xp, a: _lu_factor_both(xp, a), (2, 3, 3), domains=("invertible",)),
    _c("lu-solve", lambda xp, a, b: _lu_solves(xp, a, b, 0), (4, 4), (4,), domains=("invertible", "real")),
    _c("lu-solve-transposed", lambda xp, a, b: _lu_solves(xp, a, b, 1), (3, 3), (3, 2), domains=("invertible", "real")),
    _c(
        "lu-solve-batched",
        lambda xp, a, b: _lu_solves(xp, a, b, 0),
        (2, 3, 3),
        (2, 3, 2),
        domains=("invertible", "real"),
    ),  # fmt: skip
    _c("scipy-lu", lambda xp, a: _plu(xp, a), (4, 4), domains=("invertible",)),
    # the matrix exponential (scaling and squaring): each case scales its matrices to one 1-norm, so every
    # draw takes the same Padé degree and number of squarings (the guards' branch): 3, 5, 7, 9, 13, 13 + 3
    *[
        _c(f"expm-{label}", lambda xp, a, norm=norm: _expm_at(xp, a, norm), shape)
        for label, norm, shape in (
            ("degree-3", 0.01, (3, 3)),
            ("degree-5", 0.2, (3, 3)),
            ("degree-7", 0.6, (3, 3)),
            ("degree-9", 1.5, (3, 3)),
            ("degree-13", 4.0, (3, 3)),
            ("squarings", 30.0, (3, 3)),
            ("batched", 1.0, (2, 3, 3)),
        )
    ],  # fmt: skip
    _c(
        "expm-frechet",
        lambda xp, a, e: _sla(xp).expm_frechet(_scaled(xp, a, 0.05), _scaled(xp, e, 0.05), compute_expm=False),
        (3, 3),
        (3, 3),
    ),  # fmt: skip
    _c("gp-nll", lambda xp, p, X, y: _gp_nll(xp, p, X, y), (3,), (6, 2), (6,)),
    _c("matrix-power", lambda xp, a: xp.linalg.matrix_power(a, 5), (2, 3, 3)),
    _c("matrix-power-inverse", lambda xp, a: xp.linalg.matrix_power(a, -2), (3, 3), domains=("invertible",)),
    _c("multi-dot", lambda xp, x, a, b, y: xp.linalg.multi_dot([x, a, b, y]), (4,), (4, 6), (6, 2), (2,)),
    _c("dot", lambda xp, x, y: xp.dot(x, y), (3, 4), (4, 2)),
    _c("dot-nd", lambda xp, x, y: xp.dot(x, y), (2, 3), (2, 3, 2)),
    _c("dot-scalar", lambda xp, x, y: xp.dot(x, y), (), (3,)),
    _c("vdot", lambda xp, x, y: xp.vdot(x, y), (2, 3), (2, 3)),
    _c("inner", lambda xp, x, y: xp.inner(x, y), (2, 3), (4, 3)),
    _c("outer", lambda xp, x, y: xp.outer(x, y), (3,), (4,)),
    _c("norm", lambda xp, x: xp.linalg.norm(x), (3, 4)),
    _c("norm-axis", lambda xp, x: xp.linalg.norm(x, axis=1), (3, 4)),
    _c("norm-ord1", lambda xp, x: xp.linalg.norm(x, ord=1), (5,), domains=("nonzero",)),
    _c("norm-inf", lambda xp, x: xp.linalg.norm(x, ord=np.inf), (5,), domains=("distinct",)),
    _c("norm-fro", lambda xp, x: xp.linalg.norm(x, ord="fro"), (3, 4)),
    _c("norm-p3", lambda xp, x: xp.linalg.norm(x, ord=3, axis=0), (3, 4), domains=("nonzero",)),
    _c("norm-matrix-1", lambda xp, x: xp.linalg.norm(x, ord=1), (3, 4), domains=("distinct",)),
    # einsum, tensordot and kron, lowered onto diagonals, sums, broadcast products and batched matmul
    _c("einsum-matvec", lambda xp, a, x: xp.einsum("ij,j->i", a, x), (3, 4), (4,)),
    _c("einsum-batched", lambda xp, a, b: xp.einsum("bij,bkj->bik", a, b), (2, 3, 4), (2, 5, 4)),
    _c("einsum-diagonal", lambda xp, a, b: xp.einsum("iij,jk->ik", a, b), (3, 3, 4), (4, 2)),
    _c("einsum-ellipsis", lambda xp, a, b: xp.einsum("...i,...i->...", a, b), (2, 1, 4), (3, 4)),
    _c("einsum-three", lambda xp, a, b, c: xp.einsum("ab,cd,bd->ac", a, b, c), (2, 3), (4, 5), (3, 5)),
    _c("einsum-implicit", lambda xp, a: xp.einsum("ii", a) + xp.einsum("ij", a).sum(), (3, 3)),
    _c("tensordot", lambda xp, a, b: xp.tensordot(a, b, axes=([1, 2], [0, 1])), (2, 3, 4), (3, 4)),
    _c("kron", lambda xp, a, b: xp.kron(a, b), (2, 3), (3, 2)),
    # array-building functions: slices, gathers, a Toeplitz product, Horner's rule
    _c("diff", lambda xp, x: xp.diff(x, n=2, axis=0), (4, 3)),
    _c("diff-ends", lambda xp, x: xp.diff(x, prepend=0.5, append=x[:1]), (5,)),
    _c("pad-constant", lambda xp, x: xp.pad(x, ((1, 2), (0, 1)), constant_values=1.5), (2, 3)),
    _c("pad-reflect", lambda xp, x: xp.pad(x, (2, 3), mode="reflect"), (5,)),
    _c("pad-edge-wrap", lambda xp, x: xp.pad(x, 1, mode="edge") + xp.pad(x, 1, mode="wrap"), (2, 3)),
    _c("convolve", lambda xp, a, v: xp.convolve(a, v), (6,), (3,)),
    _c("convolve-same", lambda xp, a, v: xp.convolve(a, v, "same"), (3,), (5,)),
    _c("correlate-valid", lambda xp, a, v: xp.correlate(a, v), (6,), (3,)),
    _c("polyval", lambda xp, p, x: xp.polyval(p, x), (4,), (5,)),
    _c("linspace", lambda xp, x: xp.linspace(x[0], x[1:3], 5, axis=-1), (3,)),
    _c("cumprod", lambda xp, x: xp.cumprod(x, axis=1), (2, 6)),
    _c("cummax", lambda xp, x: _running_max(xp, x), (7,), domains=("distinct",)),
    # item assignment and scatter updates
    _c("setitem-stencil", lambda xp, u: _stencil(xp, u), (6,)),
    _c("scatter-add-min", lambda xp, x, w: _scatters(xp, x, w), (5,), (5,), domains=("distinct", "distinct")),
    # indices computed in the sweep: sorting, argmax / argmin, take, scatters at computed positions
    _c("take-argsort-rows", lambda xp, x: x[xp.argsort(x[:, 0])] * 1.0, (4, 3), domains=("distinct",)),
    _c("take-axis-argmax", lambda xp, x: xp.take(x, xp.argmax(x, axis=0), axis=1), (3, 4), domains=("distinct",)),
    _c("take-rows-argmin", lambda xp, d: _rows_at_argmin(xp, d), (5, 3), domains=("distinct",)),
    _c(
        "take-two-keys",
        lambda xp, x: x[xp.argmax(x[:, :3], axis=1), xp.argmin(x[:2], axis=0)[:3]] * 1.0,
        (3, 4),
        domains=("distinct",),
    ),  # fmt: skip
    _c("sort", lambda xp, x: xp.sort(x, axis=0), (3, 4), domains=("distinct",)),
    _c("sort-flat-top-k", lambda xp, x: xp.sort(x, axis=None)[-3:] * 1.0, (2, 3), domains=("distinct",)),
    _c("argsort", lambda xp, x: x * xp.argsort(x, axis=-1), (3, 4), domains=("distinct",)),
    _c("argmax", lambda xp, x: x * xp.argmax(x, axis=1, keepdims=True), (3, 4), domains=("distinct",)),
    _c("argmin", lambda xp, x: x * xp.argmin(x), (3, 4), domains=("distinct",)),
    _c("scatter-at-argmax", lambda xp, x, w: _scatter_at_argmax(xp, x, w), (3, 4), (3,), domains=("distinct", "real")),
    _c("quantiles", lambda xp, x: _quantiles(xp, x), (12,), domains=("distinct",)),
    _c(
        "searchsorted-interp",
        lambda xp, x, p, f: _interp(xp, x, p, f),
        (7,),
        (5,),
        (5,),
        domains=("real", "distinct", "real"),
    ),  # fmt: skip
    # masked reductions (where=, initial=)
    _c("sum-where", lambda xp, x: xp.sum(x, axis=1, where=_MASK_3x4, initial=0.5), (3, 4)),
    _c("max-where", lambda xp, x: xp.max(x, axis=0, where=_MASK_3x4, initial=-0.25), (3, 4), domains=("distinct",)),
    _c("mean-var-where", lambda xp, x: xp.mean(x, 1, where=_MASK_3x4) + xp.var(x, 1, where=_MASK_3x4), (3, 4)),
    # lowered reductions and elementwise helpers
    _c("mean", lambda xp, x: xp.mean(x, axis=0), (3, 4)),
    _c("var", lambda xp, x: xp.var(x, axis=1, ddof=1), (3, 4)),
    _c("std", lambda xp, x: xp.std(x), (3, 4)),
    _c("clip", lambda xp, x: xp.clip(x, -0.5, 0.5), (10,)),
    _c("softmax", lambda xp, x: xp.exp(x - xp.logsumexp(x, axis=-1, keepdims=True)), (3, 4)),
    _c("square-via-power", lambda xp, x: x**2, (5,)),
    _c("power-const-exponent", lambda xp, x: x**3.5, (5,), domains=("positive",)),
]


_ALL_CASES = generated_cases() + STRUCTURAL_CASES
PRIMITIVE_CASES = _ALL_CASES + [edge for prim in PRIMITIVES for edge in _edge_cases(prim, _ALL_CASES)]
# one case per primitive (its first), for the unit tests; the oracle's profiles run every case
FIRST_CASES = list({id(c): c for c in (first_case(p, _ALL_CASES) for p in PRIMITIVES)}.values())
