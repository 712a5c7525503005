"""The NumPy executor: a tape's sweeps run instruction by instruction with NumPy, nothing compiled.

It has the compiled sweeps' entry points (``run_forward``, ``run_value_and_grad``,
``run_reverse``, ``run_jvp``, ``run_hvp``, ``run_vector_reverse``), with their arguments
and their effect on the buffers, so ``fasttape.tiers`` can serve a call from here while
the compiled kernels are built.  Elementwise math is the declarations' own formulas
evaluated on arrays (``ARRAY_VOCABULARY`` gives each name its NumPy meaning); the
structural primitives have one vectorised rule per sweep.  Where the compiled sweeps
assign a first write (``F_INIT``) and zero only some adjoints, this executor zeroes every
adjoint and accumulates, which gives the same numbers.

The entry points that follow an earlier forward sweep (``run_reverse``,
``run_vector_reverse``, ``run_hvp`` without values) recompute the values first: a
compiled forward over fused regions keeps only some of them.
"""

from __future__ import annotations

import numpy as np

from . import codegen
from . import kernels as K
from .primitives import PRIMITIVES
from .scalar_math import CONSTANTS


def _special(name, *fixed):
    def fn(x):
        import scipy.special  # only the programs that use these functions pay for the import

        return getattr(scipy.special, name)(*fixed, x)

    return fn


# name -> its meaning on arrays (the same names as scalar_math.VOCABULARY)
ARRAY_VOCABULARY = {
    "where": np.where,
    "digamma": _special("digamma"),
    "trigamma": _special("polygamma", 1),
    "tetragamma": _special("polygamma", 2),
    "abs": np.abs,
    "sign": np.sign,
    "sqrt": np.sqrt,
    "cbrt": np.cbrt,
    "floor": np.floor,
    "ceil": np.ceil,
    "rint": np.rint,
    "maximum": np.maximum,
    "minimum": np.minimum,
    "exp": np.exp,
    "exp2": np.exp2,
    "expm1": np.expm1,
    "log": np.log,
    "log2": np.log2,
    "log10": np.log10,
    "log1p": np.log1p,
    "sin": np.sin,
    "cos": np.cos,
    "tan": np.tan,
    "arcsin": np.arcsin,
    "arccos": np.arccos,
    "arctan": np.arctan,
    "arctan2": np.arctan2,
    "sinh": np.sinh,
    "cosh": np.cosh,
    "tanh": np.tanh,
    "arcsinh": np.arcsinh,
    "arccosh": np.arccosh,
    "arctanh": np.arctanh,
    "erf": _special("erf"),
    "lgamma": _special("gammaln"),
    "hypot": np.hypot,
    "logaddexp": np.logaddexp,
    **CONSTANTS,
}


def _formulas():
    """Per elementwise opcode: (value, first partials, second partials) as functions of arrays."""
    table = {}
    for p in PRIMITIVES:
        if not p.elementwise:
            continue
        d1 = codegen.first_partials(p, codegen.FAULT_OPCODE)

        def fn(args, exprs):
            return eval(f"lambda {args}: ({', '.join(exprs)},)", dict(ARRAY_VOCABULARY))  # noqa: S307

        if p.kind == "unary":
            table[p.opcode] = (fn("x", (p.value,)), fn("x, z", d1), fn("x, z, d1", p.d2))
        else:
            table[p.opcode] = (fn("x, y", (p.value,)), fn("x, y, z", d1), fn("x, y, z, dx, dy", p.d2))
    return table


FORMULAS = _formulas()


def _rows(ins):
    return ins.tolist()


def _guards_hold(aux, buf):
    start = aux[K.M_GUARDS]
    for g in range(aux[K.M_NGUARDS]):
        if (buf[aux[start + 2 * g]] != 0.0) != (aux[start + 2 * g + 1] != 0):
            return False
    return True


def _add(target, pos, size, contribution, n):
    """target[..., pos:pos+size] += contribution (shape (..., n)); a size-1 operand collects the sum."""
    if size == n:
        target[..., pos : pos + size] += contribution
    else:
        target[..., pos : pos + 1] += np.sum(np.broadcast_to(contribution, target.shape[:-1] + (n,)), -1)[..., None]


def _max_weights(x, z):
    """Each element's share of a max/min's adjoint: ties share equally; NaN when no element matches."""
    hit = (x == z).astype(np.float64)
    count = hit.sum(axis=-2, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, hit / count, np.nan)


def _reduction_weights(name, x, z):
    """dz/dx of a reduction z over axis -2 of x (z kept with that axis): the weights that carry a
    tangent forward and an adjoint back."""
    if name == "sum":
        return np.ones_like(x)
    if name == "prod":
        return _exclusive_products(x)
    if name == "logsumexp":
        return np.exp(x - z)  # d logsumexp = softmax
    return _max_weights(x, z)  # max / min: ties share equally, as JAX


def _logsumexp(x):
    m = np.max(x, axis=1, keepdims=True)
    shift = np.where(np.isfinite(m), m, 0.0)
    return (np.log(np.sum(np.exp(x - shift), axis=1, keepdims=True)) + shift)[:, 0]


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
        pt = pt * x[..., k, :] + pv * t[..., k, :]
        pv = pv * x[..., k, :]
    sv, st = np.ones_like(pv), np.zeros_like(pt)
    out = np.empty(shape)
    for k in range(r - 1, -1, -1):
        out[..., k, :] = prefix_t[..., k, :] * sv + prefix_v[..., k, :] * st
        st = st * x[..., k, :] + sv * t[..., k, :]
        sv = sv * x[..., k, :]
    return out


# --------------------------------------------------------------------------
# forward
# --------------------------------------------------------------------------
_REDUCE = {
    "sum": lambda x: np.sum(x, axis=1),
    "prod": lambda x: np.prod(x, axis=1),
    "max": lambda x: np.max(x, axis=1),
    "min": lambda x: np.min(x, axis=1),
    "logsumexp": _logsumexp,
}


def _forward(rows, aux, buf):
    for op, o, n, a, na, b, nb, c, nc, p0, p1, p2, p3, _ in rows:
        kind = PRIMITIVES[op].kind
        if kind == "unary":
            buf[o : o + n] = FORMULAS[op][0](buf[a : a + na])[0]
        elif kind in ("binary", "comparison"):
            buf[o : o + n] = FORMULAS[op][0](buf[a : a + na], buf[b : b + nb])[0]
        elif kind == "select":
            buf[o : o + n] = np.where(buf[a : a + na] != 0.0, buf[b : b + nb], buf[c : c + nc])
        elif kind == "reduction":
            x = buf[a : a + na].reshape(p0, p1, p2)
            buf[o : o + n] = _REDUCE[PRIMITIVES[op].name](x).reshape(-1)
        elif kind == "scan":
            buf[o : o + n] = np.cumsum(buf[a : a + na].reshape(p0, p1, p2), axis=1).reshape(-1)
        elif kind == "broadcast":
            buf[o : o + n] = np.broadcast_to(buf[a : a + na].reshape(p0, 1, p2), (p0, p1, p2)).reshape(-1)
        elif kind == "gather":
            buf[o : o + n] = buf[aux[p0 : p0 + n]]
        elif kind == "matmul":
            A, B = buf[a : a + na].reshape(p0, p1, p2), buf[b : b + nb].reshape(p0, p2, p3)
            buf[o : o + n] = np.matmul(A, B).reshape(-1)
        else:
            raise ValueError(f"the executor has no forward rule for primitives of kind {kind!r}")


# --------------------------------------------------------------------------
# tangents: T is (k, n_values), one row per direction
# --------------------------------------------------------------------------
def _tangent(rows, aux, buf, T):
    k = T.shape[0]
    for op, o, n, a, na, b, nb, c, nc, p0, p1, p2, p3, flags in rows:
        if not flags & K.F_ACTIVE:
            continue
        ga, gb, gc = flags & K.F_GRAD_A, flags & K.F_GRAD_B, flags & K.F_GRAD_C
        prim = PRIMITIVES[op]
        kind = prim.kind
        if kind == "unary":
            (d,) = FORMULAS[op][1](buf[a : a + na], buf[o : o + n])
            T[:, o : o + n] = d * T[:, a : a + na]
        elif kind in ("binary", "comparison"):
            dx, dy = FORMULAS[op][1](buf[a : a + na], buf[b : b + nb], buf[o : o + n])
            t = np.zeros((k, n))
            if ga:
                t += dx * T[:, a : a + na]
            if gb:
                t += dy * T[:, b : b + nb]
            T[:, o : o + n] = t
        elif kind == "select":
            taken = buf[a : a + na] != 0.0
            T[:, o : o + n] = np.where(taken, T[:, b : b + nb] if gb else 0.0, T[:, c : c + nc] if gc else 0.0)
        elif kind == "reduction":
            x = buf[a : a + na].reshape(p0, p1, p2)
            t = T[:, a : a + na].reshape(k, p0, p1, p2)
            z = buf[o : o + n].reshape(p0, 1, p2)
            w = _reduction_weights(prim.name, x, z)
            T[:, o : o + n] = np.sum(w * t, axis=2).reshape(k, n)
        elif kind == "scan":
            T[:, o : o + n] = np.cumsum(T[:, a : a + na].reshape(k, p0, p1, p2), axis=2).reshape(k, n)
        elif kind == "broadcast":
            source = T[:, a : a + na].reshape(k, p0, 1, p2)
            T[:, o : o + n] = np.broadcast_to(source, (k, p0, p1, p2)).reshape(k, n)
        elif kind == "gather":
            T[:, o : o + n] = T[:, aux[p0 : p0 + n]]
        elif kind == "matmul":  # d(A B) = dA B + A dB
            A, B = buf[a : a + na].reshape(p0, p1, p2), buf[b : b + nb].reshape(p0, p2, p3)
            t = np.zeros((k, p0, p1, p3))
            if ga:
                t += np.matmul(T[:, a : a + na].reshape(k, p0, p1, p2), B)
            if gb:
                t += np.matmul(A, T[:, b : b + nb].reshape(k, p0, p2, p3))
            T[:, o : o + n] = t.reshape(k, n)
        else:
            raise ValueError(f"the executor has no tangent rule for primitives of kind {kind!r}")


# --------------------------------------------------------------------------
# reverse: first order (G, one row) and second order (G2, k rows), in one pass
# --------------------------------------------------------------------------
def _reverse(rows, aux, buf, G, G2=None, T=None):
    """Adjoints in reverse tape order.  G: first-order adjoints, shape (1, n_values), or None;
    G2: k rows of adjoints carried by the same (first-order) rules, or None; T: with G and G2,
    the tangents: G2 then gets the second-order terms (forward-over-reverse)."""
    second = T is not None
    for op, o, n, a, na, b, nb, c, nc, p0, p1, p2, p3, flags in reversed(rows):
        if not flags & K.F_ACTIVE:
            continue
        ga, gb, gc = flags & K.F_GRAD_A, flags & K.F_GRAD_B, flags & K.F_GRAD_C
        prim = PRIMITIVES[op]
        kind = prim.kind
        adjoints = [A for A in (G, G2) if A is not None]
        if kind == "unary":
            x, z = buf[a : a + na], buf[o : o + n]
            (d,) = FORMULAS[op][1](x, z)
            for A in adjoints:
                A[:, a : a + na] += A[:, o : o + n] * d
            if second:  # x̄' += z̄ f'' x'  (the z̄' f' term came with the first-order rule)
                (d2,) = FORMULAS[op][2](x, z, d)
                G2[:, a : a + na] += G[:, o : o + n] * d2 * T[:, a : a + na]
        elif kind in ("binary", "comparison"):
            x, y, z = buf[a : a + na], buf[b : b + nb], buf[o : o + n]
            dx, dy = FORMULAS[op][1](x, y, z)
            if second:  # only active operands carry tangents: a passive one adds no term (no 0 x NaN)
                dxx, dxy, dyy = FORMULAS[op][2](x, y, z, dx, dy)
                g = G[:, o : o + n]
                if ga:
                    tx = T[:, a : a + na]
                    _add(G2, a, na, g * (dxx * tx + dxy * T[:, b : b + nb] if gb else dxx * tx), n)
                if gb:
                    ty = T[:, b : b + nb]
                    _add(G2, b, nb, g * (dyy * ty + dxy * T[:, a : a + na] if ga else dyy * ty), n)
            for A in adjoints:
                g = A[:, o : o + n]
                if ga:
                    _add(A, a, na, g * dx, n)
                if gb:
                    _add(A, b, nb, g * dy, n)
        elif kind == "select":
            taken = buf[a : a + na] != 0.0
            for A in adjoints:
                g = A[:, o : o + n]
                if gb:
                    _add(A, b, nb, np.where(taken, g, 0.0), n)
                if gc:
                    _add(A, c, nc, np.where(taken, 0.0, g), n)
        elif kind == "reduction":
            x = buf[a : a + na].reshape(p0, p1, p2)
            z = buf[o : o + n].reshape(p0, 1, p2)
            name = prim.name
            w = _reduction_weights(name, x, z)
            if second and name == "logsumexp":  # x̄' += z̄ s (x' - z')
                t = T[:, a : a + na].reshape(-1, p0, p1, p2)
                zt = T[:, o : o + n].reshape(-1, p0, 1, p2)
                g = G[:, o : o + n].reshape(1, p0, 1, p2)
                G2[:, a : a + na] += (g * w * (t - zt)).reshape(G2.shape[0], na)
            elif second and name == "prod":  # x̄' += z̄ (tangent of the exclusive product)
                t = T[:, a : a + na].reshape(-1, p0, p1, p2)
                g = G[:, o : o + n].reshape(1, p0, 1, p2)
                G2[:, a : a + na] += (g * _exclusive_product_tangents(x, t)).reshape(G2.shape[0], na)
            for A in adjoints:
                g = A[:, o : o + n].reshape(-1, p0, 1, p2)
                A[:, a : a + na] += (g * w).reshape(A.shape[0], na)
        elif kind == "scan":
            for A in adjoints:  # adjoint of a prefix sum: suffix sum
                g = A[:, o : o + n].reshape(-1, p0, p1, p2)
                A[:, a : a + na] += np.cumsum(g[:, :, ::-1], axis=2)[:, :, ::-1].reshape(A.shape[0], na)
        elif kind == "broadcast":
            for A in adjoints:  # unbroadcast: sum the copies
                A[:, a : a + na] += A[:, o : o + n].reshape(-1, p0, p1, p2).sum(axis=2).reshape(A.shape[0], na)
        elif kind == "gather":
            index = aux[p0 : p0 + n]
            for A in adjoints:  # scatter-add
                g = A[:, o : o + n].copy()
                for row in range(A.shape[0]):
                    np.add.at(A[row], index, g[row])
        elif kind == "matmul":  # Ā = G Bᵀ, B̄ = Aᵀ G;  Ā' = G' Bᵀ + G B'ᵀ,  B̄' = A'ᵀ G + Aᵀ G'
            Am, Bm = buf[a : a + na].reshape(p0, p1, p2), buf[b : b + nb].reshape(p0, p2, p3)
            if second and ga and gb:
                g = G[:, o : o + n].reshape(1, p0, p1, p3)
                tA = T[:, a : a + na].reshape(-1, p0, p1, p2)
                tB = T[:, b : b + nb].reshape(-1, p0, p2, p3)
                G2[:, a : a + na] += np.matmul(g, np.swapaxes(tB, -1, -2)).reshape(G2.shape[0], na)
                G2[:, b : b + nb] += np.matmul(np.swapaxes(tA, -1, -2), g).reshape(G2.shape[0], nb)
            for A in adjoints:
                g = A[:, o : o + n].reshape(-1, p0, p1, p3)
                if ga:
                    A[:, a : a + na] += np.matmul(g, np.swapaxes(Bm, -1, -2)).reshape(A.shape[0], na)
                if gb:
                    A[:, b : b + nb] += np.matmul(np.swapaxes(Am, -1, -2), g).reshape(A.shape[0], nb)
        else:
            raise ValueError(f"the executor has no reverse rule for primitives of kind {kind!r}")


# --------------------------------------------------------------------------
# entry points: as in kernels
# --------------------------------------------------------------------------
def run_forward(ins, code, aux, buf, fused):
    with np.errstate(all="ignore"):
        _forward(_rows(ins), aux, buf)
    return _guards_hold(aux, buf)


def run_value_and_grad(ins, code, aux, buf, out, fused):
    rows = _rows(ins)
    N = aux[K.M_NVALS]
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        if not _guards_hold(aux, buf):
            return False
        buf[N:] = 0.0
        buf[N + out] = 1.0
        _reverse(rows, aux, buf, buf[N:].reshape(1, N))
    return True


def run_reverse(ins, code, aux, buf):
    rows = _rows(ins)
    N = aux[K.M_NVALS]
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)  # every value (a compiled forward keeps only some in fused regions)
        _reverse(rows, aux, buf, buf[N:].reshape(1, N))


def run_jvp(ins, code, aux, buf, tan, k):
    rows = _rows(ins)
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        if not _guards_hold(aux, buf):
            return False
        _tangent(rows, aux, buf, tan.reshape(k, -1))
    return True


def run_hvp(ins, code, aux, buf, tan, adj2, k, out, with_values):
    rows = _rows(ins)
    N = aux[K.M_NVALS]
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        if with_values and not _guards_hold(aux, buf):
            return False
        T = tan.reshape(k, N)
        _tangent(rows, aux, buf, T)
        buf[N:] = 0.0
        adj2[:] = 0.0
        buf[N + out] = 1.0
        _reverse(rows, aux, buf, buf[N:].reshape(1, N), adj2.reshape(k, N), T)
    return True


def run_vector_reverse(ins, code, aux, buf, adj2, k):
    rows = _rows(ins)
    with np.errstate(all="ignore"):
        _forward(rows, aux, buf)
        _reverse(rows, aux, buf, None, adj2.reshape(k, -1))
