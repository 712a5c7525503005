"""Every primitive's derivative rules written in primitives: the JVP and the VJP of one instruction as
traced NumPy code that records onto the tape (JAX's jvp and transpose rules).

fasttape.nesting applies them to the instructions of a transformation called inside a traced function,
so that the derivative program is itself a program of primitives, which the outer transformation
differentiates again.  The compiled sweeps never use them: they have kernels of their own
(fasttape.families).

The elementwise primitives' rules are their declarations' first partials (``Primitive.d1``),
evaluated on tracers: the formulas written once in fasttape.primitives.  Each structural kind has
its rule below, written with NumPy calls on tracers and the recorder's take and scatter; trisolve and
the factorisations run families/factor_rules (the kernels' rules) on tracers (fasttape.traced_duals).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from . import families, traced_duals
from .families import factor
from .primitives import PRIMITIVE_BY_OPCODE
from .recorder import Recorder
from .scalar_math import CONSTANTS
from .tracer import Tracer

# the operands a kind never differentiates: a selection's condition, integer positions, LU's pivots
FROZEN = {"select": (0,), "take": (1,), "scatter": (1,), "permute": (0,)}


def frozen_operands(prim) -> tuple:
    return FROZEN.get(prim.kind, ()) + prim.static


@dataclass
class Instruction:
    """One row of the tape as the rules see it: its primitive, its parameters, its operands and
    result as tracers (values of the trace)."""

    rec: Recorder
    row: int
    prim: object
    params: dict
    operands: list
    out: Tracer

    @classmethod
    def at(cls, rec: Recorder, row: int, tracer_of) -> Instruction:
        r = rec.log.row(row)
        prim = PRIMITIVE_BY_OPCODE[r[0]]
        params = families.of(r[0]).unpack(r)
        operands = [tracer_of(s) for s in rec.log.operands(row)]
        return cls(rec, row, prim, params, operands, tracer_of(rec.log.out(row)))


def vjp(ins: Instruction, ct, wanted) -> list:
    """The cotangents of the operands marked ``wanted`` (None where there is none), from the
    cotangent ``ct`` of the result."""
    rule = _VJP.get(ins.prim.kind)
    if rule is None:
        raise NotImplementedError(_unsupported(ins.prim))
    cts = rule(ins, ct, wanted)
    return [c if w else None for c, w in zip(cts, wanted)]


def jvp(ins: Instruction, tangents):
    """The tangent of the result from the operands' tangents (None: zero), or None if it is zero."""
    if all(t is None for t in tangents):
        return None
    rule = _JVP.get(ins.prim.kind)
    if rule is None:
        raise NotImplementedError(_unsupported(ins.prim))
    return rule(ins, tangents)


def _unsupported(prim) -> str:
    return (
        f"a derivative of a derivative through {prim.name!r} (a transformation applied inside a traced function) "
        "is not available yet; differentiate the outer function once, or move this step out of the inner "
        "transformation."
    )


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------
def _shaped(x, shape):
    return np.reshape(x, shape) if np.shape(x) != tuple(shape) else x


def _unbroadcast(ct, operand):
    """``ct`` (shaped like the result) summed down to ``operand``'s shape: an elementwise operand is either
    the result's size or one element."""
    if operand.size == 1 and np.size(ct) != 1:
        return np.reshape(np.sum(ct), operand.shape)
    return _shaped(ct, operand.shape)


def _scale(ct, partial):
    """``ct · partial`` without recording a product by a literal 1 or -1."""
    if isinstance(partial, float):
        if partial == 1.0:
            return ct
        if partial == -1.0:
            return -ct
    return ct * partial


# --------------------------------------------------------------------------
# elementwise: the declarations' partials on tracers
# --------------------------------------------------------------------------
@functools.cache
def _namespace() -> dict:
    """The formulas' vocabulary (scalar_math.VOCABULARY) as traced functions."""
    from . import numpy as fnp

    def trunc(v):
        return fnp.sign(v) * fnp.floor(abs(v))

    names = {
        "where": fnp.where,
        "abs": abs,
        "trigamma": lambda v: fnp.polygamma(1, v),
        "tetragamma": lambda v: fnp.polygamma(2, v),
        "lgamma": fnp.gammaln,
        "floor_mod": fnp.remainder,
        "floor_quotient": fnp.floor_divide,
        "fmod": lambda a, b: a - b * trunc(a / b),
    }
    for name in ("digamma", "erfc", "erfcx", "log_ndtr", "ndtri", "polygamma", "sign", "sqrt", "cbrt", "floor",
                 "ceil", "rint", "maximum", "minimum", "exp", "exp2", "expm1", "log", "log2", "log10", "log1p",
                 "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh", "tanh", "arcsinh",
                 "arccosh", "arctanh", "erf", "hypot", "logaddexp"):  # fmt: skip
        names[name] = getattr(fnp, name)
    return {"__builtins__": {}, **CONSTANTS, **names}


@functools.cache
def _compiled(expr: str):
    return compile(expr, f"<partial {expr}>", "eval")


def _elementwise_operands(ins: Instruction) -> list:
    """The operands shaped for the formulas: a full-size one as the result, a single element as a
    scalar, a static one (an order) as its concrete value."""
    out_shape = ins.out.shape
    shaped = []
    for k, x in enumerate(ins.operands):
        if k in ins.prim.static:
            shaped.append(np.reshape(np.asarray(x._value, dtype=np.float64), ()))
        elif x.size == 1 and ins.out.size != 1:
            shaped.append(np.reshape(x, ()))
        else:
            shaped.append(_shaped(x, out_shape))
    return shaped


def partials(ins: Instruction, wanted) -> list:
    """The first partials of an elementwise instruction (floats for constant ones), None where not wanted."""
    shaped = _elementwise_operands(ins)
    env = {"z": ins.out, "x": shaped[0]}
    if len(shaped) > 1:
        env["y"] = shaped[1]
    ns = _namespace()
    out = []
    for expr, w in zip(ins.prim.d1, wanted):
        if not w or expr == "0.0":
            out.append(None)
            continue
        with np.errstate(all="ignore"):
            value = eval(_compiled(expr), ns, env)
        out.append(float(value) if isinstance(value, (int, float)) else value)
    return out


def _elementwise_vjp(ins, ct, wanted):
    return [None if d is None else _unbroadcast(_scale(ct, d), x) for d, x in zip(partials(ins, wanted), ins.operands)]


def _elementwise_jvp(ins, tangents):
    total = None
    ds = partials(ins, [t is not None for t in tangents])
    for d, t, x in zip(ds, tangents, ins.operands):
        if d is None:
            continue
        t = np.reshape(t, ()) if x.size == 1 and ins.out.size != 1 else _shaped(t, ins.out.shape)
        term = _scale(t, d)
        total = term if total is None else total + term
    return None if total is None else _shaped(np.broadcast_to(total, ins.out.shape), ins.out.shape)


# --------------------------------------------------------------------------
# select: where(c, a, b)
# --------------------------------------------------------------------------
def _condition(ins):
    c = ins.operands[0]
    return np.reshape(c, ()) if c.size == 1 else _shaped(c, ins.out.shape)


def _select_vjp(ins, ct, wanted):
    c = _condition(ins)
    _, a, b = ins.operands
    ct_a = _unbroadcast(np.where(c, ct, 0.0), a) if wanted[1] else None
    ct_b = _unbroadcast(np.where(c, 0.0, ct), b) if wanted[2] else None
    return [None, ct_a, ct_b]


def _select_jvp(ins, tangents):
    c = _condition(ins)
    _, ta, tb = tangents

    def side(t, x):
        if t is None:
            return 0.0
        return np.reshape(t, ()) if x.size == 1 else _shaped(t, ins.out.shape)

    out = np.where(c, side(ta, ins.operands[1]), side(tb, ins.operands[2]))
    return _shaped(np.broadcast_to(out, ins.out.shape), ins.out.shape)


# --------------------------------------------------------------------------
# reductions and scans over the middle axis of (pre, r, post)
# --------------------------------------------------------------------------
def _three(ins, x):
    p = ins.params
    return np.reshape(x, (p["pre"], p["r"], p["post"]))


def _kept(ins, z):
    p = ins.params
    return np.reshape(z, (p["pre"], 1, p["post"]))


def _weights(ins):
    """∂z/∂x of a reduction, shaped (pre, r, post), for the nonlinear ones."""
    name = ins.prim.name
    x3, z3 = _three(ins, ins.operands[0]), _kept(ins, ins.out)
    if name in ("max", "min"):  # tied extrema share equally
        hit = np.where(x3 == z3, 1.0, 0.0)
        return hit / np.sum(hit, axis=1, keepdims=True)
    if name == "logsumexp":  # d logsumexp = softmax
        return np.exp(x3 - z3)
    if name == "prod":  # the product of the others: prefix times suffix products, exact at zeros to any order
        p = ins.params
        ones = np.ones((p["pre"], 1, p["post"]))
        prefix = np.cumprod(x3, axis=1)
        suffix = np.flip(np.cumprod(np.flip(x3, axis=1), axis=1), axis=1)
        return np.concatenate([ones, prefix[:, :-1]], axis=1) * np.concatenate([suffix[:, 1:], ones], axis=1)
    raise NotImplementedError(_unsupported(ins.prim))


def _reduction_vjp(ins, ct, wanted):
    p = ins.params
    x = ins.operands[0]
    if ins.prim.kind == "scan":  # the adjoint of a running sum is the running sum from the end
        ct3 = np.reshape(ct, (p["pre"], p["r"], p["post"]))
        return [np.reshape(np.flip(np.cumsum(np.flip(ct3, axis=1), axis=1), axis=1), x.shape)]
    ct3 = _kept(ins, ct)
    spread = np.broadcast_to(ct3, (p["pre"], p["r"], p["post"]))
    if ins.prim.name == "sum":
        return [np.reshape(spread, x.shape)]
    return [np.reshape(spread * _weights(ins), x.shape)]


def _reduction_jvp(ins, tangents):
    t3 = _three(ins, tangents[0])
    if ins.prim.kind == "scan":
        return np.reshape(np.cumsum(t3, axis=1), ins.out.shape)
    if ins.prim.name != "sum":
        t3 = t3 * _weights(ins)
    return np.reshape(np.sum(t3, axis=1), ins.out.shape)


# --------------------------------------------------------------------------
# broadcast: (pre, 1, post) repeated r times along the middle axis
# --------------------------------------------------------------------------
def _broadcast_vjp(ins, ct, wanted):
    p = ins.params
    ct3 = np.reshape(ct, (p["pre"], p["r"], p["post"]))
    return [np.reshape(np.sum(ct3, axis=1), ins.operands[0].shape)]


def _broadcast_jvp(ins, tangents):
    p = ins.params
    t3 = np.reshape(tangents[0], (p["pre"], 1, p["post"]))
    return np.reshape(np.broadcast_to(t3, (p["pre"], p["r"], p["post"])), ins.out.shape)


# --------------------------------------------------------------------------
# gather: constant positions into the concatenated operands
# --------------------------------------------------------------------------
def _pool(rec: Recorder, start: int, count: int) -> np.ndarray:
    """The positions a gather reads (absolute buffer offsets), from the recorder's pool."""
    if count == 0:  # an empty gather reads nothing (its empty block may share its start with the next one)
        return np.zeros(0, dtype=np.int64)
    pos = rec.pool_len
    for block in reversed(rec.pool):
        pos -= block.size
        if pos <= start:
            if pos == start and block.size == count:
                return block
            raise ValueError("a gather's positions span two pool blocks")  # the recorder never writes that
    raise ValueError("a gather's positions are not in the pool")


def _sources(ins):
    """Per element of the result: which operand it reads and where in it."""
    index = _pool(ins.rec, ins.params["start"], ins.params["count"])
    which = np.full(index.size, -1, dtype=np.int64)
    local = np.zeros(index.size, dtype=np.int64)
    for k, x in enumerate(ins.operands):
        offset = ins.rec.slots[x._sid].offset
        inside = (which < 0) & (index >= offset) & (index < offset + x.size)
        which[inside] = k
        local[inside] = index[inside] - offset
    return which, local


def _gather_jvp(ins, tangents):
    which, local = _sources(ins)
    parts, starts, at = [], [], 0
    for t, x in zip(tangents, ins.operands):
        parts.append(np.zeros(x.size) if t is None else np.ravel(t))
        starts.append(at)
        at += x.size
    flat = np.concatenate(parts)
    return np.reshape(flat[np.asarray(starts, dtype=np.int64)[which] + local], ins.out.shape)


def _gather_vjp(ins, ct, wanted):
    which, local = _sources(ins)
    flat = np.ravel(ct)
    cts = []
    for k, (x, w) in enumerate(zip(ins.operands, wanted)):
        if not w:
            cts.append(None)
            continue
        reads = np.flatnonzero(which == k)
        if reads.size == 0:
            cts.append(None)
            continue
        at = local[reads]
        if np.unique(at).size == at.size:  # each element read at most once: a gather of the cotangent
            index = np.full(x.size, flat.size, dtype=np.int64)
            index[at] = reads
            padded = np.concatenate([flat, np.zeros(1)])
            cts.append(np.reshape(padded[index], x.shape))
        else:  # read several times: the reads add up
            cts.append(np.reshape(_scatter(ins.rec, np.zeros(x.size), at, flat[reads], add=True), x.shape))
    return cts


# --------------------------------------------------------------------------
# matmul: (batch, m, k) @ (batch, k, n)
# --------------------------------------------------------------------------
def _matrices(ins, a, b):
    p = ins.params
    return np.reshape(a, (p["batch"], p["m"], p["k"])), np.reshape(b, (p["batch"], p["k"], p["n"]))


def _matmul_vjp(ins, ct, wanted):
    p = ins.params
    a, b = _matrices(ins, *ins.operands)
    ct3 = np.reshape(ct, (p["batch"], p["m"], p["n"]))
    ct_a = np.reshape(ct3 @ np.swapaxes(b, -1, -2), ins.operands[0].shape) if wanted[0] else None
    ct_b = np.reshape(np.swapaxes(a, -1, -2) @ ct3, ins.operands[1].shape) if wanted[1] else None
    return [ct_a, ct_b]


def _matmul_jvp(ins, tangents):
    a, b = _matrices(ins, *ins.operands)
    ta, tb = tangents
    total = None
    if ta is not None:
        total = _matrices(ins, ta, b)[0] @ b
    if tb is not None:
        term = a @ _matrices(ins, a, tb)[1]
        total = term if total is None else total + term
    return np.reshape(total, ins.out.shape)


# --------------------------------------------------------------------------
# take and scatter: integer positions read in the sweep
# --------------------------------------------------------------------------
def _take(rec, x, index, axis, along, shape=None):
    """A take instruction (the family's (pre, n, post) reading of x and the indices); ``shape``: its result's."""
    v = np.asarray(x._value)
    pre, n = int(np.prod(v.shape[:axis])), v.shape[axis]
    post = v.size // (pre * n) if pre * n else 0
    k = index._value.astype(np.int64)
    v3 = v.reshape(pre, n, post)
    if along:
        value = np.take_along_axis(v3, k.reshape(pre, -1, post), 1)
    else:
        value = np.take(v3, k.reshape(-1), axis=1)
    if shape is None:
        shape = k.shape if along else v.shape[:axis] + k.shape + v.shape[axis + 1 :]
    return rec.take(x, index, axis, along, value.reshape(shape))


def _scatter(rec, x, positions, values, add):
    """``x`` (flat) with ``values`` added (``add``) or written at ``positions`` (constant or traced)."""
    x, values = rec.as_tracer(x), rec.as_tracer(np.ravel(values))
    positions = rec.as_tracer(np.ravel(positions))
    value = np.array(x._value, dtype=np.float64 if x.dtype.kind == "f" else x.dtype).ravel()
    at = positions._value.astype(np.int64)
    if add:
        np.add.at(value, at, values._value)
    else:
        value[at] = values._value
    return rec.scatter(x, positions, values, add, value.reshape(x.shape))


def _take_geometry(ins):
    x = ins.operands[0]
    axis, along = ins.params["mode"] >> 1, bool(ins.params["mode"] & 1)
    pre, n = ins.params["pre"], ins.params["n"]
    post = x.size // (pre * n) if pre * n else 0
    return x, axis, along, pre, n, post


def _take_jvp(ins, tangents):
    x, axis, along, *_ = _take_geometry(ins)
    return _take(ins.rec, _shaped(tangents[0], x.shape), ins.operands[1], axis, along, ins.out.shape)


def _take_vjp(ins, ct, wanted):
    x, axis, along, pre, n, post = _take_geometry(ins)
    k = ins.operands[1]
    k = np.where(k < 0, k + n, k)  # positions count from the end where negative
    k3 = np.reshape(k, (pre, -1, post) if along else (1, -1, 1))
    rows = np.arange(pre, dtype=np.int64).reshape(pre, 1, 1) * n
    cols = np.arange(post, dtype=np.int64).reshape(1, 1, post)
    positions = (rows + k3) * post + cols
    flat_ct = np.ravel(np.broadcast_to(np.reshape(ct, (pre, -1, post)), positions.shape))
    return [np.reshape(_scatter(ins.rec, np.zeros(x.size), positions, flat_ct, add=True), x.shape), None]


def _scatter_jvp(ins, tangents):
    x, positions, values = ins.operands
    tx, _, tv = tangents
    tx = np.zeros(x.size) if tx is None else np.ravel(tx)
    tv = np.zeros(values.size) if tv is None else tv
    return np.reshape(_scatter(ins.rec, tx, positions, tv, add=ins.params["mode"] == 0), ins.out.shape)


def _scatter_vjp(ins, ct, wanted):
    rec = ins.rec
    x, positions, values = ins.operands
    flat = rec.as_tracer(np.ravel(ct))
    read = _take(rec, flat, rec.as_tracer(np.ravel(positions)), 0, False)
    if ins.params["mode"] == 0:  # add: both cotangents pass through
        return [np.reshape(flat, x.shape), None, np.reshape(read, values.shape)]
    m = values.size  # set: only the last write to each position reaches the result
    writes = np.arange(m, dtype=np.int64)
    last = _scatter(rec, np.full(x.size, -1, dtype=np.int64), positions, writes, add=False)
    won = _take(rec, last, rec.as_tracer(np.ravel(positions)), 0, False) == writes
    ct_x = np.reshape(_scatter(rec, flat, positions, np.zeros(m), add=False), x.shape) if wanted[0] else None
    ct_v = np.reshape(np.where(won, read, 0.0), values.shape) if wanted[2] else None
    return [ct_x, None, ct_v]


# --------------------------------------------------------------------------
# linear algebra: solve and slogdet written out; trisolve and the factorisations run the kernels' own rules
# (families/factor_rules) on tracers (fasttape.traced_duals)
# --------------------------------------------------------------------------
def _linalg_shapes(ins):
    p = ins.params
    return p["batch"], p["n"], p["m"]


def _solve_jvp(ins, tangents):
    b, n, m = _linalg_shapes(ins)
    a = np.reshape(ins.operands[0], (b, n, n))
    x = np.reshape(ins.out, (b, n, m))
    ta, tb = tangents
    rhs = np.zeros((b, n, m)) if tb is None else np.reshape(tb, (b, n, m))
    if ta is not None:  # dX = A⁻¹ (dB - dA X)
        rhs = rhs - np.reshape(ta, (b, n, n)) @ x
    return np.reshape(traced_duals.solve(a, rhs, False), ins.out.shape)


def _solve_vjp(ins, ct, wanted):
    b, n, m = _linalg_shapes(ins)
    a = np.reshape(ins.operands[0], (b, n, n))
    x = np.reshape(ins.out, (b, n, m))
    ct_b = traced_duals.solve(a, np.reshape(ct, (b, n, m)), True)  # B̄ = A⁻ᵀ X̄, Ā = -B̄ Xᵀ
    ct_a = np.reshape(-(ct_b @ traced_duals.tr(x)), ins.operands[0].shape) if wanted[0] else None
    return [ct_a, np.reshape(ct_b, ins.operands[1].shape)]


def _slogdet_jvp(ins, tangents):
    b, n, _ = _linalg_shapes(ins)
    a = np.reshape(ins.operands[0], (b, n, n))
    inv_da = traced_duals.solve(a, np.reshape(tangents[0], (b, n, n)), False)
    d_logabs = np.sum(traced_duals.diagonal(inv_da), axis=(-2, -1))  # tr(A⁻¹ dA)
    return np.reshape(np.stack([np.zeros(b), d_logabs], axis=-1), ins.out.shape)


def _slogdet_vjp(ins, ct, wanted):
    b, n, _ = _linalg_shapes(ins)
    a = np.reshape(ins.operands[0], (b, n, n))
    c = np.reshape(ct, (b, 2))[:, 1]
    inv_t = traced_duals.solve(a, np.broadcast_to(np.eye(n), (b, n, n)), True)  # A⁻ᵀ
    return [np.reshape(c[:, None, None] * inv_t, ins.operands[0].shape)]


def _factor_rules():
    """families/factor_rules' functions, recording on tracers (the kernels' rule text, one copy)."""
    from .families import factor_rules

    return traced_duals.recording(factor_rules)


def _trisolve_parts(ins):
    b, n, m = _linalg_shapes(ins)
    return np.reshape(ins.operands[0], (b, n, n)), np.reshape(ins.out, (b, n, m)), ins.params["mode"]


def _trisolve_jvp(ins, tangents):
    t, x, mode = _trisolve_parts(ins)
    dt, db = (np.zeros(t.shape) if d is None else np.reshape(d, s.shape) for d, s in zip(tangents, (t, x)))
    dx = _factor_rules().trisolve_tangent(t, x, dt, db, mode, tangents[0] is not None, tangents[1] is not None)
    return np.reshape(dx, ins.out.shape)


def _trisolve_vjp(ins, ct, wanted):
    t, x, mode = _trisolve_parts(ins)
    ct_t, ct_b = _factor_rules().trisolve_adjoint(t, x, np.reshape(ct, x.shape), mode)
    return [np.reshape(ct_t, ins.operands[0].shape) if wanted[0] else None, np.reshape(ct_b, ins.operands[1].shape)]


def _square_operand(ins, x):
    b, n, _ = _linalg_shapes(ins)
    return np.reshape(x, (b, n, n))


def _cholesky_jvp(ins, tangents):
    low = _square_operand(ins, ins.out)
    return np.reshape(_factor_rules().cholesky_tangent(low, _square_operand(ins, tangents[0])), ins.out.shape)


def _cholesky_vjp(ins, ct, wanted):
    low = _square_operand(ins, ins.out)
    return [np.reshape(_factor_rules().cholesky_adjoint(low, _square_operand(ins, ct)), ins.operands[0].shape)]


def _packed(ins, x):
    """The parts of a factorisation's packed output (or of its tangent or cotangent), each (batch,) + shape,
    in the family's layout (``factor.output_parts``)."""
    p = ins.params
    flat = np.reshape(x, (p["batch"], -1))
    parts, at = [], 0
    for shape in factor.output_parts(ins.prim.opcode, p["n"], p["m"], p["mode"]):
        size = shape[0] * shape[1]
        parts.append(np.reshape(flat[:, at : at + size], (p["batch"],) + shape))
        at += size
    return parts


def _pack(ins, parts):
    b = ins.params["batch"]
    return np.reshape(np.concatenate([np.reshape(p, (b, -1)) for p in parts], axis=-1), ins.out.shape)


def _eigh_jvp(ins, tangents):
    w, v = _packed(ins, ins.out)
    return _pack(ins, _factor_rules().eigh_tangent(w, v, _square_operand(ins, tangents[0])))


def _eigh_vjp(ins, ct, wanted):
    w, v = _packed(ins, ins.out)
    a_bar = _factor_rules().eigh_adjoint(w, v, *_packed(ins, ct))
    return [np.reshape(a_bar, ins.operands[0].shape)]


def _svd_jvp(ins, tangents):
    b, n, m = _linalg_shapes(ins)
    parts = _packed(ins, ins.out)
    return _pack(ins, _factor_rules().svd_tangent(*parts, np.reshape(tangents[0], (b, n, m))))


def _svd_vjp(ins, ct, wanted):
    parts = _packed(ins, ins.out)
    a_bar = _factor_rules().svd_adjoint(*parts, *_packed(ins, ct))
    return [np.reshape(a_bar, ins.operands[0].shape)]


def _qr_jvp(ins, tangents):
    b, n, m = _linalg_shapes(ins)
    q, r = _packed(ins, ins.out)
    a = np.reshape(ins.operands[0], (b, n, m))
    return _pack(ins, _factor_rules().qr_tangent(q, r, a, np.reshape(tangents[0], (b, n, m))))


def _qr_vjp(ins, ct, wanted):
    b, n, m = _linalg_shapes(ins)
    q, r = _packed(ins, ins.out)
    a_bar = _factor_rules().qr_adjoint(q, r, np.reshape(ins.operands[0], (b, n, m)), *_packed(ins, ct))
    return [np.reshape(a_bar, ins.operands[0].shape)]


def _lu_jvp(ins, tangents):
    lu, piv = _packed(ins, ins.out)
    dlu = _factor_rules().lu_tangent(lu, piv[:, 0], _square_operand(ins, tangents[0]))
    return _pack(ins, [dlu, np.zeros(piv.shape)])  # the pivots are integers: no tangent


def _lu_vjp(ins, ct, wanted):
    lu, piv = _packed(ins, ins.out)
    a_bar = _factor_rules().lu_adjoint(lu, piv[:, 0], _packed(ins, ct)[0])
    return [np.reshape(a_bar, ins.operands[0].shape)]


def _permute_rows(ins, x, inverse):
    b, n, m = _linalg_shapes(ins)
    piv = np.reshape(ins.operands[0], (b, n))
    return np.reshape(traced_duals.swapped(np.reshape(x, (b, n, m)), piv, inverse), ins.out.shape)


def _permute_jvp(ins, tangents):
    return _permute_rows(ins, tangents[1], bool(ins.params["mode"] & 1))


def _permute_vjp(ins, ct, wanted):  # the transpose of a permutation is its inverse
    return [None, np.reshape(_permute_rows(ins, ct, not ins.params["mode"] & 1), ins.operands[1].shape)]


_VJP = {
    "unary": _elementwise_vjp,
    "binary": _elementwise_vjp,
    "select": _select_vjp,
    "reduction": _reduction_vjp,
    "scan": _reduction_vjp,
    "broadcast": _broadcast_vjp,
    "gather": _gather_vjp,
    "matmul": _matmul_vjp,
    "take": _take_vjp,
    "scatter": _scatter_vjp,
    "solve": _solve_vjp,
    "slogdet": _slogdet_vjp,
    "trisolve": _trisolve_vjp,
    "permute": _permute_vjp,
    "cholesky": _cholesky_vjp,
    "eigh": _eigh_vjp,
    "svd": _svd_vjp,
    "qr": _qr_vjp,
    "lu": _lu_vjp,
}
_JVP = {
    "unary": _elementwise_jvp,
    "binary": _elementwise_jvp,
    "select": _select_jvp,
    "reduction": _reduction_jvp,
    "scan": _reduction_jvp,
    "broadcast": _broadcast_jvp,
    "gather": _gather_jvp,
    "matmul": _matmul_jvp,
    "take": _take_jvp,
    "scatter": _scatter_jvp,
    "solve": _solve_jvp,
    "slogdet": _slogdet_jvp,
    "trisolve": _trisolve_jvp,
    "permute": _permute_jvp,
    "cholesky": _cholesky_jvp,
    "eigh": _eigh_jvp,
    "svd": _svd_jvp,
    "qr": _qr_jvp,
    "lu": _lu_jvp,
}
