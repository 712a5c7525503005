"""Recording: run a user's function once on tracers and freeze what the
:class:`~fasttape.recorder.Recorder` appended into a :class:`~fasttape.tape.Tape` (:func:`record`),
the arguments' specs built on the way in and the results' on the way out.
"""

from __future__ import annotations

import contextlib
import functools
import gc

import numpy as np
import optree

from . import scipy_linalg, scipy_special
from .recorder import Recorder, recording
from .tape import ArgSpec, Leaf, Tape, _arg_name, _flatten, classify_leaf, leaf_type_error
from .tracer import Tracer


@contextlib.contextmanager
def _collector_paused():
    """Tracing allocates a few objects per operation and frees none: the cyclic garbage collector
    would walk the growing trace again and again (about 40 % of tracing a long scalar loop).  It is
    paused while recording and resumed (if it was on) afterwards; nothing is lost, only deferred."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def record(f, args, argnums, has_aux=False, name=None, static_argnums=()) -> Tape:
    """Run ``f`` once on tracers and freeze the result into a Tape; the arguments at ``static_argnums`` are
    baked in whole (as JAX's)."""
    with _collector_paused():
        return _record(f, args, argnums, has_aux, name, frozenset(static_argnums))


def _record(f, args, argnums, has_aux, name, static_argnums) -> Tape:
    name = name or _function_name(f)
    diff = set(argnums if isinstance(argnums, tuple) else (argnums,))
    rec = Recorder()
    rec.name = f"the trace of {name!r}"
    specs: list[ArgSpec] = []
    traced_args = []
    for i, arg in enumerate(args):
        paths, leaves, treedef = optree.tree_flatten_with_path(arg, none_is_leaf=True)
        spec_leaves = []
        traced_leaves = []
        for path, leaf in zip(paths, leaves):
            leaf_name = _arg_name(i, path)
            kind = "static" if i in static_argnums else classify_leaf(leaf)
            if i in diff and kind in ("static", "integers"):
                raise leaf_type_error(leaf, f"{leaf_name} (in argnums)")
            if kind == "static":
                spec_leaves.append(Leaf("static", leaf_name, value=leaf))
                traced_leaves.append(leaf)
                continue
            if np.iscomplexobj(leaf):
                raise leaf_type_error(leaf, leaf_name)
            value = np.array(leaf, dtype=np.int64 if kind == "integers" else np.float64)
            tracer = rec.input(value, i in diff, leaf_name)
            slot = rec.slots[tracer._sid]
            spec_leaves.append(Leaf(kind, leaf_name, slot.offset, slot.shape, slot.size))
            traced_leaves.append(tracer)
        specs.append(ArgSpec(treedef, spec_leaves, i in diff))
        traced_args.append(treedef.unflatten(traced_leaves))
    try:
        # SciPy's functions record onto the tape, and so do transformations called inside f
        with scipy_linalg.intercepting(), scipy_special.intercepting(), recording(rec):
            result = f(*traced_args)
    finally:
        rec.closed = True  # tracers kept after this point fail loudly
    if has_aux:
        if not (isinstance(result, (tuple, list)) and len(result) == 2):
            raise TypeError(
                f"with has_aux=True, {name!r} must return a pair (output, auxiliary data); got {type(result).__name__}."
            )
        result, aux = result
    else:
        aux = None
    out_kind = _output_kind(rec, result)
    outputs = _record_results(rec, result, name, allow_static=False)
    aux_out = _record_results(rec, aux, name, allow_static=True)
    return Tape(rec, specs, argnums, outputs, aux_out, has_aux, name, out_kind)


def _output_kind(rec: Recorder, result) -> str:
    """'f' for float outputs; 'b' / 'i' for a single boolean / integer output (no gradient)."""
    leaves, _ = _flatten(result)
    if len(leaves) != 1:
        return "f"
    leaf = leaves[0]
    if isinstance(leaf, Tracer):
        kind = rec.slots[rec.slot_of(leaf)].kind
        return kind if kind in "bi" else "f"
    kind = np.asarray(leaf).dtype.kind if isinstance(leaf, (bool, int, float, np.generic, np.ndarray)) else "f"
    return {"b": "b", "i": "i", "u": "i"}.get(kind, "f")


def _function_name(f):
    while isinstance(f, functools.partial):
        f = f.func
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or type(f).__name__


def _record_results(rec: Recorder, tree, name, allow_static):
    """(treedef, [(offset, shape[, "bool" | "int"]) | ("const", value)], slot ids) of a result tree."""
    leaves, treedef = _flatten(tree)
    entries = []
    sids = []
    for leaf in leaves:
        if isinstance(leaf, Tracer):
            sid = rec.slot_of(leaf)  # a tracer from another trace is an error
        elif allow_static:
            entries.append(("const", leaf))
            continue
        else:
            arr = np.asarray(leaf)
            if arr.dtype.kind not in "biuf":
                raise TypeError(
                    f"{name!r} returned a value of type {type(leaf).__name__}; a traced function must return "
                    "float arrays (or containers of them)."
                )
            sid = rec.constant(arr.astype(np.float64))  # a constant output still gets a slot
        s = rec.slots[sid]
        typed = allow_static and s.kind != "f"
        entries.append((s.offset, s.shape, "bool" if s.is_bool else "int") if typed else (s.offset, s.shape))
        sids.append(sid)
    return treedef, entries, sids
