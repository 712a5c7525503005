"""The reductions and scans: sum, prod, max, min, logsumexp over an axis, and cumsum.

Every instruction sees its operand as (pre, r, post) and reduces (or scans) the middle
axis of length r: the recorder moves any set of axes into that form.  max and min keep a
side store: per output, the number of elements tied at the extremum (0 where it is NaN),
so that the ties share the adjoint equally, as JAX does.  The forward marks it not yet
counted; the first derivative sweep that needs it counts it, and the others reuse it.
max, min and logsumexp have one rule per sweep, written once over a run of elements with a step (the
reduced axis of one output): over contiguous elements (post = 1: the last axis, or the whole array)
LLVM vectorises them (unsigned positions, eight running extrema side by side, the vector exp of
fasttape.vector_math): a max over 1.28 million elements 0.70 -> 0.34 ms, its tie count and adjoint
0.76 and 1.2 -> 0.12 and 0.41 ms.
"""

from __future__ import annotations

import math

import numpy as np

from ..generated_loops import sum_add
from ..jit import jit
from ..layout import (
    C_A,
    C_FLAGS,
    C_N,
    C_NA,
    C_OP,
    C_OUT,
    F_CONST_ADJOINT,
    F_INIT_A,
    OP_CUMSUM,
    OP_LOGSUMEXP,
    OP_MAX,
    OP_MIN,
    OP_PROD,
    OP_SUM,
    linear_planes,
    param_columns,
)
from ..loops import sum_contiguous, zero, zero_first_writes
from ..primitives import opcode
from ..vector_math import vexp

KINDS = ("reduction", "scan")
PARAMS = ("pre", "r", "post", "side")
P_PRE, P_R, P_POST, P_SIDE = param_columns(PARAMS)

TIES = ("max", "min")  # the primitives with a side store


# --------------------------------------------------------------------------
# compiled loops
# --------------------------------------------------------------------------
@jit
def sum_forward(t, o, a, pre, r, post):
    """Sums over the middle axis of ``t[a:]`` viewed as (pre, r, post), into ``t[o:]`` (values or
    tangents alike)."""
    for p in range(pre):
        base = a + p * r * post
        if post == 1:
            t[o + p] = sum_contiguous(t, base, r)
            continue
        z = t[o + p * post : o + (p + 1) * post]  # rows added in order, one vectorised loop each
        z[:] = t[base : base + post]
        for k in range(1, r):
            row = t[base + k * post : base + (k + 1) * post]
            for q in range(post):
                z[q] += row[q]


@jit
def sum_reverse(t, o, a, pre, r, post, init):
    """Adjoints ``t``: the adjoint of a sum copied to every summand, one contiguous row at a time."""
    for p in range(pre):
        if post == 1:
            dx = t[a + p * r : a + (p + 1) * r]
            g1 = t[o + p]
            if init:
                for k in range(r):
                    dx[k] = g1
            else:
                for k in range(r):
                    dx[k] += g1
            continue
        g = t[o + p * post : o + (p + 1) * post]
        for k in range(r):
            start = a + (p * r + k) * post
            dx = t[start : start + post]
            if init:
                for q in range(post):
                    dx[q] = g[q]
            else:
                for q in range(post):
                    dx[q] += g[q]


# --------------------------------------------------------------------------
# the rules of max, min and logsumexp on one run of elements buf[base + k step], k < r: the reduced
# axis of one output (step = post).  A run over contiguous elements (step 1: the last axis, or the whole
# array) is what LLVM vectorises: it versions each loop on step == 1, and extremum_run compiles a copy
# for step 1 (its eight lanes are packed only when their loads are known adjacent).  Positions are
# unsigned (_u: np.uint64, the outermost operation of the subscript, since Numba types int64 + uint64
# as int64): a signed index costs a select for negative ones, which keeps LLVM from vectorising
# (fasttape.generated_loops.unsigned_subscripts)
# --------------------------------------------------------------------------
_u = np.uint64


@jit(inline="always")
def extremum_lanes(buf, base, r, step, smallest):
    """max (min) of a run, r ≥ 1: NaN if any element is NaN, else the first of the equal extrema (-0.0
    or 0.0).  Eight running extrema side by side, which LLVM packs into one vector when step is 1."""
    sign = -1.0 if smallest else 1.0  # a min is a max of the negated elements
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = sign * buf[_u(base)]
    nan = False
    end = r - r % 8
    for k0 in range(0, end, 8):
        p = base + k0 * step
        v0, v1 = sign * buf[_u(p)], sign * buf[_u(p + step)]
        v2, v3 = sign * buf[_u(p + 2 * step)], sign * buf[_u(p + 3 * step)]
        v4, v5 = sign * buf[_u(p + 4 * step)], sign * buf[_u(p + 5 * step)]
        v6, v7 = sign * buf[_u(p + 6 * step)], sign * buf[_u(p + 7 * step)]
        nan |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3) | (v4 != v4) | (v5 != v5) | (v6 != v6) | (v7 != v7)
        m0 = v0 if v0 > m0 else m0
        m1 = v1 if v1 > m1 else m1
        m2 = v2 if v2 > m2 else m2
        m3 = v3 if v3 > m3 else m3
        m4 = v4 if v4 > m4 else m4
        m5 = v5 if v5 > m5 else m5
        m6 = v6 if v6 > m6 else m6
        m7 = v7 if v7 > m7 else m7
    m = m0
    for v in (m1, m2, m3, m4, m5, m6, m7):
        m = v if v > m else m
    for k in range(end, r):
        v = sign * buf[_u(base + k * step)]
        nan |= v != v
        m = v if v > m else m
    if nan:
        return math.nan
    if m == 0.0:  # the lanes may have kept another zero than the first: its sign is the first one's
        for k in range(r):
            if buf[_u(base + k * step)] == 0.0:
                return buf[_u(base + k * step)]
    return sign * m


@jit
def extremum_run(buf, base, r, step, smallest):
    if step == 1:  # the lanes' loads adjacent: one vector load (0.30 -> 0.24 ms per 1.28 M)
        return extremum_lanes(buf, base, r, 1, smallest)
    return extremum_lanes(buf, base, r, step, smallest)


@jit
def shift_and_log_sum(buf, base, r, step):
    """logsumexp = shift + log Σ exp(x - shift), shifted by the maximum (0 where it is not finite)."""
    m = extremum_run(buf, base, r, step, False)
    shift = m if math.isfinite(m) else 0.0
    s = 0.0
    for k in range(r):
        s = sum_add(s, vexp(buf[_u(base + k * step)] - shift))
    return shift, math.log(s)


# Above this |z| the softmax exp(x - z) loses the rounding of z = shift + log(s): at z = -1e295 with k
# equal elements log(k) vanishes and each weight would be 1, not 1/k.  Below it the error is < 2e-13.
SOFTMAX_EXACT_ABOVE = 1024.0


@jit(inline="always")
def softmax_offset(buf, base, r, step, z):
    """(shift, log s) with the softmax weights exp((x - shift) - log s) of a logsumexp whose value is z:
    (z, 0) where z is small enough to subtract, else the shift and log-sum recomputed (as the forward)."""
    if not abs(z) > SOFTMAX_EXACT_ABOVE:  # (NaN too: its weights are NaN either way)
        return z, 0.0
    return shift_and_log_sum(buf, base, r, step)


@jit(inline="always")
def tie_shares(count):
    """A max/min's adjoint weights (tied element, other element) from its tie count: the ties share it
    equally; a NaN extremum (no tie) gives NaN everywhere, as JAX's mask / count (0 / 0)."""
    return (1.0 / count, 0.0) if count > 0.0 else (math.nan, math.nan)


@jit
def ties_run(buf, base, r, step, z):
    ties = 0  # an integer: a float sum would chain one add's latency per element
    for k in range(r):
        ties += buf[_u(base + k * step)] == z
    return ties


@jit
def extremum_reverse_run(buf, N, base, r, step, z, tied, other):
    """x̄ += z̄ w, w the tie share of a tied element, 0 elsewhere (0 × z̄, as JAX's mask × z̄: NaN where z̄
    is infinite): tied and other are z̄'s shares."""
    for k in range(r):
        buf[_u(N + base + k * step)] += tied if buf[_u(base + k * step)] == z else other


@jit
def softmax_reverse_run(buf, N, base, r, step, g, shift, log_s):
    for k in range(r):  # d logsumexp = softmax
        buf[_u(N + base + k * step)] += g * vexp((buf[_u(base + k * step)] - shift) - log_s)


@jit
def extremum_tangent_run(buf, t, base, r, step, z):
    """Σ t over the elements tied at z (0 × t elsewhere: 0 × inf is NaN, as JAX's mask × tangent)."""
    acc = 0.0
    for k in range(r):
        tk = t[_u(base + k * step)]
        acc = sum_add(acc, tk if buf[_u(base + k * step)] == z else 0.0 * tk)
    return acc


@jit
def softmax_tangent_run(buf, t, base, r, step, shift, log_s):
    acc = 0.0
    for k in range(r):  # d logsumexp = softmax
        acc = sum_add(acc, vexp((buf[_u(base + k * step)] - shift) - log_s) * t[_u(base + k * step)])
    return acc


@jit
def extremum_second_run(buf, adj2, N, dN, base, r, step, z, g, gd, tied, other, first, flat):
    """max / min, piecewise linear: x̄ += z̄ w on the first direction, x̄' += z̄' w (w: the tie shares)."""
    for k in range(r):
        pos = base + k * step
        w = tied if buf[_u(pos)] == z else other
        if first:
            buf[_u(N + pos)] += g * w
        if not flat:
            adj2[_u(dN + pos)] += gd * w


@jit
def softmax_second_run(buf, tan, adj2, N, dN, base, r, step, g, gd, zt, shift, log_s, first, second, flat):
    """softmax s: x̄ += z̄ s (first direction),  x̄' += z̄' s + z̄ s (x' - z') (second), else x̄' += z̄' s."""
    for k in range(r):
        pos = base + k * step
        sm = vexp((buf[_u(pos)] - shift) - log_s)
        if second:
            if first:
                buf[_u(N + pos)] += g * sm
            curved = g * sm * (tan[_u(dN + pos)] - zt)
            adj2[_u(dN + pos)] += (0.0 if flat else gd * sm) + curved
        else:
            adj2[_u(dN + pos)] += gd * sm


@jit
def reduce_forward(op, buf, o, a, pre, r, post, side):
    """prod, max, min and logsumexp.  max and min mark their side store "not counted yet" (-1): only
    a derivative sweep needs the tie counts, and the first one counts them (count_ties), so a forward
    alone pays nothing for them."""
    for p in range(pre):
        base = a + p * r * post
        for q in range(post):
            out = o + p * post + q
            if op == OP_PROD:
                s = 1.0
                for k in range(r):
                    s *= buf[base + k * post + q]
                buf[out] = s
            elif op == OP_LOGSUMEXP:
                shift, log_s = shift_and_log_sum(buf, base + q, r, post)
                buf[out] = log_s + shift
            else:
                buf[out] = extremum_run(buf, base + q, r, post, op == OP_MIN)
                buf[side + p * post + q] = -1.0


@jit
def count_ties(buf, o, a, pre, r, post, side):
    """Fill a max/min's side store, unless an earlier sweep of this call did: per output, how many
    elements equal the extremum (0 when it is NaN).  One call per instruction, every output in one
    loop: a call per output costs more than the counting (Numba does not inline across kernels)."""
    if pre * post == 0 or buf[side] >= 0.0:
        return
    for p in range(pre):
        base = a + p * r * post
        for q in range(post):
            buf[side + p * post + q] = ties_run(buf, base + q, r, post, buf[o + p * post + q])


@jit
def prod_reverse(buf, N, run, r, step, g):
    # d prod / d x_k = product of all the others = prefix_k * suffix_k: exact with zeros
    prefix = np.empty(r)
    acc = 1.0
    for k in range(r):
        prefix[k] = acc
        acc *= buf[run + k * step]
    acc = 1.0
    for k in range(r - 1, -1, -1):
        pos = run + k * step
        buf[N + pos] += g * prefix[k] * acc
        acc *= buf[pos]


@jit
def cumsum_forward(t, o, a, pre, r, post):
    for p in range(pre):
        for q in range(post):
            s = 0.0
            for k in range(r):
                idx = p * r * post + k * post + q
                s += t[a + idx]
                t[o + idx] = s


@jit
def cumsum_reverse(t, o, a, pre, r, post):
    for p in range(pre):
        for q in range(post):
            s = 0.0
            for k in range(r - 1, -1, -1):  # adjoint of a prefix sum: suffix sum
                idx = p * r * post + k * post + q
                s += t[o + idx]
                t[a + idx] += s


# --------------------------------------------------------------------------
# compiled kernels
# --------------------------------------------------------------------------
@jit
def fields(ins, i):
    """A reduction or scan row: (opcode, output, operand, pre, r, post, side store)."""
    return ins[i, C_OP], ins[i, C_OUT], ins[i, C_A], ins[i, P_PRE], ins[i, P_R], ins[i, P_POST], ins[i, P_SIDE]


@jit
def forward(ins, i, aux, buf):
    op, o, a, pre, r, post, side = fields(ins, i)
    if op == OP_CUMSUM:
        cumsum_forward(buf, o, a, pre, r, post)
    elif op == OP_SUM and pre == 1 and post == 1:
        buf[o] = sum_contiguous(buf, a, r)
    elif op == OP_SUM:
        sum_forward(buf, o, a, pre, r, post)
    else:
        reduce_forward(op, buf, o, a, pre, r, post, side)


@jit
def reverse(ins, i, aux, buf, N):
    op, o, a, pre, r, post, side = fields(ins, i)
    init = (ins[i, C_FLAGS] & F_INIT_A) != 0
    if op == OP_SUM:
        sum_reverse(buf[N:], o, a, pre, r, post, init)
        return
    if init:
        zero(buf, N + a, ins[i, C_NA])
    if op == OP_CUMSUM:
        cumsum_reverse(buf[N:], o, a, pre, r, post)
        return
    if op == OP_MAX or op == OP_MIN:
        count_ties(buf, o, a, pre, r, post, side)
    for p in range(pre):
        for q in range(post):
            run = a + p * r * post + q  # the run of this output: run + k post, k < r
            out = o + p * post + q
            g = buf[N + out]
            z = buf[out]
            if op == OP_LOGSUMEXP:
                shift, log_s = softmax_offset(buf, run, r, post, z)
                softmax_reverse_run(buf, N, run, r, post, g, shift, log_s)
            elif op == OP_PROD:
                prod_reverse(buf, N, run, r, post, g)
            else:
                tied, other = tie_shares(buf[side + p * post + q])
                extremum_reverse_run(buf, N, run, r, post, z, tied * g, other * g)


@jit
def prod_tangent_run(buf, t, run, r, step, suffix):
    """Σ t_k prefix_k suffix_k: the exclusive products as the reverse sweep forms them (exact with zeros;
    beside an inf, 0 x inf is NaN as in the textbook JVP Σ t_k Π_{j≠k} x_j)."""
    sv = 1.0
    for k in range(r - 1, -1, -1):
        suffix[k] = sv
        sv *= buf[run + k * step]
    acc = 0.0
    pv = 1.0
    for k in range(r):
        pos = run + k * step
        term = t[pos] * (pv * suffix[k])
        acc = acc + term if k else term
        pv *= buf[pos]
    return acc


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    op, o, a, pre, r, post, side = fields(ins, i)
    if op == OP_MAX or op == OP_MIN:
        count_ties(buf, o, a, pre, r, post, side)
    suffix = np.empty(r if op == OP_PROD else 0)  # prod: the suffix products of one output
    for d in range(k):
        t = tan[d * NV : (d + 1) * NV]
        if op == OP_SUM:
            sum_forward(t, o, a, pre, r, post)
            continue
        if op == OP_CUMSUM:
            cumsum_forward(t, o, a, pre, r, post)
            continue
        for p in range(pre):
            for q in range(post):
                run = a + p * r * post + q
                out = o + p * post + q
                z = buf[out]
                if op == OP_LOGSUMEXP:
                    shift, log_s = softmax_offset(buf, run, r, post, z)
                    t[out] = softmax_tangent_run(buf, t, run, r, post, shift, log_s)
                elif op == OP_PROD:
                    t[out] = prod_tangent_run(buf, t, run, r, post, suffix)
                else:  # max / min: the mean tangent over the ties, as JAX
                    t[out] = extremum_tangent_run(buf, t, run, r, post, z) * tie_shares(buf[side + p * post + q])[0]


@jit
def prod_second_run(buf, tan, adj2, N, dN, run, r, step, g, gd, first, second, flat, scratch):
    """prod: the others' product o_k = prefix_k suffix_k in dual numbers (value, tangent): x̄ += z̄ o (first
    direction), x̄' += z̄' o + z̄ o' (second), else x̄' += z̄' o."""
    pv = 1.0
    pt = 0.0
    for k in range(r):
        scratch[2 * k] = pv
        scratch[2 * k + 1] = pt
        pos = run + k * step
        xt = tan[dN + pos] if second else 0.0
        pt = pt * buf[pos] + pv * xt if k else xt
        pv *= buf[pos]
    sv = 1.0
    st = 0.0
    for k in range(r - 1, -1, -1):
        pos = run + k * step
        ov = scratch[2 * k] * sv
        # an empty prefix or suffix is the constant 1: its tangent a structural zero
        prefix_term = scratch[2 * k + 1] * sv if k > 0 else 0.0
        ot = prefix_term + (scratch[2 * k] * st if k < r - 1 else 0.0)
        if second:
            if first:
                buf[N + pos] += g * ov
            curved = g * ot if r > 1 else 0.0  # prod of one factor: no second partial
            adj2[dN + pos] += (0.0 if flat else gd * ov) + curved
        else:
            adj2[dN + pos] += gd * ov
        xt = tan[dN + pos] if second else 0.0
        st = st * buf[pos] + sv * xt if k < r - 1 else xt
        sv *= buf[pos]


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    op, o, a, pre, r, post, side = fields(ins, i)
    if op == OP_SUM and post == 1:  # linear: the first-order rule on every adjoint, assigned on a first write
        init = (ins[i, C_FLAGS] & F_INIT_A) != 0
        for d in range(-1 if second else 0, k):
            sum_reverse(buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N], o, a, pre, r, post, init)
        return
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    if op == OP_SUM or op == OP_CUMSUM:  # linear: the first-order rule on every adjoint
        for d in range(-1 if second else 0, k):
            t = buf[N : 2 * N] if d < 0 else adj2[d * N : (d + 1) * N]
            if op == OP_SUM:
                sum_reverse(t, o, a, pre, r, post, False)
            else:
                cumsum_reverse(t, o, a, pre, r, post)
        return
    if op == OP_MAX or op == OP_MIN:
        count_ties(buf, o, a, pre, r, post, side)
    flat = second and (ins[i, C_FLAGS] & F_CONST_ADJOINT) != 0  # z̄' a structural zero: no z̄' term
    scratch = np.empty(2 * r if op == OP_PROD else 0)
    for p in range(pre):
        for q in range(post):
            run = a + p * r * post + q
            out = o + p * post + q
            z = buf[out]
            g = buf[N + out] if second else 0.0
            shift, log_s = softmax_offset(buf, run, r, post, z) if op == OP_LOGSUMEXP else (z, 0.0)
            for d in range(k):
                gd = adj2[d * N + out]
                first = second and d == 0
                if op == OP_LOGSUMEXP:
                    zt = tan[d * N + out] if second else 0.0
                    softmax_second_run(
                        buf, tan, adj2, N, d * N, run, r, post, g, gd, zt, shift, log_s, first, second, flat
                    )
                elif op == OP_PROD:
                    prod_second_run(buf, tan, adj2, N, d * N, run, r, post, g, gd, first, second, flat, scratch)
                else:  # max / min: piecewise linear
                    tied, other = tie_shares(buf[side + p * post + q])
                    extremum_second_run(buf, adj2, N, d * N, run, r, post, z, g, gd, tied, other, first, flat)


# --------------------------------------------------------------------------
# NumPy rules (the executor tier): the reduced axis is axis 1 of (pre, r, post)
# --------------------------------------------------------------------------
def _shift_and_log_sum(x):
    """logsumexp over axis 1 as (shift, log s): the maximum (0 where it is not finite) and the log of
    Σ exp(x - shift), both kept along axis 1."""
    m = np.max(x, axis=1, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0)
    return shift, np.log(np.sum(np.exp(x - shift), axis=1, keepdims=True))


def _logsumexp(x):
    shift, log_s = _shift_and_log_sum(x)
    return (log_s + shift)[:, 0]


_REDUCE = {
    "sum": lambda x: np.sum(x, axis=1),
    "prod": lambda x: np.prod(x, axis=1),
    "max": lambda x: np.max(x, axis=1),
    "min": lambda x: np.min(x, axis=1),
    "logsumexp": _logsumexp,
}


def _exclusive_products(x):
    """prod_{j != i} x_j along axis -2, exact with zeros (prefix times suffix, in the compiled order)."""
    ones = np.ones_like(x[..., :1, :])
    prefix = np.cumprod(np.concatenate([ones, x[..., :-1, :]], axis=-2), axis=-2)
    suffix = np.cumprod(np.concatenate([ones, x[..., :0:-1, :]], axis=-2), axis=-2)[..., ::-1, :]
    return prefix * suffix


def _exclusive_product_tangents(x, t):
    """The tangent of each exclusive product along t (dual numbers, prefix times suffix)."""
    r = x.shape[-2]
    shape = np.broadcast_shapes(x.shape, t.shape)
    pv, pt = np.ones(shape[:-2] + (shape[-1],)), np.zeros(shape[:-2] + (shape[-1],))
    prefix_v, prefix_t = np.empty(shape), np.empty(shape)
    for k in range(r):
        prefix_v[..., k, :], prefix_t[..., k, :] = pv, pt
        pt = pt * x[..., k, :] + pv * t[..., k, :] if k else np.broadcast_to(t[..., k, :], pt.shape).copy()
        pv = pv * x[..., k, :]
    sv, st = np.ones_like(pv), np.zeros_like(pt)
    out = np.empty(shape)
    for k in range(r - 1, -1, -1):  # an empty prefix or suffix is the constant 1, with no tangent term
        out[..., k, :] = (prefix_t[..., k, :] * sv if k > 0 else 0.0) + (prefix_v[..., k, :] * st if k < r - 1 else 0.0)
        st = st * x[..., k, :] + sv * t[..., k, :] if k < r - 1 else np.broadcast_to(t[..., k, :], st.shape).copy()
        sv = sv * x[..., k, :]
    return out


def _weights(row, buf):
    """dz/dx of the reduction z over axis 1 of x, shaped (pre, r, post): the weights that carry a
    tangent forward and an adjoint back."""
    op, o, n, a, na = row[:5]
    pre, r, post, side = row[P_PRE : P_SIDE + 1]
    x = buf[a : a + na].reshape(pre, r, post)
    z = buf[o : o + n].reshape(pre, 1, post)
    if op == OP_SUM:
        return np.ones_like(x)
    if op == OP_PROD:
        return _exclusive_products(x)
    if op == OP_LOGSUMEXP:  # d logsumexp = softmax, exact where z is too large to subtract (softmax_offset)
        with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
            shift, log_s = _shift_and_log_sum(x)
            exact = np.abs(z) > SOFTMAX_EXACT_ABOVE
            return np.exp((x - np.where(exact, shift, z)) - np.where(exact, log_s, 0.0))
    count = buf[side : side + n].reshape(pre, 1, post)  # max / min: ties share equally, as JAX
    if np.any(count < 0):  # not counted yet (as the compiled sweeps: by the first that asks)
        count[...] = np.sum(x == z, axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, (x == z) / count, np.nan)


def numpy_forward(row, aux, buf):
    op, o, n, a, na = row[:5]
    pre, r, post, side = row[P_PRE : P_SIDE + 1]
    x = buf[a : a + na].reshape(pre, r, post)
    if op == OP_CUMSUM:
        buf[o : o + n] = np.cumsum(x, axis=1).reshape(-1)
        return
    z = _REDUCE[_NAMES[op]](x)
    buf[o : o + n] = z.reshape(-1)
    if op in (OP_MAX, OP_MIN):
        buf[side : side + n] = -1.0  # the tie counts: not counted yet


def numpy_tangent(row, aux, buf, T):
    op, o, n, a, na = row[:5]
    pre, r, post = row[P_PRE : P_POST + 1]
    k = T.shape[0]
    t = T[:, a : a + na].reshape(k, pre, r, post)
    if op == OP_CUMSUM:
        T[:, o : o + n] = np.cumsum(t, axis=2).reshape(k, n)
    else:
        T[:, o : o + n] = np.sum(_weights(row, buf) * t, axis=2).reshape(k, n)


def numpy_reverse(row, aux, buf, G, G2, T):
    op, o, n, a, na = row[:5]
    pre, r, post = row[P_PRE : P_POST + 1]
    adjoints = linear_planes(row, G, G2, T)
    if op == OP_CUMSUM:
        for A in adjoints:  # adjoint of a prefix sum: suffix sum
            g = A[:, o : o + n].reshape(A.shape[0], pre, r, post)
            A[:, a : a + na] += np.cumsum(g[:, :, ::-1], axis=2)[:, :, ::-1].reshape(A.shape[0], na)
        return
    w = _weights(row, buf)
    if T is not None and op == OP_LOGSUMEXP:  # x̄' += z̄ s (x' - z')
        t = T[:, a : a + na].reshape(T.shape[0], pre, r, post)
        zt = T[:, o : o + n].reshape(T.shape[0], pre, 1, post)
        g = G[:, o : o + n].reshape(1, pre, 1, post)
        G2[:, a : a + na] += (g * w * (t - zt)).reshape(G2.shape[0], na)
    elif T is not None and op == OP_PROD:  # x̄' += z̄ (tangent of the exclusive product)
        t = T[:, a : a + na].reshape(T.shape[0], pre, r, post)
        g = G[:, o : o + n].reshape(1, pre, 1, post)
        x = buf[a : a + na].reshape(pre, r, post)
        if r > 1:  # prod of one factor: no second partial, no term
            G2[:, a : a + na] += (g * _exclusive_product_tangents(x, t)).reshape(G2.shape[0], na)
    for A in adjoints:
        g = A[:, o : o + n].reshape(A.shape[0], pre, 1, post)
        A[:, a : a + na] += (g * w).reshape(A.shape[0], na)


_NAMES = {opcode(name): name for name in _REDUCE}


# --------------------------------------------------------------------------
# declarations, saved form, listing, JAX
# --------------------------------------------------------------------------
def side_size(prim, params):
    return params["pre"] * params["post"] if prim.name in TIES else 0


def validate(prim, row, n_values, pool_end):
    n, na = row[C_N], row[C_NA]
    pre, r, post, side = row[P_PRE : P_SIDE + 1]
    if min(pre, r, post) < 0:
        return f"bad extents {pre}x{r}x{post}"
    if na != pre * r * post:
        return f"operand of size {na}, extents {pre}x{r}x{post}"
    if n != (pre * r * post if prim.kind == "scan" else pre * post):
        return f"output of size {n}, extents {pre}x{r}x{post}"
    if prim.name in ("max", "min", "logsumexp") and r == 0 and n > 0:
        return "a max/min/logsumexp over zero elements"
    if prim.name in TIES:
        if not (0 <= side and side + n <= n_values):
            return f"side store [{side}, {side + n}) outside the {n_values} values"
    elif side:
        return f"a side store at {side} for a primitive that keeps none"
    return None


def describe(prim, params):
    return f"[{params['pre']}x{params['r']}x{params['post']}]"


def jax_call(jnp, fn, operands, params, index):
    return fn(operands[0], params["pre"], params["r"], params["post"])
