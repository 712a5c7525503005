"""Rules users add themselves: ``custom_jvp`` and ``custom_vjp`` with JAX's decorator API, and ``stop_gradient``.

The rules are plain NumPy code, traced onto the tape like the rest of the function, so they run
compiled in every sweep (no Python callback per call).  Called on traced arguments, a custom
function records, instead of its own body, an expression E of its inputs x whose value is the
rule's primal output and whose derivatives to second order are the rule's:

    c = stop_gradient(x),  δ = x - c  (0, with the identity as its derivative),  m = c + δ / 2
    custom_jvp:  E = stop_gradient(p) + T,  (p, T) = jvp(m, δ)
    custom_vjp:  E_j = stop_gradient(y_j) + Σ_i <bwd(res, e_j)_i, δ_i>,  (y, res) = fwd(m)

T is linear in δ, so E's value is p and its derivative the rule's J(c).  Evaluating the rule at
the midpoint m makes the second derivative the rule's too: E(c + h) = p + J(c + h/2) h = p + J h +
½ J' h h + O(h³), the rule's own expansion (at c itself the second term would be J' h h, twice
it).  So every sweep (reverse, tangent, HVP, Hessian, k directions) differentiates the rule, to
second order, without a rule of its own; a custom function called inside its own rule applies its
rule once more (two levels, which second order needs), then its body.

A custom VJP's rule gives cotangents, not tangents: its Jacobian is recorded row by row, one
``bwd`` per output element, so a function with many outputs is cheaper with ``custom_jvp``.

The second-order terms reach the first derivative multiplied by δ's value, 0: where a partial
derivative inside the rule is infinite at the point (an exp that overflows), 0 · inf makes that first
derivative NaN, where JAX's first order never evaluates it.  Where the rule's tangent is not finite
at a zero tangent, E keeps the primal value and the derivative there is 0; at non-finite inputs the
derivative is 0 (the value is the rule's).
"""

from __future__ import annotations

import functools
import inspect
import threading

import numpy as np
import optree

from . import numpy as fnp
from .recorder import concrete, recorder_of
from .tracer import Tracer


def stop_gradient(x):
    """x's value with a zero derivative (``jax.lax.stop_gradient``), for arrays and pytrees of them: on a
    traced array an instruction that copies the value each call and is not differentiated."""
    return optree.tree_map(_stop_leaf, x, none_is_leaf=True)


def _stop_leaf(x):
    if not isinstance(x, Tracer):
        return x
    rec = x._rec
    from . import kernels as K

    sid = x._sid
    # where(x, x, x) is x whatever x is (NaN included); no operand is differentiated
    stopped = rec._emit(K.OP_WHERE, x.shape, [sid, sid, sid], value=concrete(x), grads=[False, False, False])
    rec.frozen_rows.add(len(rec.log) - 1)  # nested transformations do not differentiate it either
    return stopped


def _active(x) -> bool:
    return isinstance(x, Tracer) and x._rec.slots[x._sid].active


def _split(x):
    """(m, δ) of one leaf: the midpoint and the tangent that carries x's derivative (both with x's value and
    0 where x is finite; x itself and 0, not differentiated, where it is not)."""
    if not _active(x):
        return x, np.zeros(np.shape(concrete(x)))
    c = stop_gradient(x)
    finite = np.isfinite(c)
    delta = np.where(finite, x - c, 0.0)
    return np.where(finite, c + 0.5 * delta, c), delta


def _settled(primal, tangent):
    """stop_gradient(p) + T, where T's value is 0 (a rule linear in its tangents); a T that is not finite
    there (0 · inf) is dropped, so the value stays p."""
    p = stop_gradient(primal)
    if not isinstance(tangent, Tracer):
        return p
    return p + np.where(np.equal(stop_gradient(tangent), 0.0), tangent, 0.0)


class _Depth(threading.local):
    def __init__(self):
        self.levels: dict = {}


_DEPTH = _Depth()
MAX_RULE_DEPTH = 2  # a custom function inside its own rule: once more with its rule (second order), then its body


class _Custom:
    """What custom_jvp and custom_vjp share: the wrapped function, nondiff_argnums, the rule depth."""

    def __init__(self, fun, nondiff_argnums=()):
        functools.update_wrapper(self, fun)
        self.fun = fun
        self.nondiff_argnums = tuple(sorted(int(i) for i in nondiff_argnums))
        try:
            self._signature = inspect.signature(fun)
        except (TypeError, ValueError):
            self._signature = None

    def _positional(self, args, kwargs):
        if not kwargs:
            return tuple(args)
        if self._signature is None:
            raise TypeError(f"{self.__name__}: keyword arguments need an inspectable signature; pass them by position")
        bound = self._signature.bind(*args, **kwargs)
        bound.apply_defaults()
        if bound.kwargs:
            raise TypeError(f"{self.__name__}: keyword-only arguments {sorted(bound.kwargs)} are not supported by "
                            "custom rules (as in JAX); pass them by position or close over them")  # fmt: skip
        return bound.args

    def _needs_rule(self, args):
        """Whether the call records the rule: some differentiated argument is traced and active."""
        leaves = optree.tree_leaves([a for i, a in enumerate(args) if i not in self.nondiff_argnums],
                                    none_is_leaf=True)  # fmt: skip
        return any(_active(leaf) for leaf in leaves)

    def _plain(self, args):
        """The body itself: outside a trace, for constants, or -- deeper in its own rule than second order
        reads -- on stopped arguments (its value is all a third level contributes to second order, and its
        own derivatives, which the rule replaces, may be infinite there)."""
        if _DEPTH.levels.get(id(self), 0) >= MAX_RULE_DEPTH:
            return self.fun(*stop_gradient(args))
        return self.fun(*args)

    def _check_argnums(self, args):
        for i in self.nondiff_argnums:
            if not 0 <= i < len(args):
                raise ValueError(f"{self.__name__}: nondiff_argnums {self.nondiff_argnums} names argument {i} of a "
                                 f"call with {len(args)} arguments")  # fmt: skip

    def __call__(self, *args, **kwargs):
        args = self._positional(args, kwargs)
        self._check_argnums(args)
        if recorder_of(args) is None or not self._needs_rule(args) or _DEPTH.levels.get(id(self), 0) >= MAX_RULE_DEPTH:
            return self._plain(args)
        if not self._defined():
            kind, define = type(self).__name__, self._DEFINE.format(name=self.__name__)
            raise TypeError(f"no {self._RULE} rule was defined for the {kind} function {self.__name__!r}: define one "
                            f"with {define} before differentiating it")  # fmt: skip
        return self._record(args)

    def _matched(self, rule, what, tree, like, reference):
        """([(leaf, reference leaf)], structure): a rule's output tree against the tree it must match, leaf by
        leaf in structure and shape (TypeError naming the rule otherwise)."""
        leaves, treedef = optree.tree_flatten(tree, none_is_leaf=True)
        ref_leaves, ref_def = optree.tree_flatten(reference, none_is_leaf=True)
        if treedef != ref_def:
            raise TypeError(f"{rule} of {self.__name__!r} returned {what} of structure {treedef} for {like} of "
                            f"structure {ref_def}; they must match")  # fmt: skip
        for leaf, ref in zip(leaves, ref_leaves):
            if leaf is not None and ref is not None and np.shape(concrete(leaf)) != np.shape(concrete(ref)):
                raise TypeError(f"{rule} of {self.__name__!r} returned {what} of shape {np.shape(concrete(leaf))} "
                                f"for {like} of shape {np.shape(concrete(ref))}")  # fmt: skip
        return list(zip(leaves, ref_leaves)), ref_def

    def _run_rule(self, rule, *args):
        key = id(self)
        _DEPTH.levels[key] = _DEPTH.levels.get(key, 0) + 1
        try:
            return rule(*args)
        finally:
            _DEPTH.levels[key] -= 1

    def _split_args(self, args):
        """(midpoints, deltas): per argument, its leaves' (m, δ) as trees of the argument's structure;
        nondiff arguments are passed as they are (stopped if traced) and have no delta."""
        mids, deltas = [], []
        for i, a in enumerate(args):
            if i in self.nondiff_argnums:
                mids.append(stop_gradient(a))
                deltas.append(None)
                continue
            leaves, treedef = optree.tree_flatten(a, none_is_leaf=True)
            pairs = [_split(leaf) if _is_float(leaf) else (leaf, None) for leaf in leaves]
            mids.append(optree.tree_unflatten(treedef, [m for m, _ in pairs]))
            deltas.append(optree.tree_unflatten(treedef, [d for _, d in pairs]))
        return mids, deltas


def _is_float(leaf) -> bool:
    if isinstance(leaf, Tracer):
        return True
    if isinstance(leaf, (bool, int, str, bytes)) or leaf is None:
        return False
    try:
        return np.asarray(leaf).dtype.kind == "f"
    except Exception:
        return False


class custom_jvp(_Custom):  # noqa: N801  (JAX's name)
    """``jax.custom_jvp``: a function with a forward-mode rule, ``f.defjvp(jvp)`` with
    ``jvp(primals, tangents) -> (primal_out, tangent_out)`` (``jvp(*nondiff_args, primals, tangents)`` with
    ``nondiff_argnums``), or ``f.defjvps(*rules)`` with one ``rule(tangent, primal_out, *args)`` per argument.
    Every transformation uses the rule, reverse mode included (the rule must be linear in its tangents)."""

    def __init__(self, fun, nondiff_argnums=()):
        super().__init__(fun, nondiff_argnums)
        self.jvp = None

    def defjvp(self, jvp):
        self.jvp = jvp
        return jvp

    def defjvps(self, *rules):
        """One rule per (differentiated) argument, ``rule(t, primal_out, *args)``; None for an argument with no
        derivative (as in JAX)."""

        def jvp(primals, tangents):
            out = self.fun(*primals)
            total = None
            for rule, t in zip(rules, tangents):
                if rule is None:
                    continue
                term = rule(t, out, *primals)
                total = term if total is None else optree.tree_map(lambda a, b: a + b, total, term)
            if total is None:
                total = optree.tree_map(lambda o: np.zeros(np.shape(concrete(o))), out)
            return out, total

        self.jvp = jvp
        return self

    _RULE, _DEFINE = "JVP", "@{name}.defjvp"

    def _defined(self):
        return self.jvp is not None

    def _record(self, args):
        mids, deltas = self._split_args(args)
        nondiff = [mids[i] for i in self.nondiff_argnums]
        diff = [i for i in range(len(args)) if i not in self.nondiff_argnums]
        primals = tuple(mids[i] for i in diff)
        tangents = tuple(_zeros_for_none(deltas[i], mids[i]) for i in diff)
        result = self._run_rule(self.jvp, *nondiff, primals, tangents)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(f"the JVP rule of {self.__name__!r} must return a pair (primal_out, tangent_out), got "
                            f"{type(result).__name__}")  # fmt: skip
        primal_out, tangent_out = result
        pairs, p_def = self._matched("the JVP rule", "a tangent output", tangent_out, "a primal output", primal_out)
        return optree.tree_unflatten(p_def, [_settled(p, t) for t, p in pairs])


def _zeros_for_none(delta, like):
    """The tangent tree of one argument: its deltas, zeros for the leaves that have none (not float)."""
    return optree.tree_map(lambda d, m: np.zeros(np.shape(concrete(m))) if d is None else d, delta, like,
                           none_is_leaf=True)  # fmt: skip


class custom_vjp(_Custom):  # noqa: N801  (JAX's name)
    """``jax.custom_vjp``: a function with a reverse-mode rule, ``f.defvjp(fwd, bwd)`` with ``fwd(*args) ->
    (out, residuals)`` and ``bwd(residuals, g) -> (cotangent per argument)`` (``bwd(*nondiff_args, res, g)``
    with ``nondiff_argnums``; None for a zero cotangent).  The rule serves every transformation, forward
    mode and second order included (the derivative of the traced ``bwd``); its Jacobian is recorded one
    ``bwd`` per output element."""

    def __init__(self, fun, nondiff_argnums=()):
        super().__init__(fun, nondiff_argnums)
        self.fwd = self.bwd = None

    def defvjp(self, fwd, bwd, symbolic_zeros=False, optimize_remat=False):
        if symbolic_zeros:
            raise NotImplementedError(
                "custom_vjp.defvjp(symbolic_zeros=True) is not supported: the cotangents passed to bwd are arrays "
                "(zeros included); define the rule without symbolic_zeros."
            )
        self.fwd, self.bwd = fwd, bwd

    _RULE, _DEFINE = "VJP", "{name}.defvjp(fwd, bwd)"

    def _defined(self):
        return self.fwd is not None

    def _record(self, args):
        mids, deltas = self._split_args(args)
        result = self._run_rule(self.fwd, *mids)
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise TypeError(f"the fwd rule of {self.__name__!r} must return a pair (output, residuals), got "
                            f"{type(result).__name__}")  # fmt: skip
        out, residuals = result
        nondiff = [mids[i] for i in self.nondiff_argnums]
        diff = [i for i in range(len(args)) if i not in self.nondiff_argnums]
        out_leaves, out_def = optree.tree_flatten(out, none_is_leaf=True)
        shapes = [np.shape(concrete(leaf)) for leaf in out_leaves]
        settled = []
        for k, (leaf, shape) in enumerate(zip(out_leaves, shapes)):
            rows = []
            for j in range(int(np.prod(shape, dtype=np.int64))):
                seed = [np.zeros(s) for s in shapes]
                seed[k].reshape(-1)[j] = 1.0
                g = optree.tree_unflatten(out_def, [s if s.shape else np.float64(s) for s in seed])
                cotangents = self._run_rule(self.bwd, *nondiff, residuals, g)
                rows.append(self._pairing(cotangents, [deltas[i] for i in diff]))
            tangent = fnp.reshape(fnp.stack(rows), shape) if rows and any(isinstance(r, Tracer) for r in rows) else 0.0
            settled.append(_settled(leaf, tangent))
        return optree.tree_unflatten(out_def, settled)

    def _pairing(self, cotangents, deltas):
        """Σ_i <x̄_i, δ_i>: one row of the Jacobian applied to the tangent."""
        if not isinstance(cotangents, (tuple, list)) or len(cotangents) != len(deltas):
            raise TypeError(f"the bwd rule of {self.__name__!r} must return a tuple with one cotangent per "
                            f"differentiated argument ({len(deltas)}), got {cotangents!r:.80}")  # fmt: skip
        total = 0.0
        for ct, delta in zip(cotangents, deltas):
            if ct is None:
                continue
            for c, d in self._matched("the bwd rule", "a cotangent", ct, "an argument", delta)[0]:
                if c is not None and d is not None:
                    total = total + np.sum(c * d)
        return total
