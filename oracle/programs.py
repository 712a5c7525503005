"""Random straight-line programs over fasttape's primitive table, checked by the oracle.

A :class:`Program` is a list of :class:`Step` ``(op, operands, params)`` over a
growing list of values that starts with the inputs ``x0, x1, ...``; step ``k``
defines value ``v{n_inputs + k}``.  Every value no later step consumes (a sink)
is summed into the scalar output, so every derivative kind applies.

The program renders as Python source written against a namespace ``xp``
(:meth:`Program.source`); :meth:`Program.callable` is that very source,
executed, so fasttape traces the NumPy version while JAX runs the same program
under ``jax.numpy``.  :meth:`Program.snippet` is a runnable reproducer with the
concrete inputs embedded.

:func:`programs` is a hypothesis strategy drawing well-defined programs: unary
operands are first mapped into the primitive's smooth domain, binary operands
are broadcast-compatible, ``where`` conditions come from comparisons; the steps also
sort, pick by argmax, take the rows an argsort ranks and scatter-add at those ranks
(indices computed in the sweep; stable sorts, as NumPy's finite differences must order
ties as fasttape and JAX do), and call NumPy functions lowered onto the primitives
(einsum, diff, pad, cumprod, median).  One program in four has *tied* inputs (a few
values, repeated, no jitter), so ties reach max/min, maximum/minimum and the comparisons
through the steps; those are checked against JAX alone (``Program.smooth`` is False: no
finite differences at a kink).  One program in eight has NaN and ±inf among its inputs, checked against JAX run op by op
(``Program.nonfinite``: ``check(eager=True)``).
:func:`search` looks for a program whose :func:`oracle.check` fails and returns
it shrunk.

Primitives of the table not reachable through plain ``numpy`` (the
``scipy.special`` ones such as ``erf`` and ``gammaln``, and ``logsumexp``) are not
drawn: the programs' source runs under ``numpy`` and ``jax.numpy`` alone.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass, field

import numpy as np
from hypothesis import HealthCheck, Phase, assume, find, settings
from hypothesis import strategies as st
from hypothesis.errors import NoSuchExample

from fasttape import PRIMITIVES

from .cases import NONFINITE_VALUES, TIED
from .check import KINDS, Report, check

SHAPES = ((), (3,), (2, 3), (1, 3), (2, 1), (2, 2))
MAX_SIZE = 24  # elements of any intermediate value
MAX_NDIM = 3
MAX_ABS = 1e6  # larger intermediate values make finite differences meaningless: such programs are skipped
FD_RTOL = 1e-4  # finite differences on random programs are noisier than on single primitives

UNARY = tuple(p for p in PRIMITIVES if p.kind == "unary" and p.numpy)
# remainder and floor_divide jump wherever x / y is an integer: no smooth map of two free operands avoids
# that, so they are checked by their own cases (their operands drawn on "off_multiples" and "divisors")
_JUMPING = ("remainder", "floor_divide")
BINARY = tuple(p for p in PRIMITIVES if p.kind == "binary" and p.numpy and p.name not in _JUMPING and not p.static)
COMPARISONS = tuple(p.numpy[0] for p in PRIMITIVES if p.kind == "comparison")
REDUCTIONS = tuple(p.numpy[0] for p in PRIMITIVES if p.kind == "reduction" and p.numpy)
# the unbounded unary primitives (and power's exponent) get an operand in [-2, 2] so that chains stay finite
_GROWING = {"exp", "exp2", "expm1", "sinh", "cosh"}


# -- domain transforms ---------------------------------------------------------
def _domain_expr(domain: str, v: str, params: dict) -> str:
    """Source of a smooth map of ``v`` into ``domain`` (identity for real numbers)."""
    sign = "-" if params.get("neg") else ""
    if domain == "real":
        return v
    if domain == "real_small":
        return f"2.0 * xp.tanh({v})"
    if domain == "positive":
        return f"(1.5 + xp.tanh({v}))"
    if domain == "nonzero":
        return f"{sign}(1.5 + xp.tanh({v}))"
    if domain == "unit":
        return f"0.9 * xp.tanh({v})"
    if domain == "above_one":
        return f"(2.2 + xp.tanh({v}))"
    if domain == "off_integers":  # floor/ceil are constant on (k + 0.1, k + 0.9)
        return f"({params.get('k', 0)}.5 + 0.4 * xp.tanh({v}))"
    if domain == "off_half_integers":  # round is constant on (k - 0.4, k + 0.4)
        return f"({params.get('k', 0)}.0 + 0.4 * xp.tanh({v}))"
    if domain == "distinct":  # ties are avoided by the inputs, not by a transform
        return v
    raise ValueError(domain)


# -- steps and programs ----------------------------------------------------------
@dataclass(frozen=True)
class Step:
    """``op``: a primitive or NumPy function name (or "where", "gather"); ``args``: value indices."""

    op: str
    args: tuple[int, ...]
    params: tuple = ()  # sorted (key, value) pairs, hashable

    @property
    def p(self) -> dict:
        return dict(self.params)

    def expression(self, names: list[str]) -> str:
        a = [names[i] for i in self.args]
        p = self.p
        op = self.op
        if op in _UNARY_BY_NAME:
            prim = _UNARY_BY_NAME[op]
            domain = prim.domain
            if op in _GROWING:
                domain = "real_small"
            return f"xp.{op}({_domain_expr(domain, a[0], p)})"
        if op in _BINARY_BY_NAME:
            d0, d1 = _BINARY_BY_NAME[op].domains  # the declaration's domains
            if op == "power":
                d1 = "real_small"
            x = _domain_expr(d0, a[0], {"neg": p.get("neg0", False)})
            y = _domain_expr(d1, a[1], {"neg": p.get("neg1", False)})
            return f"xp.{op}({x}, {y})"
        if op == "where":
            return f"xp.where(xp.{p['cmp']}({a[0]}, {a[1]}), {a[2]}, {a[3]})"
        if op in REDUCTIONS:
            x = a[0]
            if op == "prod":  # keep products of up to 24 factors tame
                x = f"(1.0 + 0.5 * xp.tanh({x}))"
            return f"xp.{op}({x}, axis={p['axis']!r}, keepdims={p['keepdims']!r})"
        if op == "cumsum":
            return f"xp.cumsum({a[0]}, axis={p['axis']!r})"
        if op == "broadcast_to":
            return f"xp.broadcast_to({a[0]}, {p['shape']!r})"
        if op == "transpose":
            return f"xp.transpose({a[0]})"
        if op == "flip":
            return f"xp.flip({a[0]}, axis={p['axis']!r})"
        if op == "getitem":
            return f"{a[0]}[{p['index']}]"
        if op == "reshape":
            return f"xp.reshape({a[0]}, {p['shape']!r})"
        if op == "concatenate":
            return f"xp.concatenate([{', '.join(a)}], axis={p['axis']!r})"
        if op == "stack":
            return f"xp.stack([{', '.join(a)}], axis={p['axis']!r})"
        if op in ("matmul", "dot"):
            y = f"xp.transpose({a[1]})" if p.get("transpose") else a[1]
            return f"xp.{op}({a[0]}, {y})"
        if op in LINALG_STEPS:
            return _linalg_expr(op, a[0], p)
        if op in INDEXING_STEPS:
            return _indexing_expr(op, a[0], p)
        if op in FUNCTION_STEPS:
            return _function_expr(op, a[0], p)
        raise ValueError(op)

    def primitives(self) -> set[str]:
        """Names of the functions this step calls (table primitives and NumPy functions)."""
        names = {self.op}
        p = self.p
        if "cmp" in p:
            names.add(p["cmp"])
        text = self.expression([f"v{i}" for i in range(max(self.args, default=0) + 1)])
        names.update(_called(text))
        names.discard("getitem")
        return names


def _called(text: str) -> set[str]:
    out = set()
    for part in text.split("xp.")[1:]:
        out.add(part.split("(", 1)[0])
    return out


_UNARY_BY_NAME = {p.numpy[0]: p for p in UNARY}
_BINARY_BY_NAME = {p.numpy[0]: p for p in BINARY}


@dataclass(frozen=True)
class Program:
    """Inputs (float64 arrays) and steps; value ``i`` is ``x{i}`` for inputs, ``v{i}`` after."""

    inputs: tuple = field(default_factory=tuple)
    steps: tuple = field(default_factory=tuple)
    smooth: bool = True  # False: tied or non-finite inputs, checked against JAX without finite differences
    nonfinite: bool = False  # NaN and ±inf among the inputs: checked against JAX run op by op

    @property
    def names(self) -> list[str]:
        n = len(self.inputs)
        return [f"x{i}" for i in range(n)] + [f"v{n + k}" for k in range(len(self.steps))]

    def sinks(self) -> list[int]:
        used = {i for s in self.steps for i in s.args}
        return [i for i in range(len(self.inputs) + len(self.steps)) if i not in used]

    def source(self, name: str = "f") -> str:
        names = self.names
        n = len(self.inputs)
        lines = [f"def {name}(xp, {', '.join(names[:n])}):"]
        for k, s in enumerate(self.steps):
            lines.append(f"    {names[n + k]} = {s.expression(names)}")
        total = " + ".join(f"xp.sum({names[i]})" for i in self.sinks())
        lines.append(f"    return {total}")
        return "\n".join(lines) + "\n"

    @functools.cached_property
    def callable(self):
        """``f(xp, *inputs)``: the source, executed."""
        scope = {"np": np, "scatter_add": scatter_add}
        exec(compile(self.source(), "<oracle.programs>", "exec"), scope)  # noqa: S102
        return scope["f"]

    def primitives(self) -> list[str]:
        names = set()
        for s in self.steps:
            names |= s.primitives()
        return sorted(names | {"sum"})

    def snippet(self, fd_rtol: float = FD_RTOL) -> str:
        with np.printoptions(precision=17, floatmode="unique", threshold=10**6):
            args = ", ".join(f"np.array({_literal(x)})" for x in self.inputs)
        helper = "from oracle.programs import scatter_add\n" if any(s.op == "scatter_add" for s in self.steps) else ""
        return (
            "import numpy as np, oracle\n"
            + helper
            + self.source()
            + f"print(oracle.check(f, {args}, namespace=True, fd_rtol={fd_rtol!r}, fd={self.smooth}, "
            + ("eager=True, exact_nonfinite=False))\n" if self.nonfinite else "eager=False))\n")
        )

    def __call__(self, xp=np):
        return self.callable(xp, *self.inputs)

    def __str__(self):
        return self.snippet()


# -- hypothesis strategies -------------------------------------------------------
def _size(shape) -> int:
    return int(np.prod(shape, dtype=int))


def _ok(shape) -> bool:
    return len(shape) <= MAX_NDIM and _size(shape) <= MAX_SIZE


def _bcast(*shapes):
    try:
        return np.broadcast_shapes(*shapes)
    except ValueError:
        return None


def _jitter(shape, offset):
    """Distinct tiny offsets: no two input elements are equal, so no ties reach max/min/comparisons."""
    k = np.arange(_size(shape), dtype=float) + offset
    return (0.0137 * ((k * 0.6180339887498949) % 1.0) + 1e-3 * (k + 1)).reshape(shape)


def _literal(x) -> str:
    """``x`` as a Python list literal that names NaN and inf through NumPy."""
    return repr(np.asarray(x).tolist()).replace("nan", "np.nan").replace("inf", "np.inf")


@st.composite
def _inputs(draw, min_inputs=1, max_inputs=3, tied=False, nonfinite=False):
    """1-3 input arrays: jittered floats (no two equal), or values from ``TIED`` repeated, or (with
    ``nonfinite``) jittered floats with one in eight elements, and at least one, NaN, +inf or -inf."""
    n = draw(st.integers(min_inputs, max_inputs))
    out = []
    offset = 0
    for _ in range(n):
        shape = draw(st.sampled_from(SHAPES))
        size = _size(shape)
        elements = st.sampled_from(TIED) if tied else st.floats(-2.0, 2.0, allow_nan=False, width=64)
        values = np.asarray(draw(st.lists(elements, min_size=size, max_size=size)), dtype=np.float64)
        out.append(values.reshape(shape) if tied else values.reshape(shape) + _jitter(shape, offset))
        offset += size
    if nonfinite:
        rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
        for k, x in enumerate(out):
            flat = np.array(x, dtype=np.float64).reshape(-1)  # (a shape-() input is a NumPy scalar)
            chosen = rng.uniform(size=flat.size) < 0.125
            chosen[rng.integers(flat.size)] |= k == 0  # the first input has one at least
            flat[chosen] = rng.choice(NONFINITE_VALUES, size=int(chosen.sum()))
            out[k] = flat.reshape(np.shape(x))[()] if np.ndim(x) == 0 else flat.reshape(np.shape(x))
    return out


def _params(**kw) -> tuple:
    return tuple(sorted(kw.items()))


KINDS_OF_STEP = ("unary", "binary", "where", "reduction", "cumsum", "broadcast", "gather", "matmul", "linalg",
                 "indexing", "function")  # fmt: skip
# NumPy functions lowered onto the primitives: einsum (a contraction with the value reversed along its last
# axis), diff, pad (every mode), cumprod of a tame value, median (a sort and two picks)
FUNCTION_STEPS = ("einsum", "diff", "pad", "cumprod", "median")
# indices computed in the sweep: a sort along an axis, each slice's largest element picked by argmax, the rows
# of the largest elements (argsort, then integer arithmetic), a scatter-add at computed positions
INDEXING_STEPS = ("sort", "argmax_pick", "argsort_rows", "scatter_add")
# numpy.linalg on a matrix value, mapped smoothly to where each is differentiable and well conditioned:
# n I + tanh(V) / 2 is invertible (singular values of at least n / 2), T Tᵀ / n + I positive definite,
# diag(1, ..., n) + (T + Tᵀ) / 50 keeps its eigenvalues apart, and D + tanh(V) / 20, with D diagonal
# (m, m - 1, ...), its singular values (for the sizes MAX_SIZE allows)
SQUARE_STEPS = ("solve", "inv", "slogdet", "cholesky", "eigvalsh")
LINALG_STEPS = SQUARE_STEPS + ("svdvals", "qr", "norm")


def _linalg_expr(op: str, v: str, p: dict) -> str:
    n, m = p["n"], p["m"]
    t = f"xp.tanh({v})"
    invertible = f"{n}.0 * xp.eye({n}) + 0.5 * {t}"
    separated = f"xp.eye({n}, {m}) * xp.arange({m}.0, 0.0, -1.0) + 0.05 * {t}"
    return {
        "solve": f"xp.linalg.solve({invertible}, {t})",
        "inv": f"xp.linalg.inv({invertible})",
        "slogdet": f"xp.linalg.slogdet({invertible})[1]",
        "cholesky": f"xp.linalg.cholesky({t} @ xp.transpose({t}) / {n} + xp.eye({n}))",
        "eigvalsh": f"xp.linalg.eigvalsh(xp.diag(xp.arange(1.0, {n + 1}.0)) + 0.02 * ({t} + xp.transpose({t})))",
        "svdvals": f"xp.linalg.svd({separated}, compute_uv=False)",
        "qr": f"xp.linalg.qr({separated})[1]",
        "norm": f"xp.linalg.norm({separated}, {p.get('ord')!r})",
    }[op]


def _indexing_expr(op: str, v: str, p: dict) -> str:
    if op == "sort":
        return f"xp.sort({v}, axis={p['axis']!r})"
    if op == "argmax_pick":
        return f"xp.take_along_axis({v}, xp.argmax({v}, axis={p['axis']}, keepdims=True), axis={p['axis']})"
    if op == "argsort_rows":  # the rows of the last elements in sorted order (ranks reduced modulo the rows)
        return f"xp.take({v}, xp.argsort(xp.ravel({v}), stable=True)[-{p['k']}:] % {p['rows']}, axis=0)"
    # scatter_add: every element added at its rank modulo k (repeated positions accumulate); stable sorts,
    # as NumPy's finite differences must order ties (a broadcast's copies) as fasttape and JAX do
    return f"scatter_add(xp.ravel({v}), xp.argsort(xp.ravel({v}), stable=True) % {p['k']}, xp.ravel({v}))"


def scatter_add(x, index, values):
    """``x.at[index].add(values)`` (JAX, fasttape's tracers), ``np.add.at`` on a copy for a plain array."""
    if hasattr(x, "at"):
        return x.at[index].add(values)
    out = np.array(x, dtype=np.float64)
    np.add.at(out, index, values)
    return out


def _function_expr(op: str, v: str, p: dict) -> str:
    if op == "einsum":
        return f"xp.einsum({p['subscripts']!r}, {v}, xp.flip({v}, axis=-1))"
    if op == "diff":
        return f"xp.diff({v}, axis={p['axis']})"
    if op == "pad":
        return f"xp.pad({v}, 1, mode={p['mode']!r})"
    if op == "cumprod":
        return f"xp.cumprod(1.0 + 0.5 * xp.tanh({v}), axis={p['axis']})"
    return f"xp.median({v}, axis={p['axis']})"


def _linalg_shape(op: str, n: int, m: int) -> tuple:
    k = min(n, m)
    return {"solve": (n, n), "inv": (n, n), "slogdet": (), "cholesky": (n, n), "eigvalsh": (n,), "svdvals": (k,),
            "qr": (k, m), "norm": ()}[op]  # fmt: skip


@st.composite
def _step(draw, shapes: list):
    """One step over values with ``shapes``; returns (Step, output shape)."""
    n = len(shapes)
    kind = draw(st.sampled_from(KINDS_OF_STEP))
    i = draw(st.integers(0, n - 1))
    shape = shapes[i]
    ndim = len(shape)

    def compatible(base):
        return [j for j in range(n) if (b := _bcast(base, shapes[j])) is not None and _ok(b)]

    if kind == "binary":
        prim = draw(st.sampled_from(BINARY))
        j = draw(st.sampled_from(compatible(shape)))
        params = _params(neg0=draw(st.booleans()), neg1=draw(st.booleans()))
        return Step(prim.numpy[0], (i, j), params), _bcast(shape, shapes[j])
    if kind == "where":
        j = draw(st.sampled_from(compatible(shape)))
        cond = _bcast(shape, shapes[j])
        a = draw(st.sampled_from(compatible(cond)))
        out = _bcast(cond, shapes[a])
        b = draw(st.sampled_from(compatible(out)))
        out = _bcast(out, shapes[b])
        return Step("where", (i, j, a, b), _params(cmp=draw(st.sampled_from(COMPARISONS)))), out
    if kind == "reduction" and ndim > 0:
        op = draw(st.sampled_from(REDUCTIONS))
        axes = draw(st.sampled_from([None, *range(-ndim, ndim), *([(0, ndim - 1)] if ndim > 1 else [])]))
        keepdims = draw(st.booleans())
        out = np.sum(np.zeros(shape), axis=axes, keepdims=keepdims).shape
        return Step(op, (i,), _params(axis=axes, keepdims=keepdims)), out
    if kind == "cumsum" and ndim > 0:
        axis = draw(st.sampled_from([None, *range(ndim)]))
        out = np.cumsum(np.zeros(shape), axis=axis).shape
        return Step("cumsum", (i,), _params(axis=axis)), out
    if kind == "broadcast":
        targets = sorted({b for s in SHAPES if (b := _bcast(shape, s)) is not None and _ok(b) and b != shape})
        if targets:
            target = draw(st.sampled_from(targets))
            return Step("broadcast_to", (i,), _params(shape=target)), target
    if kind == "gather" and ndim > 0:
        options = ["transpose", "flip", "getitem", "reshape"]
        same = [j for j in range(n) if len(shapes[j]) == ndim]
        if _size(shape) * 2 <= MAX_SIZE:
            options += ["concatenate", "stack"] if ndim < MAX_NDIM else ["concatenate"]
        op = draw(st.sampled_from(options))
        if op == "transpose":
            return Step(op, (i,)), shape[::-1]
        if op == "flip":
            axis = draw(st.integers(0, ndim - 1))
            return Step(op, (i,), _params(axis=axis)), shape
        if op == "reshape":
            target = draw(st.sampled_from([(-1,), (_size(shape), 1), (1, _size(shape))]))
            return Step(op, (i,), _params(shape=target)), np.zeros(shape).reshape(target).shape
        if op == "getitem":
            index = draw(st.sampled_from(["0", "-1", "::-1", "1:", ":-1", "::2", "..., 0", "None"]))
            out = eval(f"np.zeros({shape!r})[{index}]").shape  # noqa: S307
            if _size(out) > 0:
                return Step(op, (i,), _params(index=index)), out
        if op == "concatenate":
            axis = draw(st.integers(0, ndim - 1))
            partners = [
                j for j in same if all(shapes[j][d] == shape[d] for d in range(ndim) if d != axis)
            ]  # always contains i
            j = draw(st.sampled_from(partners))
            out = np.concatenate([np.zeros(shape), np.zeros(shapes[j])], axis=axis).shape
            if _ok(out):
                return Step(op, (i, j), _params(axis=axis)), out
        if op == "stack":
            j = draw(st.sampled_from([j for j in same if shapes[j] == shape]))
            axis = draw(st.integers(0, ndim))
            return Step(op, (i, j), _params(axis=axis)), np.stack([np.zeros(shape)] * 2, axis=axis).shape
    if kind == "matmul" and ndim > 0:
        op = draw(st.sampled_from(["matmul", "dot"]))
        candidates = []
        for j in range(n):
            for t in (False, True):
                if len(shapes[j]) == 0 or (op == "dot" and ndim > 2):
                    continue
                other = shapes[j][::-1] if t else shapes[j]
                try:
                    out = getattr(np, op)(np.zeros(shape), np.zeros(other)).shape
                except ValueError:
                    continue
                if _ok(out):
                    candidates.append((j, t, out))
        if candidates:
            j, t, out = draw(st.sampled_from(candidates))
            return Step(op, (i, j), _params(transpose=t)), out
    if kind == "linalg" and ndim == 2:
        n, m = shape
        op = draw(st.sampled_from(LINALG_STEPS if n == m else LINALG_STEPS[len(SQUARE_STEPS) :]))
        ord_ = draw(st.sampled_from([2, "nuc"])) if op == "norm" else None
        return Step(op, (i,), _params(n=n, m=m, ord=ord_)), _linalg_shape(op, n, m)
    if kind == "function" and ndim > 0:
        op = draw(st.sampled_from(FUNCTION_STEPS))
        axis = draw(st.integers(-ndim, ndim - 1))
        zeros = np.zeros(shape)
        if op == "einsum":
            letters = "ijk"[:ndim]
            subscripts = draw(st.sampled_from([f"{letters},{letters}->{letters[:-1]}",  # the last axis contracted
                                               f"...{letters[-1]},...{letters[-1]}->...",  # the same, by ellipsis
                                               f"{letters},{letters}->"]))  # fmt: skip
            out = np.einsum(subscripts, zeros, zeros).shape
            return Step(op, (i,), _params(subscripts=subscripts)), out
        if op == "diff" and shape[axis] >= 2:
            return Step(op, (i,), _params(axis=axis)), np.diff(zeros, axis=axis).shape
        if op == "pad":
            mode = draw(st.sampled_from(["constant", "edge", "reflect", "symmetric", "wrap"]))
            out = np.pad(zeros, 1, mode=mode).shape
            if _ok(out) and (mode != "reflect" or min(shape) >= 2):
                return Step(op, (i,), _params(mode=mode)), out
        if op == "cumprod":
            return Step(op, (i,), _params(axis=axis)), shape
        if op == "median":
            return Step(op, (i,), _params(axis=axis)), np.median(zeros, axis=axis).shape
    if kind == "indexing" and ndim > 0:
        op = draw(st.sampled_from(INDEXING_STEPS))
        axis = draw(st.integers(-ndim, ndim - 1))
        size = _size(shape)
        if op == "sort":
            return Step(op, (i,), _params(axis=axis)), shape
        if op == "argmax_pick":
            out = list(shape)
            out[axis] = 1
            return Step(op, (i,), _params(axis=axis)), tuple(out)
        k = draw(st.integers(1, size))
        if op == "argsort_rows":
            return Step(op, (i,), _params(k=k, rows=shape[0])), (k,) + tuple(shape[1:])
        return Step(op, (i,), _params(k=k)), (size,)
    # unary: always possible
    prim = draw(st.sampled_from(UNARY))
    params = {}
    if prim.domain in ("nonzero",):
        params["neg"] = draw(st.booleans())
    if prim.domain in ("off_integers", "off_half_integers"):
        params["k"] = draw(st.integers(-2, 2))
    return Step(prim.numpy[0], (i,), _params(**params)), shape


@st.composite
def programs(draw, min_steps=2, max_steps=30, min_inputs=1, max_inputs=3):
    """Strategy: a :class:`Program` of ``min_steps..max_steps`` steps on 1-3 float inputs (tied ones in
    one program of four)."""
    tied = draw(st.integers(0, 3)) == 3  # (shrinks towards untied, finite inputs)
    nonfinite = not tied and draw(st.integers(0, 5)) == 5
    inputs = draw(_inputs(min_inputs, max_inputs, tied, nonfinite))
    shapes = [x.shape for x in inputs]
    steps = []
    for _ in range(draw(st.integers(min_steps, max_steps))):
        step, shape = draw(_step(shapes))
        steps.append(step)
        shapes.append(tuple(shape))
    return Program(tuple(inputs), tuple(steps), smooth=not (tied or nonfinite), nonfinite=nonfinite)


# -- checking and searching --------------------------------------------------------
def well_defined(program: Program) -> bool:
    """All intermediate NumPy values finite and of moderate size at the program's inputs (with non-finite
    inputs: the finite ones of moderate size), and none that NumPy refuses to compute."""
    values = list(program.inputs)
    names = program.names
    scope = {"xp": np, "np": np, "scatter_add": scatter_add}
    with np.errstate(all="ignore"):
        for s in program.steps:
            scope.update({names[i]: values[i] for i in range(len(values))})
            try:
                v = np.asarray(eval(s.expression(names), scope))  # noqa: S307
            except np.linalg.LinAlgError:  # NumPy's SVD refuses NaN, where JAX and fasttape give NaN: skipped
                return False
            finite = np.isfinite(v)
            if not (program.nonfinite or np.all(finite)) or np.any(np.abs(v[finite]) > MAX_ABS):
                return False
            values.append(v)
    return True


@dataclass
class Found:
    """A failing (shrunk) program: its report (or the exception), reproducer and primitives."""

    program: Program
    report: Report | None
    error: BaseException | None
    source: str
    primitives: list[str]

    def summary(self) -> str:
        head = f"failing program ({len(self.program.steps)} steps) using: {', '.join(self.primitives)}"
        detail = str(self.report) if self.report is not None else f"raised {self.error!r}"
        return f"{head}\n{detail}\n--- reproducer ---\n{self.source}"

    def __str__(self):
        return self.summary()


def check_program(program: Program, fn=None, fd_rtol=FD_RTOL, kinds=KINDS, **kwargs) -> Report:
    """``oracle.check`` of the program (or of ``fn``, e.g. a wrapped ``program.callable``) at its inputs."""
    fn = program.callable if fn is None else fn
    kwargs.setdefault("fd", program.smooth)
    kwargs.setdefault("eager", program.nonfinite)
    kwargs.setdefault("exact_nonfinite", not program.nonfinite)  # infinite adjoints: each rule picks NaN or inf
    return check(fn, *program.inputs, namespace=True, fd_rtol=fd_rtol, kinds=kinds, name="program", **kwargs)


def _outcome(program, wrap, fd_rtol, kinds):
    fn = program.callable if wrap is None else wrap(program.callable)
    try:
        return check_program(program, fn, fd_rtol=fd_rtol, kinds=kinds), None
    except Exception as e:  # a crash of fasttape (or of the reference) is a failure too
        return None, e


def search(
    max_examples: int = 100,
    seed: int = 0,
    *,
    fd_rtol: float = FD_RTOL,
    min_steps: int = 2,
    max_steps: int = 30,
    kinds=KINDS,
    wrap=None,
    strategy=None,
    stats: dict | None = None,
    shrink: bool = True,
) -> Found | None:
    """Look for a program whose ``oracle.check`` fails; None if none of ``max_examples`` does.

    Programs whose intermediate values are not finite (or huge) at the drawn
    inputs are skipped.  ``wrap(callable) -> callable`` substitutes the function
    checked (for testing the search itself); the reproducer shows the unwrapped
    program.  The result is shrunk by hypothesis (unless ``shrink=False``).  ``stats``, if given,
    counts the programs checked (``programs``, shrinking included) and their derivative checks
    (``checks``).
    """
    stats = {} if stats is None else stats
    stats.update(programs=0, checks=0)
    strategy = strategy if strategy is not None else programs(min_steps, max_steps)

    def fails(program):
        assume(well_defined(program))
        report, error = _outcome(program, wrap, fd_rtol, kinds)
        stats["programs"] += 1
        stats["checks"] += 0 if report is None else len(report.results)
        return error is not None or not report.passed

    opts = settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=False,
        suppress_health_check=list(HealthCheck),
        report_multiple_bugs=False,
        phases=tuple(p for p in Phase if shrink or p != Phase.shrink),
    )
    try:
        program = find(strategy, fails, settings=opts, random=random.Random(seed))
    except NoSuchExample:
        return None
    report, error = _outcome(program, wrap, fd_rtol, kinds)
    return Found(program, report, error, program.snippet(fd_rtol), program.primitives())
