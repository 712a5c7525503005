"""The elementwise family: unary, binary and comparison primitives.

Their math is the declarations' own: the compiled kernels call the switches that
``fasttape.codegen`` generates from the formulas (through the run loops of
``fasttape.runs``), and the NumPy rules evaluate the same formulas on arrays
(``FORMULAS``).  An operand of size 1 is broadcast over the run (stride 0).
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from ..layout import (
    ARITHMETIC,
    BINARY,
    C_A,
    C_B,
    C_FLAGS,
    C_N,
    C_NA,
    C_NB,
    C_NC,
    C_OP,
    C_OUT,
    C_P0,
    CURVATURE,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    F_INIT_C,
    N_PARAMS,
    SMALL_RUN,
    UNARY,
    linear_planes,
)
from ..loops import zero_first_writes
from ..primitives import PRIMITIVES
from ..runs import (
    VECTOR_BINARY,
    VECTOR_RUN,
    VECTOR_UNARY,
    accumulate_scaled,
    arithmetic_forward,
    arithmetic_reverse,
    binary_partials,
    binary_partials_into,
    binary_second,
    binary_value,
    combined_into,
    numpy_binary_run,
    numpy_unary_run,
    partials_pay_off,
    reverse_unary_run,
    scaled_into,
    second_binary,
    second_terms,
    second_unary,
    tangent_binary,
    tangent_unary,
    unary_forward_run,
    unary_partial,
    unary_partials_into,
    unary_reverse_run,
    unary_second,
    unary_value,
)
from ..scalar_math import CONSTANTS

KINDS = ("unary", "binary", "comparison")
PARAMS = ()


# --------------------------------------------------------------------------
# compiled kernels
# --------------------------------------------------------------------------
@jit
def forward(ins, i, aux, buf):
    op = ins[i, C_OP]
    o = ins[i, C_OUT]
    n = ins[i, C_N]
    a = ins[i, C_A]
    if UNARY[op]:
        if n >= VECTOR_RUN and VECTOR_UNARY[op]:
            numpy_unary_run(op, buf[o : o + n], buf[a : a + n])
        elif n >= 32:
            unary_forward_run(op, buf[o : o + n], buf[a : a + n])
        else:
            for j in range(n):
                buf[o + j] = unary_value(op, buf[a + j])
        return
    b = ins[i, C_B]
    sa = 1 if ins[i, C_NA] > 1 else 0
    sb = 1 if ins[i, C_NB] > 1 else 0
    if n >= VECTOR_RUN and VECTOR_BINARY[op]:
        numpy_binary_run(op, buf[o : o + n], buf[a : a + n * sa + (1 - sa)], buf[b : b + n * sb + (1 - sb)])
    elif ARITHMETIC[op] and n >= 32:
        arithmetic_forward(op, buf, o, a, b, n, sa, sb)
    else:
        for j in range(n):
            buf[o + j] = binary_value(op, buf[a + j * sa], buf[b + j * sb])


@jit
def reverse(ins, i, aux, buf, N):
    op = ins[i, C_OP]
    o = ins[i, C_OUT]
    n = ins[i, C_N]
    a = ins[i, C_A]
    flags = ins[i, C_FLAGS]
    ia = (flags & F_INIT_A) != 0
    if UNARY[op]:
        if n >= 32:
            unary_reverse_run(op, buf[N + o : N + o + n], buf[N + a : N + a + n], buf[a : a + n], buf[o : o + n], ia)
        else:
            for j in range(n):
                v = buf[N + o + j] * unary_partial(op, buf[a + j], buf[o + j])
                buf[N + a + j] = v if ia else buf[N + a + j] + v
        return
    b = ins[i, C_B]
    ga = (flags & F_GRAD_A) != 0
    gb = (flags & F_GRAD_B) != 0
    ib = (flags & F_INIT_B) != 0
    sa = 1 if ins[i, C_NA] > 1 else 0
    sb = 1 if ins[i, C_NB] > 1 else 0
    if ARITHMETIC[op] and n >= 32:
        arithmetic_reverse(op, buf, N, o, a, b, n, sa, sb, ga, gb, ia, ib)
        return
    if ia and not sa:  # a scalar operand collects n contributions
        buf[N + a] = 0.0
        ia = False
    if ib and not sb:
        buf[N + b] = 0.0
        ib = False
    for j in range(n):
        g = buf[N + o + j]
        dx, dy = binary_partials(op, buf[a + j * sa], buf[b + j * sb], buf[o + j])
        if ga:
            pa = N + a + j * sa
            buf[pa] = g * dx if ia else buf[pa] + g * dx
        if gb:
            pb = N + b + j * sb
            buf[pb] = g * dy if ib else buf[pb] + g * dy


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    op = ins[i, C_OP]
    o = ins[i, C_OUT]
    n = ins[i, C_N]
    a = ins[i, C_A]
    if UNARY[op] and n < SMALL_RUN:
        for j in range(n):
            d1 = unary_partial(op, buf[a + j], buf[o + j])
            for d in range(k):
                tan[d * NV + o + j] = d1 * tan[d * NV + a + j]
        return
    if UNARY[op]:
        x = buf[a : a + n]
        z = buf[o : o + n]
        if partials_pay_off(op, k):  # op'(x) once, then one multiply per direction
            d1 = np.empty(n)
            unary_partials_into(op, x, z, d1)
            for d in range(k):
                scaled_into(tan[d * NV + o : d * NV + o + n], d1, tan[d * NV + a : d * NV + a + n])
            return
        for d in range(k):
            tangent_unary(op, x, z, tan[d * NV + a : d * NV + a + n], tan[d * NV + o : d * NV + o + n])
        return
    flags = ins[i, C_FLAGS]
    ga = (flags & F_GRAD_A) != 0
    gb = (flags & F_GRAD_B) != 0
    b = ins[i, C_B]
    sa = 1 if ins[i, C_NA] > 1 else 0
    sb = 1 if ins[i, C_NB] > 1 else 0
    if n < SMALL_RUN:
        for j in range(n):
            dx, dy = binary_partials(op, buf[a + j * sa], buf[b + j * sb], buf[o + j])
            for d in range(k):
                t = 0.0
                if ga:
                    t += dx * tan[d * NV + a + j * sa]
                if gb:
                    t += dy * tan[d * NV + b + j * sb]
                tan[d * NV + o + j] = t
        return
    la = ins[i, C_NA]
    lb = ins[i, C_NB]
    x = buf[a : a + la]
    y = buf[b : b + lb]
    z = buf[o : o + n]
    if partials_pay_off(op, k):  # the partials once, then one multiply-add per direction
        dx = np.empty(n)
        dy = np.empty(n)
        binary_partials_into(op, x, y, z, n, sa, sb, dx, dy)
        for d in range(k):
            base = d * NV
            combined_into(tan[base + o : base + o + n], dx, tan[base + a : base + a + la], sa, dy,
                          tan[base + b : base + b + lb], sb, n, ga, gb)  # fmt: skip
        return
    for d in range(k):
        base = d * NV
        tangent_binary(
            op, x, y, z, tan[base + a : base + a + la], tan[base + b : base + b + lb],
            tan[base + o : base + o + n], n, sa, sb, ga, gb,
        )  # fmt: skip


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    op = ins[i, C_OP]
    o = ins[i, C_OUT]
    n = ins[i, C_N]
    a = ins[i, C_A]
    b = ins[i, C_B]
    flags = ins[i, C_FLAGS]
    ga = (flags & F_GRAD_A) != 0
    gb = (flags & F_GRAD_B) != 0
    ia = (flags & F_INIT_A) != 0
    ib = (flags & F_INIT_B) != 0
    flat = second and (flags & F_CONST_ADJOINT) != 0  # z̄' is a structural zero: no z̄' f' term
    xx, xy, yy = CURVATURE[op, 0], CURVATURE[op, 1], CURVATURE[op, 2]
    if not (n >= SMALL_RUN and (BINARY[op] or second)):  # the index loops accumulate: a first write starts at 0
        zero_first_writes(ins, i, buf, adj2, N, k, second)
    if UNARY[op] and n < SMALL_RUN:
        for j in range(n):
            x = buf[a + j]
            z = buf[o + j]
            d1 = unary_partial(op, x, z)
            if second:
                g = buf[N + o + j]
                buf[N + a + j] += g * d1
                d2 = unary_second(op, x, z, d1)
                for d in range(k):
                    adj2[d * N + a + j] += second_terms(flat, adj2[d * N + o + j], d1, g, xx, d2, tan[d * N + a + j],
                                                        False, 0.0, 0.0)  # fmt: skip
            else:
                for d in range(k):
                    adj2[d * N + a + j] += adj2[d * N + o + j] * d1
    elif n < SMALL_RUN:
        sa = 1 if ins[i, C_NA] > 1 else 0
        sb = 1 if ins[i, C_NB] > 1 else 0
        for j in range(n):
            pa = a + j * sa
            pb = b + j * sb
            x = buf[pa]
            y = buf[pb]
            z = buf[o + j]
            dx, dy = binary_partials(op, x, y, z)
            if second:
                g = buf[N + o + j]
                if ga:
                    buf[N + pa] += g * dx
                if gb:
                    buf[N + pb] += g * dy
                dxx, dxy, dyy = binary_second(op, x, y, z)
                for d in range(k):
                    gd = adj2[d * N + o + j]
                    if ga:
                        adj2[d * N + pa] += second_terms(flat, gd, dx, g, xx, dxx, tan[d * N + pa], xy and gb, dxy,
                                                         tan[d * N + pb])  # fmt: skip
                    if gb:
                        adj2[d * N + pb] += second_terms(flat, gd, dy, g, yy, dyy, tan[d * N + pb], xy and ga, dxy,
                                                         tan[d * N + pa])  # fmt: skip
            else:
                for d in range(k):
                    gd = adj2[d * N + o + j]
                    if ga:
                        adj2[d * N + pa] += gd * dx
                    if gb:
                        adj2[d * N + pb] += gd * dy
    elif UNARY[op]:
        x = buf[a : a + n]
        z = buf[o : o + n]
        g = buf[N + o : N + o + n]
        gx = buf[N + a : N + a + n]
        if not second and partials_pay_off(op, k):  # k seeds: f' once, then one multiply-add per seed
            d1 = np.empty(n)
            unary_partials_into(op, x, z, d1)
            for d in range(k):
                accumulate_scaled(adj2[d * N + a : d * N + a + n], d1, adj2[d * N + o : d * N + o + n])
            return
        for d in range(k):
            base = d * N
            if second:
                tx = tan[base + a : base + a + n]
                second_unary(
                    op, x, z, g, gx, adj2[base + o : base + o + n], adj2[base + a : base + a + n], tx, d == 0, ia, flat
                )
            else:  # plain reverse on the k-buffer: x̄ += z̄ f'
                reverse_unary_run(op, x, z, adj2[base + o : base + o + n], adj2[base + a : base + a + n])
    else:
        sa = 1 if ins[i, C_NA] > 1 else 0
        sb = 1 if ins[i, C_NB] > 1 else 0
        la = ins[i, C_NA]
        lb = ins[i, C_NB]
        x = buf[a : a + la]
        y = buf[b : b + lb]
        z = buf[o : o + n]
        g = buf[N + o : N + o + n]
        gx = buf[N + a : N + a + la]
        gy = buf[N + b : N + b + lb]
        for d in range(k):
            base = d * N
            tx = tan[base + a : base + a + la] if second else x
            ty = tan[base + b : base + b + lb] if second else y
            second_binary(
                op, x, y, z, g, gx, gy, adj2[base + o : base + o + n], adj2[base + a : base + a + la],
                adj2[base + b : base + b + lb], tx, ty, n, sa, sb, ga, gb, second and d == 0, second, ia, ib, flat,
            )  # fmt: skip


# --------------------------------------------------------------------------
# NumPy rules (the executor tier): the declarations' formulas on arrays
# --------------------------------------------------------------------------
def _special(name, *fixed):
    def fn(x):
        import scipy.special  # only the programs that use these functions pay for the import

        return getattr(scipy.special, name)(*fixed, x)

    return fn


def _polygamma(order):
    """ψ (order 0), ψ₁, ψ₂ with the compiled functions' values (scalar_math) at -inf and at the poles
    0, -1, ...: NaN, but +inf for ψ₁ at a pole (where SciPy gives ±inf and -inf)."""
    special = _special("digamma") if order == 0 else _special("polygamma", order)

    def fn(x):
        with np.errstate(invalid="ignore"):
            pole = (x <= 0.0) & (x == np.floor(x)) & (x > -np.inf)
        return np.where(pole, np.inf if order == 1 else np.nan, np.where(x == -np.inf, np.nan, special(x)))

    return fn


def _polygamma_n(n, x):
    """ψ⁽ⁿ⁾(x) on arrays with the compiled function's conventions (scalar_math.polygamma): NaN for an order
    that is not a non-negative integer, at -inf, and at the poles for even n; +inf there for odd n."""
    n, x = np.broadcast_arrays(np.asarray(n, dtype=np.float64), np.asarray(x, dtype=np.float64))
    out = np.full(x.shape, np.nan)
    with np.errstate(all="ignore"):
        valid = (n >= 0) & (n == np.floor(n))
        for order in np.unique(n[valid]):
            at = valid & (n == order)
            out[at] = _polygamma(int(order))(x[at]) if order <= 2 else _special("polygamma", int(order))(x[at])
            if order > 2:
                pole = at & (x <= 0.0) & (x == np.floor(x)) & (x > -np.inf)
                out[pole] = np.inf if order % 2 == 1 else np.nan
                out[at & (x == -np.inf)] = np.nan
    return out


# name -> its meaning on arrays (the same names as scalar_math.VOCABULARY)
ARRAY_VOCABULARY = {
    "where": np.where,
    "digamma": _polygamma(0),
    "trigamma": _polygamma(1),
    "tetragamma": _polygamma(2),
    "erf": _special("erf"),
    "lgamma": _special("gammaln"),
    "floor_mod": np.remainder,
    "floor_quotient": np.floor_divide,
    "fmod": np.fmod,
    "erfc": _special("erfc"),
    "polygamma": _polygamma_n,
    "erfcx": _special("erfcx"),
    "log_ndtr": _special("log_ndtr"),
    "ndtri": _special("ndtri"),
    **{name: getattr(np, name) for name in (
        "abs", "sign", "sqrt", "cbrt", "floor", "ceil", "rint", "maximum", "minimum", "exp", "exp2", "expm1", "log",
        "log2", "log10", "log1p", "sin", "cos", "tan", "arcsin", "arccos", "arctan", "arctan2", "sinh", "cosh",
        "tanh", "arcsinh", "arccosh", "arctanh", "hypot", "logaddexp")},
    **CONSTANTS,
}  # fmt: skip


def _formulas():
    """Per elementwise opcode: (value, first partials, second partials) as functions of arrays."""
    table = {}
    for p in PRIMITIVES:
        if not p.elementwise:
            continue

        def fn(args, exprs):
            return eval(f"lambda {args}: ({', '.join(exprs)},)", dict(ARRAY_VOCABULARY))  # noqa: S307

        if p.kind == "unary":
            table[p.opcode] = (fn("x", (p.value,)), fn("x, z", p.d1), fn("x, z, d1", p.d2))
        else:
            table[p.opcode] = (fn("x, y", (p.value,)), fn("x, y, z", p.d1), fn("x, y, z, dx, dy", p.d2))
    return table


FORMULAS = _formulas()


def add_to(target, pos, size, contribution, n):
    """target[..., pos:pos+size] += contribution (shape (..., n)); a size-1 operand collects the sum."""
    if size == n:
        target[..., pos : pos + size] += contribution
    else:
        target[..., pos : pos + 1] += np.sum(np.broadcast_to(contribution, target.shape[:-1] + (n,)), -1)[..., None]


def numpy_forward(row, aux, buf):
    op, o, n, a, na, b, nb = row[:7]
    if UNARY[op]:
        buf[o : o + n] = FORMULAS[op][0](buf[a : a + na])[0]
    else:
        buf[o : o + n] = FORMULAS[op][0](buf[a : a + na], buf[b : b + nb])[0]


def numpy_tangent(row, aux, buf, T):
    op, o, n, a, na, b, nb = row[:7]
    flags = row[C_FLAGS]
    if UNARY[op]:
        (d,) = FORMULAS[op][1](buf[a : a + na], buf[o : o + n])
        T[:, o : o + n] = d * T[:, a : a + na]
        return
    dx, dy = FORMULAS[op][1](buf[a : a + na], buf[b : b + nb], buf[o : o + n])
    t = np.zeros((T.shape[0], n))
    if flags & F_GRAD_A:
        t += dx * T[:, a : a + na]
    if flags & F_GRAD_B:
        t += dy * T[:, b : b + nb]
    T[:, o : o + n] = t


def numpy_reverse(row, aux, buf, G, G2, T):
    op, o, n, a, na, b, nb = row[:7]
    flags = row[C_FLAGS]
    ga, gb = flags & F_GRAD_A, flags & F_GRAD_B
    adjoints = linear_planes(row, G, G2, T)
    xx, xy, yy = CURVATURE[op]  # a structurally zero second partial forms no term (no 0 x inf)
    if UNARY[op]:
        x, z = buf[a : a + na], buf[o : o + n]
        (d,) = FORMULAS[op][1](x, z)
        for A in adjoints:
            A[:, a : a + na] += A[:, o : o + n] * d
        if T is not None and xx:  # x̄' += z̄ f'' x'  (the z̄' f' term came with the first-order rule)
            (d2,) = FORMULAS[op][2](x, z, d)
            G2[:, a : a + na] += G[:, o : o + n] * d2 * T[:, a : a + na]
        return
    x, y, z = buf[a : a + na], buf[b : b + nb], buf[o : o + n]
    dx, dy = FORMULAS[op][1](x, y, z)
    if T is not None and (xx or xy or yy):  # only active operands carry tangents: a passive one adds no term
        dxx, dxy, dyy = FORMULAS[op][2](x, y, z, dx, dy)
        g = G[:, o : o + n]
        tx = T[:, a : a + na] if ga else None
        ty = T[:, b : b + nb] if gb else None
        for pos, size, own, d_own, own_curved, other in ((a, na, tx, dxx, xx, ty), (b, nb, ty, dyy, yy, tx)):
            if own is None:
                continue
            terms = ([d_own * own] if own_curved else []) + ([dxy * other] if xy and other is not None else [])
            if terms:
                add_to(G2, pos, size, g * sum(terms), n)
    for A in adjoints:
        g = A[:, o : o + n]
        if ga:
            add_to(A, a, na, g * dx, n)
        if gb:
            add_to(A, b, nb, g * dy, n)


# --------------------------------------------------------------------------
# declarations, saved form, listing, JAX
# --------------------------------------------------------------------------
def side_size(prim, params):
    return 0


def validate(prim, row, n_values, pool_end):
    """Operands of the output's size, or of size 1 (broadcast); no parameters."""
    n, na, nb, nc, flags = row[C_N], row[C_NA], row[C_NB], row[C_NC], row[C_FLAGS]
    if any(row[C_P0 : C_P0 + N_PARAMS]):
        return f"elementwise instruction with parameters {tuple(row[C_P0 : C_P0 + N_PARAMS])}"
    if prim.arity == 1 and na != n:
        return f"operand of size {na} for an output of size {n}"
    for nx, init in zip((na, nb, nc)[: prim.arity], (F_INIT_A, F_INIT_B, F_INIT_C)):
        if nx not in (n, 1) and not (n == 0 and nx == 0):
            return f"operand of size {nx} for an output of size {n} (must be {n} or 1)"
        if nx == 0 and flags & init:  # the reverse sweep would write the one element at x
            return "an initialising write into an empty operand"
    return None


def describe(prim, params):
    return ""


def jax_call(jnp, fn, operands, params, index):
    return fn(*operands)
