"""Transformations applied inside a traced function: grad of grad, a gradient step inside a loss,
jvp of grad, a Jacobian of a gradient.

Called on tracers of an outer trace, a transformation records no tape of its own.  It runs the
function on the outer recorder, as one more stretch of the outer program (a *segment*), then appends
its derivative program to the same recorder, instruction by instruction, each written in primitives
by fasttape.rules.  The outer transformation differentiates that like any other code, so
derivatives of any order follow, forward and reverse mixed, and Python control flow inside the inner
function becomes guards of the outer tape (a changed branch re-traces the whole).

Levels.  Each transformation opened inside a trace is a :class:`Level`.  Its differentiated inputs
are fresh copies tagged with it, and every slot computed from them carries the deepest level it
depends on.  The derivative walks only the instructions that depend on the level's own inputs, so a
value of an enclosing level that the inner function closes over is a constant to the inner
derivative and a variable to the outer one: no perturbation confusion.  When the transformation
returns, its level closes; its results come back as values of the enclosing level, and a tracer of
the closed level used again raises TracerLeakError naming both levels.
"""

from __future__ import annotations

import contextlib
import itertools

import numpy as np
import optree

from . import kernels as K
from . import rules
from .errors import InputTypeError, NonScalarOutputError, TracerLeakError
from .primitives import PRIMITIVE_BY_OPCODE
from .recorder import Recorder, active_recorder
from .tracer import Tracer

_SERIALS = itertools.count(1)


class Level:
    """One transformation applied inside a trace (the trace itself is level 0)."""

    __slots__ = ("depth", "name", "parent", "closed", "serial")

    def __init__(self, rec: Recorder, kind: str, fun):
        self.parent = rec.level
        self.depth = (self.parent.depth if self.parent is not None else 0) + 1
        self.name = f"{kind} of {fun if isinstance(fun, str) else repr(_function_name(fun))}"
        self.closed = False
        self.serial = next(_SERIALS)


def _function_name(f):
    from .tracing import _function_name as name

    return name(f)


def recorder_of(tree) -> Recorder | None:
    """The recorder of the tracers among ``tree``'s leaves, None if there are none."""
    found = None
    for leaf in optree.tree_leaves(tree, none_is_leaf=True):
        if isinstance(leaf, Tracer):
            rec = leaf._rec
            if found is not None and rec is not found:
                raise TracerLeakError(
                    f"tracers of two traces ({found.name} and {rec.name}) were passed to one transformation; "
                    "a tracer must not outlive the trace that made it."
                )
            found = rec
    if found is not None and found.closed:
        raise TracerLeakError(
            f"a traced value of {found.name}, a trace that has finished, was passed to a transformation; tracers "
            "must not escape the traced function (return them instead of storing them)."
        )
    return found


def has_tracer(tree) -> bool:
    return any(isinstance(leaf, Tracer) for leaf in optree.tree_leaves(tree, none_is_leaf=True))


def inside_trace(tree) -> bool:
    """Whether a transformation called with arguments ``tree`` records onto a trace: a trace is being
    recorded on this thread (the function may close over its tracers), or an argument is traced."""
    return active_recorder() is not None or has_tracer(tree)


def _recorder(tree) -> Recorder:
    """The trace a transformation inside a traced function records onto."""
    rec = recorder_of(tree)
    active = active_recorder()
    if rec is None:
        if active is None:
            raise TracerLeakError("a nested transformation was called outside any trace")
        return active
    return rec


class Segment:
    """One transformation's stretch of the outer program: its inputs, the rows its function recorded,
    and the derivative walks over them."""

    def __init__(self, rec: Recorder, kind: str, fun):
        self.rec = rec
        self.kind = kind
        self.level = Level(rec, kind, fun)
        if rec.values is None:
            rec.values = {}  # from now on every slot's value is kept: the rules read them
        self.inputs: list[int] = []
        self.start = self.end = len(rec.log)
        self._walk = None
        self._roots: dict[int, tuple[int, int]] = {}
        self._aliases: dict[int, Tracer] = {}

    # -- the level ---------------------------------------------------------
    @contextlib.contextmanager
    def opened(self):
        """Record at this level (again, for a vjp function called later)."""
        rec, saved, was_closed = self.rec, self.rec.level, self.level.closed
        self.level.closed = False
        rec.level = self.level
        try:
            yield
        finally:
            rec.level = saved
            self.level.closed = was_closed

    def close(self):
        self.level.closed = True

    def lift(self, tree):
        """``tree`` with this level's tracers handed to the enclosing level (the level is closed)."""

        def one(leaf):
            if not isinstance(leaf, Tracer) or leaf._rec is not self.rec:
                return leaf
            level = self.rec.slots[leaf._sid].level
            if level is None or level is self.level.parent or level.serial < self.level.serial:
                return leaf
            if level is not self.level and level.closed:
                raise self.rec.leak_error(level)
            return self.rec.alias(leaf, self.level.parent)

        return optree.tree_map(one, tree, none_is_leaf=True)

    # -- inputs --------------------------------------------------------------
    def variable(self, leaf, where: str) -> Tracer:
        """A fresh slot of this level holding ``leaf``'s value: a variable the transformation differentiates."""
        rec = self.rec
        if isinstance(leaf, Tracer):
            if leaf.dtype.kind != "f":
                raise InputTypeError(
                    f"{where} is a traced {leaf.dtype} array, but only real floating-point inputs can be "
                    "differentiated; convert it with .astype(float), or leave it out of argnums."
                )
            x = leaf
        else:
            from .tape import classify_leaf, leaf_type_error

            if classify_leaf(leaf) not in ("array", "scalar"):
                raise leaf_type_error(leaf, where)
            x = rec.as_tracer(np.asarray(leaf, dtype=np.float64))
        value = np.array(x._value, dtype=np.float64)
        copy = rec._emit(K.OP_BROADCAST, x.shape, [x._sid], {"pre": 1, "r": 1, "post": x.size}, value=value,
                         level=self.level)  # fmt: skip
        self.inputs.append(copy._sid)
        return copy

    def variables(self, args, argnums) -> tuple[list, list]:
        """The arguments with the differentiated ones' float leaves replaced by variables; and per
        differentiated argument, (treedef, its variables)."""
        args = list(args)
        per_arg = []
        for i in argnums:
            leaves, treedef = optree.tree_flatten(args[i], none_is_leaf=True)
            fresh = [self.variable(leaf, f"arg{i} (in argnums)") for leaf in leaves]
            args[i] = treedef.unflatten(fresh)
            per_arg.append((treedef, fresh))
        return args, per_arg

    def run(self, fun, args):
        self.start = len(self.rec.log)
        try:
            return fun(*args)
        finally:
            self.end = len(self.rec.log)

    # -- the walks -----------------------------------------------------------
    def root(self, sid: int) -> tuple[int, int]:
        """(root slot, offset within it) of a slot: views lead to the slot that owns the values."""
        found = self._roots.get(sid)
        if found is None:
            slots = self.rec.slots
            slot = slots[sid]
            root = sid
            while slots[root].origin[0] == "view":
                root = slots[root].origin[1]
            found = self._roots[sid] = (root, slot.offset - slots[root].offset)
        return found

    def _wanted(self, row: int, active: set) -> list[bool]:
        rec = self.rec
        prim = PRIMITIVE_BY_OPCODE[rec.log.row(row)[0]]
        operands = rec.log.operands(row)
        if not prim.differentiable or row in rec.frozen_rows or rec.slots[rec.log.out(row)].kind != "f":
            return [False] * len(operands)
        frozen = rules.frozen_operands(prim)
        return [
            k not in frozen and rec.slots[s].kind == "f" and self.root(s)[0] in active for k, s in enumerate(operands)
        ]

    def walk(self):
        """The rows that depend on this level's inputs, each with the operands that carry that dependence."""
        if self._walk is None:
            active = set(self.inputs)
            rows = []
            for row in range(self.start, self.end):
                wanted = self._wanted(row, active)
                if any(wanted):
                    active.add(self.rec.log.out(row))
                    rows.append((row, wanted))
            self._walk = (rows, active)
        return self._walk

    def tracer(self, sid: int) -> Tracer:
        rec = self.rec
        value = rec.values.get(sid)
        if value is None:
            from .recorder import _value_of

            value = _value_of(rec.slots[sid])
            if value is None:
                raise RuntimeError(f"fasttape: the value of slot {sid} was not kept (nested transformation)")
            rec.values[sid] = value
        tracer = Tracer(rec, sid, value)
        level = rec.slots[sid].level
        if level is not None and level.closed:  # a deeper transformation's value, read by this level's rules
            alias = self._aliases.get(sid)
            if alias is None:
                alias = self._aliases[sid] = rec.alias(tracer, self.level)
            tracer = alias
        return tracer

    def pull_back(self, seeds) -> dict:
        """Reverse: the cotangents of this level's inputs (by slot) from ``seeds``, pairs (result
        tracer, its cotangent).  Records at the current level."""
        rows, active = self.walk()
        adjoints: dict[int, list] = {}

        def add(sid, ct):
            root, offset = self.root(sid)
            if root in active:
                adjoints.setdefault(root, []).append((offset, ct))

        for out, ct in seeds:
            if isinstance(out, Tracer) and out._rec is self.rec:
                add(out._sid, ct)
        rec = self.rec
        for row, wanted in reversed(rows):
            out_sid = rec.log.out(row)
            pieces = adjoints.pop(out_sid, None)
            if pieces is None:
                continue
            ins = rules.Instruction.at(rec, row, self.tracer)
            cts = rules.vjp(ins, self._assemble(out_sid, pieces), wanted)
            for sid, ct in zip(rec.log.operands(row), cts):
                if ct is not None:
                    add(sid, ct)
        return {sid: self._assemble(sid, adjoints[sid]) for sid in self.inputs if sid in adjoints}

    def _assemble(self, root: int, pieces):
        """The sum of the cotangent pieces of a slot (a view's piece lies at its offset)."""
        slot = self.rec.slots[root]
        total = None
        for offset, ct in pieces:
            if np.size(ct) != slot.size:
                flat = np.ravel(ct)
                ct = np.pad(flat, (offset, slot.size - offset - np.size(flat)))
            ct = np.reshape(ct, slot.shape)
            total = ct if total is None else total + ct
        return self.rec.as_tracer(total)

    def push_forward(self, seeds: dict) -> dict:
        """Forward: the tangents (by root slot) of every slot that depends on this level's inputs, from
        the inputs' tangents ``seeds`` (by slot).  Records at the current level."""
        rows, _ = self.walk()
        tangents = dict(seeds)
        rec = self.rec
        for row, wanted in rows:
            operands = rec.log.operands(row)
            ts = [self.tangent(s, tangents) if w else None for s, w in zip(operands, wanted)]
            if all(t is None for t in ts):
                continue
            t = rules.jvp(rules.Instruction.at(rec, row, self.tracer), ts)
            if t is not None:
                tangents[rec.log.out(row)] = t
        return tangents

    def tangent(self, sid: int, tangents: dict):
        """The tangent of a slot (a view's: its part of its root's), None where it is zero."""
        root, offset = self.root(sid)
        t = tangents.get(root)
        if t is None:
            return None
        slot = self.rec.slots[sid]
        if slot.size != np.size(t):
            t = np.ravel(t)[offset : offset + slot.size]
        return np.reshape(t, slot.shape)


# --------------------------------------------------------------------------
# the transformations, on tracers
# --------------------------------------------------------------------------
def _split_aux(result, has_aux, name):
    if not has_aux:
        return result, None
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        raise TypeError(
            f"with has_aux=True, {name!r} must return a pair (output, auxiliary data); got {type(result).__name__}."
        )
    return result[0], result[1]


def _scalar_output(out, name):
    """The scalar float output of a function given to grad (a tracer or a number)."""
    leaves = optree.tree_leaves(out, none_is_leaf=True)
    leaf = leaves[0] if len(leaves) == 1 else None
    if leaf is not None and np.shape(leaf) == ():
        kind = leaf.dtype.kind if isinstance(leaf, Tracer) else np.asarray(leaf).dtype.kind
        if kind in "biu":
            raise TypeError(
                f"grad requires a real-valued (float) output, but {name!r} returned a "
                f"{'boolean' if kind == 'b' else 'integer'}, which has no derivative."
            )
        if isinstance(leaf, (Tracer, float, int, np.floating, np.ndarray)):
            return leaf
    shapes = [np.shape(v) for v in leaves]
    raise NonScalarOutputError(
        f"grad requires a function with a scalar output (shape ()), but {name!r} returned "
        f"{shapes[0] if len(shapes) == 1 else f'{len(shapes)} arrays'}. For vector-valued functions use ft.vjp; "
        "to differentiate a sum or mean, reduce inside the function."
    )


def _by_argument(per_arg, values: dict, argnums_is_int):
    """Per differentiated argument its structure with ``values[sid]`` (zeros where absent) as leaves."""
    out = []
    for treedef, fresh in per_arg:
        out.append(treedef.unflatten([values.get(v._sid, np.zeros(v.shape)) for v in fresh]))
    return out[0] if argnums_is_int else tuple(out)


@contextlib.contextmanager
def _inside(fun, args, argnums, has_aux, kind):
    """A level for ``fun`` at ``args``, and ``fun`` run on its variables: yields (segment, the variables per
    differentiated argument, output, aux); the level is closed on exit."""
    seg = Segment(_recorder(args), kind, fun)
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    try:
        with seg.opened():
            inner, per_arg = seg.variables(args, nums)
            out, aux = _split_aux(seg.run(fun, inner), has_aux, _function_name(fun))
            yield seg, per_arg, out, aux
    finally:
        seg.close()


def value_and_grad(fun, args, argnums, has_aux, kind="grad"):
    """(value, gradient, aux) of ``fun`` at traced ``args``, recorded as primitives on their trace."""
    with _inside(fun, args, argnums, has_aux, kind) as (seg, per_arg, out, aux):
        out = _scalar_output(out, _function_name(fun))
        cts = seg.pull_back([(out, np.ones(np.shape(out)))])
        grads = _by_argument(per_arg, cts, isinstance(argnums, int))
    return seg.lift(out), seg.lift(grads), seg.lift(aux)


def _tangent_leaves(primals_tree, tangents, name):
    leaves, treedef = optree.tree_flatten(primals_tree, none_is_leaf=True)
    t_leaves, t_treedef = optree.tree_flatten(tangents, none_is_leaf=True)
    if t_treedef != treedef:
        raise ValueError(f"{name}: the tangents' structure {t_treedef} does not match the primals' {treedef}.")
    for p, t in zip(leaves, t_leaves):
        if np.shape(t) != np.shape(p):
            raise ValueError(f"{name}: a tangent of shape {np.shape(t)} was given for a primal of shape {np.shape(p)}.")
    return t_leaves


def jvp(fun, primals, tangents, has_aux=False):
    """``(fun(*primals), J·tangents)`` (and aux) at traced primals or tangents: one forward walk of
    tangents over the function's rows, recorded as primitives."""
    t_leaves = _tangent_leaves(tuple(primals), tuple(tangents), "jvp")
    with _inside(fun, primals, tuple(range(len(primals))), has_aux, "jvp") as (seg, per_arg, out, aux):
        fresh = [v for _, vs in per_arg for v in vs]
        seeds = {v._sid: seg.rec.as_tracer(t if isinstance(t, Tracer) else np.asarray(t, dtype=np.float64))
                 for v, t in zip(fresh, t_leaves)}  # fmt: skip
        tangents_by_root = seg.push_forward(seeds)
        out_t = optree.tree_map(lambda o: _tangent_of(seg, o, tangents_by_root), out, none_is_leaf=True)
    result = (seg.lift(out), seg.lift(out_t))
    return (*result, seg.lift(aux)) if has_aux else result


def _tangent_of(seg, out, tangents):
    t = seg.tangent(out._sid, tangents) if isinstance(out, Tracer) else None
    return np.zeros(np.shape(out)) if t is None else t


class VJPFunction:
    """The pullback of a vjp taken inside a trace: each call records the reverse walk."""

    def __init__(self, seg: Segment, out, per_arg):
        self.seg, self.out, self.per_arg = seg, out, per_arg
        self._leaves, self._treedef = optree.tree_flatten(out, none_is_leaf=True)

    def __call__(self, cotangent):
        leaves, treedef = optree.tree_flatten(cotangent, none_is_leaf=True)
        if treedef != self._treedef:
            raise ValueError(f"vjp: the cotangent's structure {treedef} does not match the output's {self._treedef}.")
        for o, c in zip(self._leaves, leaves):
            if np.shape(c) != np.shape(o):
                raise ValueError(f"vjp: a cotangent of shape {np.shape(c)} was given for an output of shape "
                                 f"{np.shape(o)}.")  # fmt: skip
        with self.seg.opened():
            cts = self.seg.pull_back(list(zip(self._leaves, leaves)))
            grads = _by_argument(self.per_arg, cts, False)
        return self.seg.lift(grads)


def vjp(fun, primals, has_aux=False):
    with _inside(fun, primals, tuple(range(len(primals))), has_aux, "vjp") as (seg, per_arg, out, aux):
        pass
    result = (seg.lift(out), VJPFunction(seg, out, per_arg))
    return (*result, seg.lift(aux)) if has_aux else result


def hvp(fun, primals, tangents):
    """∂²f·v by forward over reverse, both recorded: the jvp of the recorded gradient."""
    from .api import grad

    if len(primals) == 1:
        return jvp(grad(fun), (primals[0],), (tangents[0],))[1]
    return jvp(grad(fun, argnums=tuple(range(len(primals)))), tuple(primals), tuple(tangents))[1]


def value_grad_and_hvp(fun, primals, tangents):
    """(f, ∇f, ∂²f·v) at traced primals: the jvp of the recorded value_and_grad, one trace of f."""
    from .api import value_and_grad as value_and_grad_of

    argnums = 0 if len(primals) == 1 else tuple(range(len(primals)))
    (value, grads), (_, hv) = jvp(value_and_grad_of(fun, argnums=argnums), tuple(primals), tuple(tangents))
    return value, grads, hv


def jacobian(fun, args, argnums, has_aux, mode, kind="jacobian"):
    """The dense Jacobian in JAX's layout at traced ``args``: one recorded JVP per input element
    (forward) or one recorded VJP per output element (reverse)."""
    with _inside(fun, args, argnums, has_aux, kind) as (seg, per_arg, out, aux):
        outs, out_tree = optree.tree_flatten(out, none_is_leaf=True)
        fresh = [v for _, vs in per_arg for v in vs]
        n_in = sum(v.size for v in fresh)
        n_out = sum(int(np.size(o)) for o in outs)
        if mode == "auto":
            mode = "rev" if n_out < n_in else "fwd"
        J = (
            _forward_matrix(seg, fresh, outs, n_in, n_out)
            if mode == "fwd"
            else _reverse_matrix(seg, fresh, outs, n_in, n_out)
        )
        blocks = []
        row = 0
        for o in outs:
            size = int(np.size(o))
            per = []
            col = 0
            for treedef, vs in per_arg:
                leaves = []
                for v in vs:
                    leaves.append(np.reshape(J[row : row + size, col : col + v.size], np.shape(o) + v.shape))
                    col += v.size
                per.append(treedef.unflatten(leaves))
            blocks.append(per[0] if isinstance(argnums, int) else tuple(per))
            row += size
        result = out_tree.unflatten(blocks)
    return (seg.lift(result), seg.lift(aux)) if has_aux else seg.lift(result)


def _flat_output(seg, outs, tangents):
    parts = [np.ravel(_tangent_of(seg, o, tangents)) for o in outs]
    return np.concatenate(parts) if parts else np.zeros(0)


def _forward_matrix(seg, fresh, outs, n_in, n_out):
    columns = []
    for v in fresh:
        for e in range(v.size):
            seed = np.zeros(v.size)
            seed[e] = 1.0
            seeds = {v._sid: seg.rec.as_tracer(seed.reshape(v.shape))}
            columns.append(_flat_output(seg, outs, seg.push_forward(seeds)))
    if not columns:
        return np.zeros((n_out, 0))
    return np.stack(columns, axis=1)


def _reverse_matrix(seg, fresh, outs, n_in, n_out):
    rows = []
    for o in outs:
        for e in range(int(np.size(o))):
            seed = np.zeros(np.shape(o))
            seed.reshape(-1)[e] = 1.0
            cts = seg.pull_back([(o, seed)])
            rows.append(np.concatenate([np.ravel(cts.get(v._sid, np.zeros(v.shape))) for v in fresh]))
    if not rows:
        return np.zeros((0, n_in))
    return np.stack(rows, axis=0)


def hessian(fun, args, argnums):
    """The dense Hessian at traced ``args``: the forward Jacobian of the recorded gradient (JAX's
    jacfwd(jacrev))."""
    from .api import grad

    return jacobian(grad(fun, argnums=argnums), args, argnums, False, "fwd", kind="hessian")
