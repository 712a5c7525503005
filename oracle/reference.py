"""The JAX reference for every primitive of fasttape's table, and a replay of a
recorded tape as a JAX function.

``jax_primitives()`` maps each primitive name to a function of JAX arrays in the
tape's own flat form (operands flattened; structural primitives also get the
instruction's integer parameters), evaluated from its declaration's ``jax``
expression.  ``replay_in_jax(tape)`` walks a tape's
slots in recording order and rebuilds the same program from these, so JAX can
differentiate anything fasttape can trace -- plain-NumPy code included -- and
its derivatives serve as the reference.
"""

from __future__ import annotations

import numpy as np

import fasttape.kernels as K
from fasttape import families
from fasttape.families import gather


def _jax():
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    jax.config.update("jax_enable_x64", True)
    return jax, jnp, jsp


def _with_tangent(fn, tangent):
    """``fn(x, y)`` of ``jax.numpy`` with its JVP replaced: ``tangent(x, y, z, dx, dy)``, z = fn(x, y)."""
    import jax

    @jax.custom_jvp
    def f(x, y):
        return fn(x, y)

    @f.defjvp
    def f_jvp(primals, tangents):
        z = f(*primals)
        return z, tangent(*primals, z, *tangents)

    return f


def _smooth_hypot():
    """``jnp.hypot`` with a derivative rule that is smooth where ``|x| == |y|``.

    JAX computes hypot from max(|x|, |y|) and min(|x|, |y|), so its second derivatives are 0 on that
    diagonal (the tie rules of max/min), where finite differences and fasttape give y²/h³, -xy/h³,
    x²/h³.  This rule keeps JAX's first derivative everywhere, (x, y)/h, and (1/2, 1/2) at the origin."""
    import jax.numpy as jnp

    def tangent(x, y, h, dx, dy):
        origin = h == 0.0
        safe = jnp.where(origin, 1.0, h)
        return jnp.where(origin, 0.5 * (dx + dy), (x * dx + y * dy) / safe)  # d hypot = (x, y) / hypot

    return _with_tangent(jnp.hypot, tangent)


def _accurate_logaddexp():
    """``jnp.logaddexp`` with the first derivative (σ(x - y), σ(y - x)) where the value is finite.

    JAX's rule is exp(x - z), exp(y - z): at x = y = 1e295 the value z rounds to x and both partials
    come out 1 instead of 1/2 (and the second partials 0 or 1 instead of ±1/4).  Where z is infinite
    this keeps JAX's rule and its conventions, exp(x - z) with +inf read as 0, and their derivatives --
    but as products of partials and tangents: JAX's rule reads +inf as 0 with a select, which drops a
    NaN tangent, where the declaration's second partials (the same values) multiply it."""
    import jax
    import jax.numpy as jnp

    @jax.custom_jvp
    def partials_at_infinity(x, y):
        z = jnp.logaddexp(x, y)
        read = lambda v: jnp.where(v == jnp.inf, 0.0, v)  # noqa: E731
        return jnp.exp(read(x) - read(z)), jnp.exp(read(y) - read(z))

    @partials_at_infinity.defjvp
    def partials_jvp(primals, tangents):
        (x, y), (tx, ty) = primals, tangents
        px, py = partials_at_infinity(x, y)
        up = jnp.logaddexp(x, y) == jnp.inf  # JAX's rule differentiated: no cross term where z = +inf
        pxx = jnp.where(up, jnp.where(x == jnp.inf, 0.0, px), px * py)
        pxy = jnp.where(up, 0.0, -px * py)
        pyy = jnp.where(up, jnp.where(y == jnp.inf, 0.0, py), px * py)
        return (px, py), (pxx * tx + pxy * ty, pxy * tx + pyy * ty)

    def tangent(x, y, z, dx, dy):
        finite = jnp.isfinite(z)
        d = jnp.where(finite, x - y, 0.0)
        px, py = partials_at_infinity(x, y)
        return jnp.where(finite, jax.nn.sigmoid(d) * dx + jax.nn.sigmoid(-d) * dy, px * dx + py * dy)

    return _with_tangent(jnp.logaddexp, tangent)


def _gamma_family():
    """``gammaln`` and ``digamma`` whose derivatives (ψ, ψ₁, ψ₂) take their limits at +inf -- ψ₁ and ψ₂
    tend to 0 there, where JAX's ``polygamma`` gives NaN -- and ψ₁ is NaN at -inf (the poles pile up
    towards it), where JAX gives +inf.  Elsewhere, JAX's own values (+inf at the poles for ψ₁)."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    def with_derivative(fn, derivative):
        f = jax.custom_jvp(fn)
        f.defjvp(lambda primals, tangents: (f(*primals), derivative(*primals) * tangents[0]))
        return f

    tetragamma = with_derivative(
        lambda x: jnp.where(x == jnp.inf, 0.0, jsp.polygamma(2, x)), lambda x: jsp.polygamma(3, x)
    )
    trigamma = with_derivative(
        lambda x: jnp.where(x == jnp.inf, 0.0, jnp.where(x == -jnp.inf, jnp.nan, jsp.polygamma(1, x))), tetragamma
    )
    digamma = with_derivative(jsp.digamma, trigamma)
    return with_derivative(jsp.gammaln, digamma), digamma


def _polygamma():
    """ψ⁽ⁿ⁾(x) for the order n held as a float (a constant of the tape; JAX's polygamma takes an integer one),
    with ``_gamma_family``'s limits for n >= 1: 0 at +inf, NaN at -inf; d/dx = ψ⁽ⁿ⁺¹⁾, nothing for n."""
    import jax
    import jax.numpy as jnp
    import jax.scipy.special as jsp

    @jax.custom_jvp
    def polygamma(n, x):
        value = jsp.polygamma(n.astype(jnp.int64), x)
        limits = jnp.where(x == jnp.inf, 0.0, jnp.where(x == -jnp.inf, jnp.nan, value))
        return jnp.where(n >= 1, limits, value)

    @polygamma.defjvp
    def polygamma_jvp(primals, tangents):
        n, x = primals
        return polygamma(n, x), polygamma(n + 1.0, x) * tangents[1]

    return polygamma


def _exact_prod():
    """A product along axis 1 of (pre, r, post) whose JVP is Σ t_i Π_{j≠i} x_j, the exclusive products
    formed by plain multiplication (prefix times suffix).  JAX's own rule multiplies in a pairwise tree,
    padding an odd length with a 1 whose tangent is 0: beside a NaN or inf factor that 0 makes a NaN
    where the derivative is finite (d prod([x]) = t at x = NaN, jacfwd of prod([inf, 2, 3]))."""
    import jax
    import jax.numpy as jnp

    def exclusive(x):
        r = x.shape[1]
        one = jnp.ones(x.shape[:1] + x.shape[2:], dtype=x.dtype)
        prefix, suffix = [one], [one]
        for k in range(1, r):
            prefix.append(prefix[-1] * x[:, k - 1])
            suffix.append(suffix[-1] * x[:, r - k])
        return jnp.stack([prefix[k] * suffix[r - 1 - k] for k in range(r)], axis=1) if r else x

    @jax.custom_jvp
    def prod(x):
        return jnp.prod(x, axis=1)

    @prod.defjvp
    def prod_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return prod(x), jnp.sum(t * exclusive(x), axis=1)

    return lambda x, pre, r, post: prod(x.reshape(pre, r, post))


class _Rules:
    """The oracle's own JAX rules, which the declarations' ``jax`` expressions name as ``ref.*``:
    each takes the tape's flat operands (and a structural instruction's integer parameters)."""

    def __init__(self, jnp, jsp):
        self.jnp = jnp
        self.jsp = jsp

    def reciprocal(self, x):
        return 1.0 / x

    def comparison(self, fn):
        return lambda x, y: fn(x, y).astype(x.dtype)

    def smooth_hypot(self):
        return _smooth_hypot()

    def accurate_logaddexp(self):
        return _accurate_logaddexp()

    def prod(self):
        return _exact_prod()

    def gammaln(self):
        return _gamma_family()[0]

    def digamma(self):
        return _gamma_family()[1]

    def log_ndtr(self):
        """log Φ to SciPy's accuracy (jax.scipy.special.log_ndtr is off by up to 3e-8 relative): log1p of the
        upper tail above -1, log(erfcx / 2) - x²/2 below; each branch fed a safe input, so the unselected
        one's derivative stays finite."""
        jnp, jsp = self.jnp, self.jsp
        half = float(np.sqrt(0.5))

        def fn(x):
            low = x < -1.0
            xa, xb = jnp.where(low, x, -2.0), jnp.where(low, 0.0, x)
            a = jnp.log(0.5 * jsp.erfcx(-xa * half)) - (xa * half) ** 2
            b = jnp.log1p(-0.5 * jsp.erfc(xb * half))
            return jnp.where(low, a, b)

        return fn

    def polygamma(self, n, x):
        return _polygamma()(n, x)

    def entr(self):
        """``jax.scipy.special.entr`` with one derivative in both modes: -(1 + log x), and 0 below 0 where entr
        is the constant -inf -- JAX's own forward mode gives that 0, its reverse mode NaN (0 x log x)."""
        import jax

        jnp, jsp = self.jnp, self.jsp
        f = jax.custom_jvp(jsp.entr)
        f.defjvp(lambda p, t: (f(*p), jnp.where(p[0] < 0.0, 0.0, -1.0 - jnp.log(p[0])) * t[0]))
        return f

    def betaln(self, a, b):
        """log B from JAX's gammaln: jax.scipy.special.betaln's own second derivatives are wrong in places
        (0.178 in every entry of its Hessian at a = b = 1, where the exact one is [[1, -0.645], [-0.645, 1]])."""
        gammaln = _gamma_family()[0]  # with the declarations' values at the poles and at ±inf
        return gammaln(a) + gammaln(b) - gammaln(a + b)

    def where(self, c, x, y):
        return self.jnp.where(c != 0.0, x, y)

    def reduce(self, fn):
        return lambda x, pre, r, post: fn(x.reshape(pre, r, post), axis=1)

    def cumsum(self, x, pre, r, post):
        return self.jnp.cumsum(x.reshape(pre, r, post), axis=1)

    def broadcast(self, x, pre, r, post):
        return self.jnp.broadcast_to(x.reshape(pre, 1, post), (pre, r, post))

    def gather(self, source, index):
        return self.jnp.take(source, index)

    def matmul(self, a, b, batch, m, k, n):
        return self.jnp.matmul(a.reshape(batch, m, k), b.reshape(batch, k, n))

    def solve(self, a, b, batch, n, m):
        return self.jnp.linalg.solve(a.reshape(batch, n, n), b.reshape(batch, n, m))

    def slogdet(self, a, batch, n, m):
        sign, logabs = self.jnp.linalg.slogdet(a.reshape(batch, n, n))
        return self.jnp.stack([sign, logabs], axis=-1)

    def cholesky(self, a, batch, n, m, mode):
        # fasttape's primitive reads the lower triangle: JAX's factor of the symmetric matrix it holds
        a = self.jnp.tril(a.reshape(batch, n, n))
        a = a + self.jnp.swapaxes(self.jnp.tril(a, -1), -1, -2)
        from jax.lax import linalg

        return linalg.cholesky(a, symmetrize_input=False)

    def eigh(self, a, batch, n, m, mode):
        # fasttape's primitive reads the lower triangle, as LAPACK's dsyevd (whose eigenvectors both return)
        from jax.lax import linalg

        a = self.jnp.tril(a.reshape(batch, n, n))
        a = a + self.jnp.swapaxes(self.jnp.tril(a, -1), -1, -2)  # JAX's rule reads both triangles
        V, w = linalg.eigh(a, lower=True, symmetrize_input=False)
        return self.jnp.concatenate([w, V.reshape(batch, n * n)], axis=-1)

    def svd(self, a, batch, n, m, mode):
        U, s, Vt = self.jnp.linalg.svd(a.reshape(batch, n, m), full_matrices=False)
        return self.jnp.concatenate([s, U.reshape(batch, -1), Vt.reshape(batch, -1)], axis=-1)

    def qr(self, a, batch, n, m, mode):
        Q, R = self.jnp.linalg.qr(a.reshape(batch, n, m), mode="complete" if mode & 1 else "reduced")
        R = R[:, : min(n, m)]  # a complete R's last rows are zeros, which the primitive leaves out
        return self.jnp.concatenate([Q.reshape(batch, -1), R.reshape(batch, -1)], axis=-1)

    def lu(self, a, batch, n, m, mode):
        from jax.lax import linalg

        lu, pivots, _ = linalg.lu(a.reshape(batch, n, n))
        return self.jnp.concatenate([lu.reshape(batch, n * n), pivots.astype(a.dtype)], axis=-1)

    def permute(self, piv, b, batch, n, m, mode):
        # JAX's own route from LAPACK's pivots to a permutation (as its lu_solve): P^T B = B[perm]
        from jax.lax import linalg

        perm = linalg.lu_pivots_to_permutation(piv.reshape(batch, n).astype(self.jnp.int32), n)
        b = b.reshape(batch, n, m)
        if mode & 1:  # P B: row perm[i] of the result is row i of B
            perm = self.jnp.argsort(perm, axis=-1)
        return self.jnp.take_along_axis(b, perm[:, :, None], axis=1)

    def take(self, a, b, pre, n, mode, side):
        # the indices are integers held as floats; negative ones count from the end
        post = a.size // (pre * n) if pre * n else 0
        k = b.astype(self.jnp.int64)
        k = self.jnp.where(k < 0, k + n, k)
        a = a.reshape(pre, n, post)
        if mode & 1:
            return self.jnp.take_along_axis(a, k.reshape(pre, -1, post), axis=1)
        return self.jnp.take(a, k, axis=1)

    def scatter(self, a, b, c, pre, n, mode, side):
        jnp = self.jnp
        k = b.astype(jnp.int64)
        if mode == 0:  # add: repeated positions accumulate
            return a.at[k].add(c)
        # set, the last write winning (NumPy's x[k] = c; JAX leaves the winner of repeated indices unspecified)
        last = jnp.full(n, -1).at[k].max(jnp.arange(k.size))
        won = last[k] == jnp.arange(k.size)
        kept = jnp.where(last < 0, a, 0.0)
        return kept + jnp.zeros(n).at[k].add(jnp.where(won, c, 0.0))

    def argsort(self, x, pre, r, post, mode):
        return self.jnp.argsort(x.reshape(pre, r, post), axis=1, stable=True).astype(x.dtype)

    def argreduce(self, fn):
        return lambda x, pre, r, post, mode: fn(x.reshape(pre, r, post), axis=1).astype(x.dtype)

    def searchsorted(self, a, v, pre, r, post, mode):
        return self.jnp.searchsorted(a, v, side="right" if mode else "left").astype(a.dtype)

    def trisolve(self, a, b, batch, n, m, mode):
        from jax.lax import linalg

        return linalg.triangular_solve(
            a.reshape(batch, n, n), b.reshape(batch, n, m), left_side=True, lower=bool(mode & 1),
            transpose_a=bool(mode & 2), unit_diagonal=bool(mode & 4),
        )  # fmt: skip


def jax_primitives() -> dict:
    """name -> JAX function on the tape's flat operands (see the module docstring), from each
    declaration's ``jax`` expression."""
    jax, jnp, jsp = _jax()
    scope = {"jnp": jnp, "jsp": jsp, "ref": _Rules(jnp, jsp)}
    return {p.name: eval(p.jax, scope) for p in K.PRIMITIVES}  # noqa: S307  (the declarations' own text)


def replay_in_jax(tape):
    """A JAX function of the tape's dynamic input leaves (in argument order) that
    returns the list of its outputs, built primitive by primitive from the tape."""
    _, jnp, _ = _jax()
    prims = jax_primitives()
    slots = tape._slots
    ins = tape.ins
    aux = tape.aux
    input_slots = [sid for sid, s in enumerate(slots) if s.origin[0] == "input"]
    outputs = tape.output_slots

    def gather_plan(row, operands):
        start, n = int(ins[row, gather.P_START]), int(ins[row, gather.P_COUNT])
        positions = aux[start : start + n]
        index = np.empty(n, dtype=np.int64)
        base = 0
        for sid in operands:
            s = slots[sid]
            inside = (positions >= s.offset) & (positions < s.offset + s.size)
            index[inside] = base + positions[inside] - s.offset
            base += s.size
        return index

    plans = {row: gather_plan(row, tape._row_operands[row]) for row in range(ins.shape[0])
             if ins[row, K.C_OP] == K.OP_GATHER}  # fmt: skip

    def program(*inputs):
        if len(inputs) != len(input_slots):
            raise TypeError(f"the replayed tape takes {len(input_slots)} input leaves, got {len(inputs)}")
        values = {}
        for sid, x in zip(input_slots, inputs):
            values[sid] = jnp.reshape(jnp.asarray(x, dtype=jnp.float64), slots[sid].shape)
        for sid, s in enumerate(slots):
            kind = s.origin[0]
            if kind == "input":
                continue
            if kind == "const":
                values[sid] = jnp.asarray(s.origin[1]).reshape(s.shape)
            elif kind == "view":
                parent = s.origin[1]
                while slots[parent].origin[0] == "view":
                    parent = slots[parent].origin[1]
                start = s.offset - slots[parent].offset
                values[sid] = jnp.ravel(values[parent])[start : start + s.size].reshape(s.shape)
            else:
                values[sid] = _apply(prims, ins, int(s.origin[1]), tape._row_operands, values, plans, jnp)
                values[sid] = values[sid].reshape(s.shape)
        return [values[sid] for sid in outputs]

    return program


def _apply(prims, ins, row, row_operands, values, plans, jnp):
    op = int(ins[row, K.C_OP])
    prim = K.PRIMITIVE_BY_OPCODE[op]
    operands = [jnp.ravel(values[sid]) for sid in row_operands[row]]
    if op != K.OP_GATHER:  # an operand the row does not differentiate (stop_gradient, LU's pivots) is stopped
        flags = int(ins[row, K.C_FLAGS])
        from jax import lax

        operands = [x if k >= 3 or flags & (K.F_GRAD_A, K.F_GRAD_B, K.F_GRAD_C)[k] else lax.stop_gradient(x)
                    for k, x in enumerate(operands)]  # fmt: skip
    return families.of(op).jax_call(jnp, prims[prim.name], operands, ins[row].tolist(), plans.get(row))
