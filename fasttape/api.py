"""User-facing transformations with JAX's names: ``grad``, ``value_and_grad``,
``vjp`` and ``trace``.

Each transformed function keeps a cache of tapes keyed by the input signature
(shapes, container structure, values of static arguments).  A signature may
hold several tapes, one per branch of the user's Python control flow: a replay
whose guards fail falls through to the next tape, and to a fresh trace when
none fits.
"""

from __future__ import annotations

import collections
import functools
import threading
import weakref

import numpy as np
import optree

from .errors import BranchChangedError
from .tape import Tape, classify_leaf, record
from .tracer import Tracer

DEFAULT_CACHE_SIZE = 64
_MAX_BRANCHES = 32


_NESTED_MESSAGE = (
    "{outer} of {inner}: nested differentiation (a transformation applied inside a traced function, such as "
    "grad(grad(f))) is not supported; fasttape records one first-order tape per function. Differentiate the "
    "outer function once, or write the derivative you need explicitly."
)


def _normalize_argnums(argnums, n_args, name):
    if not isinstance(argnums, (int, tuple, list)) or isinstance(argnums, bool):
        raise TypeError(f"{name}: argnums must be an int or a tuple of ints, got {argnums!r}.")
    nums = (argnums,) if isinstance(argnums, int) else tuple(argnums)
    if not nums:
        raise ValueError(f"{name}: argnums must name at least one argument, got {argnums!r}.")
    for a in nums:
        if not isinstance(a, int) or isinstance(a, bool):
            raise TypeError(f"{name}: argnums must be an int or a tuple of ints, got {argnums!r}.")
        if not -n_args <= a < n_args:
            raise ValueError(
                f"{name}: argnums {argnums!r} is out of bounds for a call with {n_args} positional arguments."
            )
    nums = tuple(a % n_args for a in nums)
    if len(set(nums)) != len(nums):
        raise ValueError(f"{name}: argnums {argnums!r} names an argument twice.")
    return nums[0] if isinstance(argnums, int) else nums


def _leaf_key(leaf):
    kind = classify_leaf(leaf)
    if kind == "array":
        return (np.shape(leaf),)
    if kind == "scalar":
        return "s"
    if isinstance(leaf, np.ndarray):
        return ("k", leaf.dtype.str, leaf.shape, leaf.tobytes())
    try:
        hash(leaf)
    except TypeError:
        return ("id", id(leaf))
    return ("k", type(leaf), leaf)


def signature_key(args, kind="transform"):
    """Hashable description of everything a tape is specialised to."""
    for a in args:
        if type(a) is not np.ndarray or a.dtype.kind != "f":
            break
    else:
        return tuple([a.shape for a in args])  # the common case, kept cheap
    parts = []
    for a in args:
        leaves, treedef = optree.tree_flatten(a, none_is_leaf=True)
        if any(isinstance(leaf, Tracer) for leaf in leaves):
            raise NotImplementedError(_NESTED_MESSAGE.format(outer=kind, inner="a traced function"))
        parts.append((treedef, tuple(_leaf_key(leaf) for leaf in leaves)))
    return ("tree", tuple(parts))


class TapeCache:
    """An LRU map from input signature to the tapes recorded for it (one per branch)."""

    def __init__(self, maxsize=DEFAULT_CACHE_SIZE):
        self.maxsize = maxsize
        self._tapes: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            tapes = self._tapes.get(key)
            if tapes is None:
                return ()
            self._tapes.move_to_end(key)
            return tuple(tapes)

    def add(self, key, tape):
        with self._lock:
            tapes = self._tapes.setdefault(key, [])
            tapes.insert(0, tape)
            del tapes[_MAX_BRANCHES:]
            self._tapes.move_to_end(key)
            while len(self._tapes) > self.maxsize:
                self._tapes.popitem(last=False)

    def tapes(self):
        with self._lock:
            return [t for tapes in self._tapes.values() for t in tapes]

    def clear(self):
        with self._lock:
            self._tapes.clear()

    def __len__(self):
        return sum(len(t) for t in self._tapes.values())


class _Transformed:
    """Common machinery: find (or record) the tape for these arguments, run it."""

    kind = "transform"

    def __init__(self, fun, argnums, has_aux, cache_size=DEFAULT_CACHE_SIZE):
        if not callable(fun):
            raise TypeError(f"{self.kind} expects a callable, got {type(fun).__name__}.")
        self.fun = fun
        self.argnums = argnums
        self.has_aux = has_aux
        self.cache = TapeCache(cache_size)
        if isinstance(fun, _Transformed):
            raise NotImplementedError(_NESTED_MESSAGE.format(outer=self.kind, inner=fun.kind))
        functools.update_wrapper(self, fun, updated=())

    def _record(self, args, argnums):
        return record(self.fun, args, argnums, self.has_aux)

    def _run(self, args, runner):
        """``runner(tape, args)`` returns None when a guard fails."""
        if not args:
            raise TypeError(f"{self.kind} of {self.__name__!r} needs at least one positional argument.")
        key = signature_key(args, self.kind)
        for tape in self.cache.get(key):
            result = runner(tape, args)
            if result is not None:
                return result
        argnums = _normalize_argnums(self.argnums, len(args), self.kind)
        tape = self._record(args, argnums)
        self.cache.add(key, tape)
        result = runner(tape, args)
        if result is None:
            raise BranchChangedError(
                f"{self.__name__!r}: a Python if/while on a traced value took one branch while tracing and "
                "the other when the tape replayed the same inputs: the condition is within rounding error of "
                "its threshold. Make the comparison robust (for example use np.where for the selection)."
            )
        return result

    def tape(self, *args) -> Tape:
        """The tape these arguments replay (recorded if needed)."""
        return self._run(args, lambda tape, a: tape if tape.forward(*a) is not None else None)


class ValueAndGrad(_Transformed):
    kind = "value_and_grad"

    def __call__(self, *args):
        value, grads, aux = self._run(args, Tape._value_and_grad)
        return ((value, aux), grads) if self.has_aux else (value, grads)


class Grad(_Transformed):
    kind = "grad"

    def __call__(self, *args):
        value, grads, aux = self._run(args, Tape._value_and_grad)
        return (grads, aux) if self.has_aux else grads


def grad(fun, argnums=0, has_aux=False):
    """Gradient of a scalar-valued ``fun`` with respect to ``argnums`` (int or tuple).

    Arguments may be float arrays, Python floats, or tuples/lists/dicts of them;
    the gradient comes back in the same structure.  Non-float arguments are
    static: part of the tape's signature.
    """
    return Grad(fun, argnums, has_aux)


def value_and_grad(fun, argnums=0, has_aux=False):
    """``(fun(*args), grad(fun)(*args))`` from one forward and one reverse sweep."""
    return ValueAndGrad(fun, argnums, has_aux)


_VJP_TAPES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VJP_LOCK = threading.Lock()


def vjp(fun, *primals, has_aux=False):
    """``(out, vjp_fn)`` (and ``aux`` with has_aux), as ``jax.vjp``.

    ``vjp_fn(cotangent)`` returns a tuple with one entry per primal; it may be
    called many times and reuses the forward values computed here.
    """
    if not callable(fun):
        raise TypeError(f"vjp expects a callable, got {type(fun).__name__}.")
    try:
        with _VJP_LOCK:
            transform = _VJP_TAPES.get(fun)
            if transform is None or transform.has_aux != has_aux:
                transform = _Transformed(fun, tuple(range(len(primals))), has_aux)
                transform.kind = "vjp"
                _VJP_TAPES[fun] = transform
    except TypeError:  # not weak-referenceable: no caching
        transform = _Transformed(fun, tuple(range(len(primals))), has_aux)
    transform.argnums = tuple(range(len(primals)))

    def runner(tape, args):
        try:
            return tape.vjp(*args)
        except BranchChangedError:
            return None

    return transform._run(primals, runner)


def trace(fun, *args, argnums=0, has_aux=False) -> Tape:
    """Record ``fun`` on these arguments and return the :class:`Tape` itself."""
    if not callable(fun):
        raise TypeError(f"trace expects a callable, got {type(fun).__name__}.")
    argnums = _normalize_argnums(argnums, len(args), "trace")
    return record(fun, args, argnums, has_aux)
