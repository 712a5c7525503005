"""``oracle.check(f, *args)``: fasttape's derivatives of ``f`` against JAX's and
against finite differences.

fasttape records ``f`` (plain NumPy code is fine); the tape is replayed in JAX
(:func:`oracle.reference.replay_in_jax`) and JAX's own transformations of that
program are the exact reference.  Central finite differences (order 2) check
fasttape and JAX independently of each other.  With ``namespace=True``, ``f``
takes the array namespace first (``f(xp, *args)``) and is also run natively
under ``jax.numpy``, which checks the tracer itself.
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field

import numpy as np
import optree

import fasttape as ft
from fasttape import storage
from fasttape.layout import C_OP
from fasttape.tracing import record

from .reference import _jax, replay_in_jax

KINDS = ("value", "grad", "vjp", "jvp", "hvp", "hvp_multi", "jacobian", "hessian", "nested")
RTOL = 1e-10  # exact AD against exact AD, scaled by the magnitude of the reference
FD_RTOL = 1e-5  # central differences, order 2


@dataclass
class KindResult:
    """One derivative kind: the largest scaled error against JAX and against FD."""

    kind: str
    passed: bool
    error_jax: float
    error_fd: float | None = None
    message: str = ""


@dataclass
class Report:
    """Every derivative kind checked for one function at one point."""

    name: str
    results: list[KindResult] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def failures(self) -> list[KindResult]:
        return [r for r in self.results if not r.passed]

    def __str__(self):
        lines = [f"oracle.check({self.name}): {'PASS' if self.passed else 'FAIL'}"]
        lines.append(f"  {'kind':<10} {'vs JAX':>10} {'vs FD':>10}  result")
        for r in self.results:
            fd = "-" if r.error_fd is None else f"{r.error_fd:.1e}"
            status = "ok" if r.passed else f"FAIL {r.message}"
            lines.append(f"  {r.kind:<10} {r.error_jax:>10.1e} {fd:>10}  {status}")
        return "\n".join(lines)


def scaled_error(actual, expected, exact_nonfinite=True) -> float:
    """max |a - e| / max(1, max |e|), NaN-aware: matching NaN/inf patterns count as equal (without
    ``exact_nonfinite``, any non-finite entry matches any other: NaN, +inf, -inf)."""
    a = np.asarray(actual, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    if a.shape != e.shape:
        return float("inf")
    same = (a == e) | (np.isnan(a) & np.isnan(e))
    if not exact_nonfinite:
        same |= ~np.isfinite(a) & ~np.isfinite(e)
    if np.all(same):
        return 0.0
    finite = np.isfinite(e)
    if np.any(~same & ~(np.isfinite(a) & finite)):
        return float("inf")
    scale = max(1.0, float(np.max(np.abs(e[finite]), initial=0.0)))
    return float(np.max(np.abs(a[~same] - e[~same]))) / scale  # both finite there


class ReferenceMemo:
    """JAX's side of every check, kept by program and point, for runs that check the same points again
    and again (``oracle.mutants``: one pass of a profile per planted fault, JAX computing in the first
    only).  With ``opcode`` set, a check whose tape does not use that opcode is skipped: nothing it runs
    could differ from the first pass."""

    def __init__(self):
        self.values: dict = {}
        self.opcode: int | None = None

    @staticmethod
    def point(tape, args, seed) -> str:
        digest = hashlib.sha256(str(seed).encode())
        digest.update(storage.tape_to_bytes(tape))  # the whole program, its constants included
        for part in args:
            digest.update(np.ascontiguousarray(part).tobytes())
            digest.update(str(np.shape(part)).encode())
        return digest.hexdigest()

    def reaches(self, tape) -> bool:
        return self.opcode is None or bool(np.any(tape.ins[:, C_OP] == self.opcode))

    def get(self, point, kind, compute):
        key = (point, kind)
        if key not in self.values:
            self.values[key] = compute()
        return self.values[key]


MEMO: list[ReferenceMemo | None] = [None]  # the memo that check() uses, if any


def _flat(tree):
    return [np.asarray(leaf, dtype=np.float64) for leaf in optree.tree_leaves(tree, none_is_leaf=True)]


def _tree_error(actual, expected, exact_nonfinite=True):
    a, e = _flat(actual), _flat(expected)
    if len(a) != len(e):
        return float("inf")
    return max((scaled_error(x, y, exact_nonfinite) for x, y in zip(a, e)), default=0.0)


def check(f, *args, eager=False, **options) -> Report:
    """Check every derivative kind of ``f`` at ``args`` (float arrays or floats).

    Scalar-output functions get value, grad, vjp, jvp, hvp (one direction, and
    four in one sweep), jacobian (forward and reverse) and hessian; others
    value, vjp, jvp and jacobian.  ``options``: ``namespace``, ``kinds``,
    ``rtol``, ``fd_rtol``, ``fd``, ``seed``, ``name``, ``exact_nonfinite``, ``jax_fn``.

    ``jax_fn``: JAX's version of ``f`` (the same arguments), the reference instead of the replayed tape:
    for a function with custom rules (``ft.custom_jvp``, ``ft.custom_vjp``) pass the one written with
    ``jax.custom_jvp`` / ``jax.custom_vjp`` to check the rules against JAX's; finite differences check
    them against the function's values either way.  Its references are computed in reverse mode (a
    ``jax.custom_vjp`` has no forward mode), second order as reverse over reverse.

    ``exact_nonfinite=False``: a non-finite entry matches any non-finite one (NaN, +inf, -inf), for
    programs whose adjoints and tangents may be infinite: each rule's arithmetic then decides between
    NaN and inf (JAX's tanh rule (ḡ + ḡ tanh)(1 - tanh) makes an infinite ḡ NaN; fasttape's ḡ (1 - tanh²)
    keeps it infinite).  Finite entries are still held to JAX's, and their positions must agree.  HVPs
    at inputs holding NaN or inf are always compared so (the direction sums infinite second partials).

    ``eager``: JAX's references run op by op (``jax.disable_jit``), as IEEE arithmetic propagates
    NaN and inf.  Compiled, XLA's algebraic simplifier may drop a 0 x NaN: a jitted ``jacfwd`` of
    ``sum(w * tan(x))`` extracts the diagonal, where op by op every entry is NaN.  The inputs hold
    NaN or inf on purpose, so NumPy's floating-point warnings are silenced too.
    """
    if not eager:
        return _check(f, *args, **options)
    jax = _jax()[0]
    with jax.disable_jit(), np.errstate(all="ignore"):
        return _check(f, *args, **options)


def _basis(args, i, index):
    """The tangent tuple that is 1 at flat position ``index`` of argument i and 0 elsewhere."""
    tangents = tuple(np.zeros_like(a) for a in args)
    tangents[i].reshape(-1)[index] = 1.0
    return tangents


def _columns(jvp, args, out_shape):
    """jax.jacfwd(f, argnums=all)(*args), one JVP per input element: a tuple of out_shape + args[i].shape.
    Compiling the JVP once and calling it per column costs far less than compiling jacfwd too."""
    blocks = []
    for i, a in enumerate(args):
        columns = [np.asarray(jvp(args, _basis(args, i, j))) for j in range(a.size)]
        block = np.stack(columns, axis=-1) if columns else np.zeros(out_shape + (0,))
        blocks.append(block.reshape(out_shape + a.shape))
    return tuple(blocks)


def _hessian_columns(hvp, args):
    """jax.hessian(f, argnums=all)(*args) (jacfwd of the gradient), one HVP per input element: the nested
    tuple whose block [i][j] has shape args[i].shape + args[j].shape."""
    blocks = [[None] * len(args) for _ in args]
    for j, b in enumerate(args):
        columns = [hvp(args, _basis(args, j, index)) for index in range(b.size)]
        for i, a in enumerate(args):
            stacked = np.stack([np.asarray(c[i]) for c in columns], axis=-1) if columns else np.zeros(a.shape + (0,))
            blocks[i][j] = stacked.reshape(a.shape + b.shape)
    return tuple(tuple(row) for row in blocks)


def _check(f, *args, namespace=False, kinds=KINDS, rtol=RTOL, fd_rtol=FD_RTOL, fd=True, seed=0, name=None,
           exact_nonfinite=True, jax_fn=None):  # fmt: skip
    jax, jnp, _ = _jax()
    error = functools.partial(_tree_error, exact_nonfinite=exact_nonfinite)
    rng = np.random.default_rng(seed)
    args = tuple(np.asarray(a, dtype=np.float64) for a in args)
    argnums = tuple(range(len(args)))
    f_np = functools.partial(f, np) if namespace else f
    tape = record(f_np, args, argnums, name=name)
    memo = MEMO[0] if jax_fn is None else None  # the memo holds references of replayed tapes
    if memo is not None and not memo.reaches(tape):
        return Report(name or getattr(f, "__name__", "f"))
    point = None if memo is None else memo.point(tape, args, seed)

    def reference(kind, compute):
        return compute() if memo is None else memo.get(point, kind, compute)

    program = replay_in_jax(tape)
    out0 = tape(*args)
    multi_output = isinstance(out0, (tuple, list, dict))
    if multi_output:
        raise TypeError("oracle.check takes functions with one array output; check each output separately.")
    scalar = np.ndim(out0) == 0

    # every JAX reference is one jit-compiled program: compiling the few transforms once costs far
    # less than eager JAX, which compiles each primitive of each transformed trace on its own
    jit = jax.jit

    @jit
    def f_jax(*a):
        return program(*a)[0] if jax_fn is None else jax_fn(*a)

    report = Report(name or getattr(f, "__name__", "f"))
    direct = jit(functools.partial(f, jnp)) if namespace else None

    def add(kind, actual, expected, fd_value=None, compare=error):
        # the finite differences witness fasttape and JAX independently of each other
        err = compare(actual, expected)
        err_fd = None if fd_value is None else error(actual, fd_value)
        err_ref_fd = None if fd_value is None else error(expected, fd_value)
        passed = err <= rtol and (err_fd is None or (err_fd <= fd_rtol and err_ref_fd <= fd_rtol))
        message = ""
        if err > rtol:
            message = f"differs from JAX by {err:.1e} (scaled)"
        elif err_ref_fd is not None and err_ref_fd > fd_rtol:
            message = f"agrees with JAX, but both differ from finite differences ({err_ref_fd:.1e}): not smooth here"
        elif err_fd is not None and err_fd > fd_rtol:
            message = f"differs from finite differences by {err_fd:.1e}"
        report.results.append(KindResult(kind, passed, err, err_fd, message))

    tangents = tuple(rng.normal(size=a.shape) for a in args)
    h = 1e-6
    # an HVP entry at an infinite input sums infinite second partials along the direction: inf or NaN is
    # then each rule's grouping (d²(x^y)/dxdy as x^(y-1)(1 + y log x) stays inf at x = inf, JAX's
    # (1/x)·x^y + ... is 0·inf), so there any non-finite entry matches; the Hessian (basis directions)
    # and every first-order kind stay exact
    nonfinite_input = not all(np.all(np.isfinite(a)) for a in args)
    error_hvp = functools.partial(_tree_error, exact_nonfinite=exact_nonfinite and not nonfinite_input)

    def fd_along(fun, direction):
        plus = fun(*[a + h * t for a, t in zip(args, direction)])
        minus = fun(*[a - h * t for a, t in zip(args, direction)])
        return (np.asarray(plus) - np.asarray(minus)) / (2 * h)

    if "value" in kinds:
        add("value", out0, reference("value", lambda: f_jax(*args)))
        if direct is not None:  # the code run natively under jax.numpy: checks the tracer
            add("value:jnp", out0, reference("value:jnp", lambda: direct(*args)))
    jax_jvp = jit(lambda a, t: jax.jvp(f_jax, a, t)[1])
    if jax_fn is not None:  # reverse mode only: the Jacobian by rows, contracted with the tangents
        jax_jvp = jit(lambda a, t: sum(jnp.tensordot(J, ti, axes=np.ndim(ti)) for J, ti in
                                       zip(jax.jacrev(f_jax, argnums=argnums)(*a), t)))  # fmt: skip
    if "jvp" in kinds:
        _, t_ft = ft.jvp(f_np, args, tangents)
        t_jax = reference("jvp", lambda: jax_jvp(args, tangents))
        add("jvp", t_ft, t_jax, fd_along(f_np, tangents) if fd else None)
    if "vjp" in kinds:
        ct = rng.normal(size=np.shape(out0)) if np.ndim(out0) else np.float64(rng.normal())
        _, pull = ft.vjp(f_np, *args)
        add("vjp", pull(ct), reference("vjp", lambda: jit(lambda a, c: jax.vjp(f_jax, *a)[1](c))(args, ct)))
    if "jacobian" in kinds:  # jacfwd's columns, from the JVP compiled above
        jacobian = reference("jacobian", lambda: _columns(jax_jvp, args, np.shape(out0)))
        forward = ft.jacfwd(f_np, argnums=argnums)(*args)
        reverse = ft.jacrev(f_np, argnums=argnums)(*args)
        by_rows = jacobian
        if error(reverse, jacobian) > rtol:  # NaN spreads along rows by tangents, along columns by
            # cotangents (0 * NaN): by rows, JAX's own reverse mode is the reference (computed only here)
            by_rows = reference("jacobian:rev", lambda: jit(jax.jacrev(f_jax, argnums=argnums))(*args))
        add("jacobian", (forward, reverse), (jacobian, by_rows))  # both modes
    if not scalar:
        return report
    grad_ft = ft.grad(f_np, argnums=argnums)
    jax_grad = jit(jax.grad(f_jax, argnums=argnums))
    jax_hvp = jit(lambda a, t: jax.jvp(jax_grad, a, t)[1])
    if jax_fn is not None:  # reverse over reverse: the gradient of <grad f, t>
        jax_hvp = jit(lambda a, t: jax.grad(lambda *x: sum(jnp.vdot(g, ti) for g, ti in zip(jax_grad(*x), t)),
                                            argnums=argnums)(*a))  # fmt: skip
    if "grad" in kinds:
        g = grad_ft(*args)
        jg = reference("grad", lambda: jax_grad(*args))
        err = error(g, jg)
        err_fd = None
        if fd:  # one directional difference per argument, against both gradients' projections
            err_fd = 0.0
            for i in argnums:
                direction = tuple(t if j == i else np.zeros_like(t) for j, t in enumerate(tangents))
                witness = float(fd_along(f_np, direction))
                for grad_i in (g[i], jg[i]):
                    projected = float(np.sum(np.asarray(grad_i) * tangents[i]))
                    err_fd = max(err_fd, scaled_error(projected, witness, exact_nonfinite))
        passed = err <= rtol and (err_fd is None or err_fd <= fd_rtol)
        message = ""
        if not passed:  # no finite differences where the case is not smooth (fd=False)
            message = f"differs from JAX by {err:.1e}" + (
                "" if err_fd is None else f", from finite differences by {err_fd:.1e}"
            )
        report.results.append(KindResult("grad", passed, err, err_fd, message))
    if "hvp" in kinds:
        hv = ft.hvp(f_np, args, tangents)
        hv = hv if isinstance(hv, tuple) else (hv,)
        ref = reference("hvp", lambda: jax_hvp(args, tangents))
        fd_hv = None
        if fd:
            plus = grad_ft(*[a + h * t for a, t in zip(args, tangents)])
            minus = grad_ft(*[a - h * t for a, t in zip(args, tangents)])
            fd_hv = tuple((np.asarray(p) - np.asarray(m)) / (2 * h) for p, m in zip(plus, minus))
        add("hvp", hv, ref, fd_hv, compare=error_hvp)
    if "hvp_multi" in kinds:
        many = tuple(rng.normal(size=a.shape + (4,)) for a in args)
        hv = ft.hvp(f_np, args, many)
        hv = hv if isinstance(hv, tuple) else (hv,)

        def hvps():
            refs = [jax_hvp(args, tuple(m[..., d] for m in many)) for d in range(4)]
            return tuple(np.stack([np.asarray(r[i]) for r in refs], axis=-1) for i in argnums)

        add("hvp_multi", hv, reference("hvp_multi", hvps), compare=error_hvp)
    if "hessian" in kinds:  # jax.hessian's columns (jacfwd of the gradient), from the HVP compiled above
        hessian = reference("hessian", lambda: _hessian_columns(jax_hvp, args))
        add("hessian", ft.hessian(f_np, argnums=argnums)(*args), hessian)
    # third order through transformations called inside the traced function; at smooth, moderate inputs
    # only: beside inf, NaN or 1e300 each framework's third-order grouping of non-finite terms is its own.  Not
    # for a jax_fn, which may be a custom_vjp (reverse mode only in JAX)
    moderate = not nonfinite_input and all(np.all(np.abs(a) < 1e100) for a in args)
    if "nested" in kinds and moderate and jax_fn is None:
        t2 = tuple(rng.normal(size=a.shape) for a in args)
        second_ft = _second_order(ft, f_np, np.sum, argnums, tangents, t2)
        third = ft.grad(second_ft, argnums=argnums)(*args)
        ref = reference("nested", lambda: jit(jax.grad(_second_order(jax, f_jax, jnp.sum, argnums, tangents, t2),
                                                       argnums=argnums))(*args))  # fmt: skip
        fd_third = None
        if fd:  # the second-order function differenced along a random direction
            t3 = tuple(rng.normal(size=a.shape) for a in args)
            witness = fd_along(second_ft, t3)
            fd_third = float(witness), float(sum(np.sum(np.asarray(d) * t) for d, t in zip(third, t3)))
        err = error_hvp(third, ref)
        err_fd = None if fd_third is None else scaled_error(fd_third[1], fd_third[0], exact_nonfinite)
        passed = err <= rtol and (err_fd is None or err_fd <= fd_rtol)
        message = (
            ""
            if passed
            else f"differs from JAX by {err:.1e}"
            + ("" if err_fd is None else f", from finite differences by {err_fd:.1e}")
        )
        report.results.append(KindResult("nested", passed, err, err_fd, message))
    return report


def _second_order(T, f, total, argnums, t1, t2):
    """a ↦ d²f(a)[t1, t2] by ``T``'s transformations nested in one function (T: fasttape or jax): the
    jvp along t2 of <grad f, t1>, the gradient taken inside the function the jvp traces.  Its gradient
    is a third derivative."""

    def first(*a):
        g = T.grad(f, argnums=argnums)(*a)
        return sum(total(gi * ti) for gi, ti in zip(g, t1))

    return lambda *a: T.jvp(first, a, t2)[1]
