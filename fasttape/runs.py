"""Compiled loops over runs of one elementwise primitive, shared by the elementwise family
(``fasttape.families.elementwise``) and the fused regions (``fasttape.regions``).

Each loop takes slices of the buffer (indexed from zero, so LLVM vectorises them) and a
stride of 0 or 1 per operand (0: a scalar broadcast over the run).  The math is the
declarations' own (``fasttape.codegen``); add / subtract / multiply, square and negative
have loops of their own; long runs of transcendental functions go to NumPy's SIMD loops.
"""

from __future__ import annotations

import warnings

import numba
import numpy as np

from .codegen import ELEMENTWISE
from .jit import jit
from .layout import ARITHMETIC, CURVATURE, OP_ADD, OP_LOGADDEXP, OP_MULTIPLY, OP_NEGATIVE, OP_SQUARE, OP_SUBTRACT, group
from .primitives import PRIMITIVES

unary_value = ELEMENTWISE.unary_value
unary_partial = ELEMENTWISE.unary_partial
unary_second = ELEMENTWISE.unary_second
binary_value = ELEMENTWISE.binary_value
binary_partials = ELEMENTWISE.binary_partials
binary_second = ELEMENTWISE.binary_second
unary_forward_run = ELEMENTWISE.unary_forward_run
unary_reverse_run = ELEMENTWISE.unary_reverse_run

# --------------------------------------------------------------------------
# long elementwise runs of transcendental functions: NumPy's SIMD loops
# --------------------------------------------------------------------------
# Numba's math calls are scalar libm (3-17 ns per element); NumPy's loops for exp, log, tanh... are
# vectorised (0.5-1.3 ns).  A forward run at least VECTOR_RUN long leaves compiled code for one NumPy
# call (objmode, ~2 µs); NumPy releases the GIL inside its loops.
VECTOR_RUN = 4096
warnings.filterwarnings("ignore", message=".*Code running in object mode won.t allow parallel")


# the declarations' ``vector`` functions, by opcode
_NUMPY_UNARY = {p.opcode: getattr(np, p.vector) for p in PRIMITIVES if p.kind == "unary" and p.vector}
_NUMPY_BINARY = {p.opcode: getattr(np, p.vector) for p in PRIMITIVES if p.kind == "binary" and p.vector}


def numpy_unary(op, x, z):
    """z = op(x) by NumPy (called from compiled code through objmode)."""
    with np.errstate(all="ignore"):
        _NUMPY_UNARY[op](x, out=z)


def numpy_binary(op, x, y, z):
    """z = op(x, y) by NumPy; x or y may have length 1 (broadcast)."""
    with np.errstate(all="ignore"):
        if op == OP_LOGADDEXP:  # max + log1p(exp(-|x - y|)): three SIMD loops instead of one scalar one
            np.subtract(x, y, out=z)
            np.abs(z, out=z)
            np.negative(z, out=z)
            np.exp(z, out=z)
            np.log1p(z, out=z)
            z += np.maximum(x, y)
            odd = ~np.isfinite(z)  # infinities (and NaN): NumPy's own rules
            if odd.any():
                z[odd] = np.logaddexp(np.broadcast_to(x, z.shape)[odd], np.broadcast_to(y, z.shape)[odd])
        else:
            _NUMPY_BINARY[op](x, y, out=z)


VECTOR_UNARY = group(lambda p: p.opcode in _NUMPY_UNARY)
VECTOR_BINARY = group(lambda p: p.opcode in _NUMPY_BINARY)


@jit
def numpy_unary_run(op, z, x):
    with numba.objmode():
        numpy_unary(op, x, z)


@jit
def numpy_binary_run(op, z, x, y):
    with numba.objmode():
        numpy_binary(op, x, y, z)


@jit
def arithmetic_forward(op, buf, o, a, b, n, sa, sb):
    """add / subtract / multiply on a run of the buffer (operands of stride 0 or 1)."""
    arithmetic_slices(op, buf[o : o + n], buf[a : a + n * sa + (1 - sa)], buf[b : b + n * sb + (1 - sb)], sa, sb)


@jit
def arithmetic_slices(op, z, x, y, sa, sb):
    """add / subtract / multiply: one tight loop per operand pattern.

    The runs are slices, so that the loops index from zero (no negative-index
    wraparound checks), which lets LLVM vectorise them.
    """
    n = z.size
    if sa and sb:
        if op == OP_ADD:
            for j in range(n):
                z[j] = x[j] + y[j]
        elif op == OP_SUBTRACT:
            for j in range(n):
                z[j] = x[j] - y[j]
        else:
            for j in range(n):
                z[j] = x[j] * y[j]
    elif sa:
        c = y[0]
        if op == OP_ADD:
            for j in range(n):
                z[j] = x[j] + c
        elif op == OP_SUBTRACT:
            for j in range(n):
                z[j] = x[j] - c
        else:
            for j in range(n):
                z[j] = x[j] * c
    else:
        c = x[0]
        if op == OP_ADD:
            for j in range(n):
                z[j] = c + y[j]
        elif op == OP_SUBTRACT:
            for j in range(n):
                z[j] = c - y[j]
        else:
            for j in range(n):
                z[j] = c * y[j]


@jit(inline="always")
def arithmetic_partials(op, x, y, z):
    """binary_partials for the scalar code's three opcodes."""
    if op == OP_MULTIPLY:
        return binary_partials(OP_MULTIPLY, x, y, z)
    if op == OP_ADD:
        return binary_partials(OP_ADD, x, y, z)
    return binary_partials(OP_SUBTRACT, x, y, z)


@jit(inline="always")
def arithmetic_second(op, x, y, z):
    """binary_second for the scalar code's three opcodes."""
    if op == OP_MULTIPLY:
        return binary_second(OP_MULTIPLY, x, y, z)
    return 0.0, 0.0, 0.0  # add and subtract are linear


@jit
def accumulate_operand(op, g, dx, other, n, sx, so, sign, init):
    """Adjoint of one operand of add / subtract / multiply over a run of n."""
    # d(x + y) = (1, 1); d(x - y) = (1, -1); d(x y) = (y, x)
    if sx and init:
        if op == OP_MULTIPLY:
            if so:
                for j in range(n):
                    dx[j] = g[j] * other[j]
            else:
                c = other[0]
                for j in range(n):
                    dx[j] = g[j] * c
        elif sign > 0.0:
            for j in range(n):
                dx[j] = g[j]
        else:
            for j in range(n):
                dx[j] = -g[j]
    elif sx:
        if op == OP_MULTIPLY:
            if so:
                for j in range(n):
                    dx[j] += g[j] * other[j]
            else:
                c = other[0]
                for j in range(n):
                    dx[j] += g[j] * c
        elif sign > 0.0:
            for j in range(n):
                dx[j] += g[j]
        else:
            for j in range(n):
                dx[j] -= g[j]
    else:  # a scalar operand used n times: sum the contributions
        acc = 0.0
        if op == OP_MULTIPLY:
            for j in range(n):
                acc += g[j] * other[j * so]
        else:
            for j in range(n):
                acc += g[j]
        dx[0] = sign * acc if init else dx[0] + sign * acc


@jit
def arithmetic_reverse(op, buf, N, o, a, b, n, sa, sb, ga, gb, ia, ib):
    g = buf[N + o : N + o + n]
    la = n * sa + (1 - sa)
    lb = n * sb + (1 - sb)
    sign_b = -1.0 if op == OP_SUBTRACT else 1.0
    if ga:
        accumulate_operand(op, g, buf[N + a : N + a + la], buf[b : b + lb], n, sa, sb, 1.0, ia)
    if gb:
        accumulate_operand(op, g, buf[N + b : N + b + lb], buf[a : a + la], n, sb, sa, sign_b, ib)


@jit
def binary_slices(op, z, x, y, sx, sy):
    if ARITHMETIC[op]:
        arithmetic_slices(op, z, x, y, sx, sy)
    else:
        for j in range(z.size):
            z[j] = binary_value(op, x[j * sx], y[j * sy])


@jit
def binary_reverse_slices(op, g, x, y, z, sx, sy, gx, gy, ga, gb, ia, ib):
    """g times the partials of a binary instruction into gx, gy (stride sx, sy): assigned where
    ``ia`` / ``ib`` (the operand's first writer, never a scalar), else accumulated."""
    if ARITHMETIC[op]:
        n = g.size
        if ga:
            accumulate_operand(op, g, gx, y, n, sx, sy, 1.0, ia)
        if gb:
            accumulate_operand(op, g, gy, x, n, sy, sx, -1.0 if op == OP_SUBTRACT else 1.0, ib)
        return
    if ia and ga:  # a first writer of a (sharing a slot with b, b then adds to it)
        for j in range(g.size):
            gx[j] = 0.0
    if ib and gb:
        for j in range(g.size):
            gy[j] = 0.0
    for j in range(g.size):
        dx, dy = binary_partials(op, x[j * sx], y[j * sy], z[j])
        if ga:
            gx[j * sx] += g[j] * dx
        if gb:
            gy[j * sy] += g[j] * dy


@jit
def tangent_unary(op, x, z, ta, to):
    """Tangent run of z = op(x): to = op'(x) ta."""
    if op == OP_SQUARE:
        for j in range(x.size):
            to[j] = 2.0 * x[j] * ta[j]
    elif op == OP_NEGATIVE:
        for j in range(x.size):
            to[j] = -ta[j]
    else:
        for j in range(x.size):
            to[j] = unary_partial(op, x[j], z[j]) * ta[j]


@jit
def unary_partials_into(op, x, z, out):
    """out = op'(x), once for every direction of a k-direction tangent (not once per direction)."""
    for j in range(x.size):
        out[j] = unary_partial(op, x[j], z[j])


@jit
def scaled_into(to, d1, ta):
    """to = d1 ta: one direction of a unary tangent from its precomputed partials (a vectorised loop)."""
    for j in range(to.size):
        to[j] = d1[j] * ta[j]


@jit
def accumulate_scaled(dst, d1, g):
    """dst += d1 g: one seed of a unary k-seed reverse from its precomputed partials."""
    for j in range(dst.size):
        dst[j] += d1[j] * g[j]


@jit
def binary_partials_into(op, x, y, z, n, sa, sb, dx, dy):
    """(dx, dy) = (f_x, f_y) of z = op(x, y) on a run, once for every direction."""
    for j in range(n):
        dx[j], dy[j] = binary_partials(op, x[j * sa], y[j * sb], z[j])


@jit
def combined_into(to, dx, tx, sa, dy, ty, sb, n, ga, gb):
    """to = dx tx + dy ty (active operands only): one direction of a binary tangent from its partials."""
    if ga and gb and sa and sb:
        for j in range(n):
            to[j] = dx[j] * tx[j] + dy[j] * ty[j]
    elif ga and sa:
        for j in range(n):
            to[j] = dx[j] * tx[j] + (dy[j] * ty[0] if gb else 0.0)
    elif gb and sb:
        for j in range(n):
            to[j] = (dx[j] * tx[0] if ga else 0.0) + dy[j] * ty[j]
    else:
        for j in range(n):
            t = 0.0
            if ga:
                t += dx[j] * tx[j * sa]
            if gb:
                t += dy[j] * ty[j * sb]
            to[j] = t


@jit
def partials_pay_off(op, k):
    """Whether a k-direction tangent should compute the partials once (a pass of its own) rather than
    inside each direction's loop: for several directions of anything but add, subtract, multiply,
    negative and square, whose partials are the operands themselves or constants."""
    return k > 1 and not ARITHMETIC[op] and op != OP_NEGATIVE and op != OP_SQUARE


@jit
def tangent_binary(op, x, y, z, tx, ty, to, n, sa, sb, ga, gb):
    """Tangent run of z = op(x, y): to = f_x tx + f_y ty (active operands only)."""
    if ARITHMETIC[op] and sa and sb and ga and gb:
        if op == OP_ADD:
            for j in range(n):
                to[j] = tx[j] + ty[j]
        elif op == OP_SUBTRACT:
            for j in range(n):
                to[j] = tx[j] - ty[j]
        else:
            for j in range(n):
                to[j] = y[j] * tx[j] + x[j] * ty[j]
        return
    if ARITHMETIC[op] and ((ga and not gb and sa) or (gb and not ga and sb)):
        # one active full-length operand against a passive one
        if ga:
            if op == OP_MULTIPLY and not sb:
                c = y[0]
                for j in range(n):
                    to[j] = c * tx[j]
            elif op == OP_MULTIPLY:
                for j in range(n):
                    to[j] = y[j] * tx[j]
            else:
                for j in range(n):
                    to[j] = tx[j]
        else:
            if op == OP_MULTIPLY and not sa:
                c = x[0]
                for j in range(n):
                    to[j] = c * ty[j]
            elif op == OP_MULTIPLY:
                for j in range(n):
                    to[j] = x[j] * ty[j]
            elif op == OP_SUBTRACT:
                for j in range(n):
                    to[j] = -ty[j]
            else:
                for j in range(n):
                    to[j] = ty[j]
        return
    if ARITHMETIC[op]:  # a one-element operand among them (a traced scalar times an array, ...)
        sign = -1.0 if op == OP_SUBTRACT else 1.0
        for j in range(n):
            t = 0.0
            if op == OP_MULTIPLY:
                if ga:
                    t += y[j * sb] * tx[j * sa]
                if gb:
                    t += x[j * sa] * ty[j * sb]
            else:
                if ga:
                    t += tx[j * sa]
                if gb:
                    t += sign * ty[j * sb]
            to[j] = t
        return
    for j in range(n):
        dx, dy = binary_partials(op, x[j * sa], y[j * sb], z[j])
        t = 0.0
        if ga:
            t += dx * tx[j * sa]
        if gb:
            t += dy * ty[j * sb]
        to[j] = t


@jit
def reverse_unary_run(op, x, z, gz, gx):
    for j in range(x.size):
        gx[j] += gz[j] * unary_partial(op, x[j], z[j])


@jit(inline="always")
def second_terms(flat, gd, d1, g, own, d_own, t_own, cross, d_cross, t_other):
    """One operand's second-order adjoint contribution, z̄' f_x + z̄ (f_xx x' + f_xy y'), without the
    terms that are structural zeros (JAX's symbolic zeros): z̄' f_x where ``flat`` (z̄ is a constant),
    f_xx x' unless ``own`` (f_xx may be nonzero), f_xy y' unless ``cross`` (it may be, and y is active).
    So a structural zero never meets an infinite partial or tangent (0 x inf = NaN)."""
    v = 0.0 if flat else gd * d1
    if own and cross:
        v += g * (d_own * t_own + d_cross * t_other)
    elif own:
        v += g * (d_own * t_own)
    elif cross:
        v += g * (d_cross * t_other)
    return v


@jit
def second_unary(op, x, z, g, gx, to2, tx2, tx, first, init, flat):
    """Second-order run of z = op(x): x̄ += z̄ f', x̄' += z̄' f' + z̄ f'' x'.

    ``first``: also update the first-order adjoint; ``init``: assign (this is the
    first write of x's adjoints) instead of adding; ``flat``: z̄' is a structural
    zero (see second_terms).
    """
    n = x.size
    if op == OP_SQUARE and flat:  # x̄' = 2 z̄ x'
        for j in range(n):
            if first:
                gx[j] = 2.0 * g[j] * x[j] if init else gx[j] + 2.0 * g[j] * x[j]
            tx2[j] = 2.0 * g[j] * tx[j] if init else tx2[j] + 2.0 * g[j] * tx[j]
        return
    if op == OP_SQUARE:  # f' = 2x, f'' = 2: one fused loop per case
        if first and init:
            for j in range(n):
                gx[j] = 2.0 * g[j] * x[j]
                tx2[j] = 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        elif first:
            for j in range(n):
                gx[j] += 2.0 * g[j] * x[j]
                tx2[j] += 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        elif init:
            for j in range(n):
                tx2[j] = 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        else:
            for j in range(n):
                tx2[j] += 2.0 * (to2[j] * x[j] + g[j] * tx[j])
        return
    if op == OP_NEGATIVE:  # (a flat z̄' is zero, times -1: no structural zero meets an infinity)
        if first:
            if init:
                for j in range(n):
                    gx[j] = -g[j]
            else:
                for j in range(n):
                    gx[j] -= g[j]
        if init:
            for j in range(n):
                tx2[j] = -to2[j]
        else:
            for j in range(n):
                tx2[j] -= to2[j]
        return
    curved = CURVATURE[op, 0]
    for j in range(n):
        d1 = unary_partial(op, x[j], z[j])
        d2 = unary_second(op, x[j], z[j], d1)
        if first:
            gx[j] = g[j] * d1 if init else gx[j] + g[j] * d1
        v = second_terms(flat, to2[j], d1, g[j], curved, d2, tx[j], False, 0.0, 0.0)
        tx2[j] = v if init else tx2[j] + v


@jit
def scale_into(dst, src, w, sw, c, n, init):
    """dst = or += src * s, with s = c, or s = w[j] (a passive operand) when c == 0."""
    if c == 0.0 and sw:
        if init:
            for j in range(n):
                dst[j] = src[j] * w[j]
        else:
            for j in range(n):
                dst[j] += src[j] * w[j]
        return
    s = c if c != 0.0 else w[0]
    if init:
        for j in range(n):
            dst[j] = src[j] * s
    else:
        for j in range(n):
            dst[j] += src[j] * s


@jit
def scale_two(d1, s1, d2, s2, w, sw, c, n, init):
    """d1 = or += s1 * s and d2 = or += s2 * s in one pass (s as in scale_into): an operand's first-
    and second-order adjoints of a linear instruction."""
    if c == 0.0 and sw:
        if init:
            for j in range(n):
                d1[j] = s1[j] * w[j]
                d2[j] = s2[j] * w[j]
        else:
            for j in range(n):
                d1[j] += s1[j] * w[j]
                d2[j] += s2[j] * w[j]
        return
    s = c if c != 0.0 else w[0]
    if init:
        for j in range(n):
            d1[j] = s1[j] * s
            d2[j] = s2[j] * s
    else:
        for j in range(n):
            d1[j] += s1[j] * s
            d2[j] += s2[j] * s


@jit
def product_two(gx, tx2, g, g2, w, t, n, init, cross):
    """gx = or += g w and tx2 = or += g2 w + (g t if cross) in one pass: one operand of d(xy)."""
    if not cross:
        scale_two(gx, g, tx2, g2, w, 1, 0.0, n, init)
    elif init:
        for j in range(n):
            gx[j] = g[j] * w[j]
            tx2[j] = g2[j] * w[j] + g[j] * t[j]
    else:
        for j in range(n):
            gx[j] += g[j] * w[j]
            tx2[j] += g2[j] * w[j] + g[j] * t[j]


@jit
def product_terms(dst, g2, w, g, t, n, init, cross):
    """dst = or += g2 * w + (g * t if cross): one operand's run of d(xy)."""
    if cross:
        if init:
            for j in range(n):
                dst[j] = g2[j] * w[j] + g[j] * t[j]
        else:
            for j in range(n):
                dst[j] += g2[j] * w[j] + g[j] * t[j]
    else:
        scale_into(dst, g2, w, 1, 0.0, n, init)


@jit
def flat_product(gx, tx2, g, w, t, n, sw, first, init, cross):
    """One operand of z = x * w where z̄' is a structural zero: gx = or += g w (if ``first``) and
    tx2 = or += g t (if ``cross``: w is active; else tx2 gets nothing, and 0 on a first write)."""
    if first:
        scale_into(gx, g, w, sw, 0.0, n, init)
    if cross:
        scale_into(tx2, g, t, sw, 0.0, n, init)
    elif init:
        tx2[:n] = 0.0


@jit
def second_binary(op, x, y, z, g, gx, gy, to2, tx2, ty2, tx, ty, n, sa, sb, ga, gb, first, second, ia, ib, flat):
    """Second-order run of z = op(x, y) (``second=False``: plain reverse on the k-buffer).

    ``ia``/``ib``: this is the first write of that operand's adjoints (assign); ``flat``: z̄' is a
    structural zero (see second_terms).
    """
    if ARITHMETIC[op] and (sa or not ga) and (sb or not gb):
        # add / subtract / multiply with every active operand full-length
        if op == OP_ADD or op == OP_SUBTRACT:
            sign = 1.0 if op == OP_ADD else -1.0
            if ga:
                if first:
                    scale_two(gx, g, tx2, to2, g, 0, 1.0, n, ia)
                else:
                    scale_into(tx2, to2, to2, 0, 1.0, n, ia)
            if gb:
                if first:
                    scale_two(gy, g, ty2, to2, g, 0, sign, n, ib)
                else:
                    scale_into(ty2, to2, to2, 0, sign, n, ib)
            return
        if flat:  # x̄' = z̄ y', ȳ' = z̄ x'
            if ga:
                flat_product(gx, tx2, g, y, ty, n, sb, first, ia, second and gb)
            if gb:
                flat_product(gy, ty2, g, x, tx, n, sa, first, ib, second and ga)
            return
        # d(xy) = (y, x), d²(xy)/dxdy = 1; first and second order in one pass where both run
        if ga:
            if first and sb:
                product_two(gx, tx2, g, to2, y, ty, n, ia, second and gb)
            elif first:
                scale_two(gx, g, tx2, to2, y, 0, 0.0, n, ia)
            elif sb:
                product_terms(tx2, to2, y, g, ty, n, ia, second and gb)
            else:
                scale_into(tx2, to2, y, 0, 0.0, n, ia)
        if gb:
            if first and sa:
                product_two(gy, ty2, g, to2, x, tx, n, ib, second and ga)
            elif first:
                scale_two(gy, g, ty2, to2, x, 0, 0.0, n, ib)
            elif sa:
                product_terms(ty2, to2, x, g, tx, n, ib, second and ga)
            else:
                scale_into(ty2, to2, x, 0, 0.0, n, ib)
        return
    # the general case: make the first write an ordinary accumulation
    xx, xy, yy = CURVATURE[op, 0], CURVATURE[op, 1], CURVATURE[op, 2]
    if ia:
        tx2[:] = 0.0
        if first:
            gx[:] = 0.0
    if ib:
        ty2[:] = 0.0
        if first:
            gy[:] = 0.0
    for j in range(n):
        pa = j * sa
        pb = j * sb
        dx, dy = binary_partials(op, x[pa], y[pb], z[j])
        gd = to2[j]
        if second:
            gj = g[j]
            if first:
                if ga:
                    gx[pa] += gj * dx
                if gb:
                    gy[pb] += gj * dy
            dxx, dxy, dyy = binary_second(op, x[pa], y[pb], z[j])
            # only active operands carry tangents: a passive one adds no term (no 0 x NaN)
            if ga:
                tx2[pa] += second_terms(flat, gd, dx, gj, xx, dxx, tx[pa], xy and gb, dxy, ty[pb])
            if gb:
                ty2[pb] += second_terms(flat, gd, dy, gj, yy, dyy, ty[pb], xy and ga, dxy, tx[pa])
        else:
            if ga:
                tx2[pa] += gd * dx
            if gb:
                ty2[pb] += gd * dy
