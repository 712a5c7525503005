"""``numpy.einsum``, ``tensordot`` and ``kron`` on traced arrays, lowered onto the primitives that run at
BLAS speed: diagonals and transposes (gathers or views), sums, broadcast products and batched ``matmul``.

An einsum is taken apart as NumPy's own optimiser would contract it: repeated letters within an operand
become diagonals, a letter no other operand and not the output needs is summed away at once, and the
operands are contracted two at a time in the order of ``numpy.einsum_path`` (greedy by default, or
``optimize=``'s).  Each pair is one batched matrix product: its letters sorted into batch (shared and
still needed), contracted (shared and needed by no one else) and free, transposed and reshaped to
(batch, rows, k) @ (batch, k, columns).  A pair with nothing to contract is a broadcast product.  The
derivatives are those of the primitives, so every derivative kind of every subscript pattern comes
with them.  ``jax.numpy.einsum`` contracts the same way.
"""

from __future__ import annotations

import math
import operator
import string

import numpy as np

from . import numpy as fnp
from .recorder import concrete, recorder_of

_LETTERS = string.ascii_letters


def einsum(*operands, out=None, optimize=False, dtype=None, order="K", casting="safe"):
    """``numpy.einsum`` (subscripts as a string or in the interleaved form, ellipsis, repeated letters,
    implicit output, ``optimize=``)."""
    if recorder_of(operands) is None:
        return np.einsum(*operands, out=out, optimize=optimize, dtype=dtype, order=order, casting=casting)
    fnp._no_out("einsum", out, {})
    subscripts, arrays = _string_form(operands)
    arrays = [a if recorder_of((a,)) else np.asarray(a, dtype=np.float64) for a in arrays]
    values = [np.asarray(concrete(a), dtype=np.float64) for a in arrays]
    expected = np.einsum(subscripts, *values)  # NumPy's own errors: bad subscripts, mismatched sizes
    inputs, output = _expand(subscripts, [v.shape for v in values])
    path = ["einsum_path"] + [(i,) for i in range(len(arrays))] if len(arrays) == 1 else None
    if path is None:
        planner = optimize if optimize not in (False, None, True) else "greedy"
        path = np.einsum_path(",".join(inputs) + "->" + output, *values, optimize=planner)[0]
    terms = [_alone(a, letters, output, inputs[:i] + inputs[i + 1 :]) for i, (a, letters) in
             enumerate(zip(arrays, inputs))]  # fmt: skip
    for step in path[1:]:
        picked = sorted(step, reverse=True)
        chosen = [terms.pop(i) for i in picked]
        needed = set(output).union(*(letters for _, letters in terms))
        term = chosen[0]
        for other in chosen[1:]:
            term = _pair(term, other, needed)
        terms.append(term)
    (result, letters), *rest = terms
    assert not rest, "einsum_path contracts every operand"
    result, letters = _sum_out(result, letters, set(output))
    result = fnp.transpose(result, [letters.index(c) for c in output]) if letters != output else result
    return fnp.reshape(result, expected.shape) if np.shape(concrete(result)) != expected.shape else result


def _string_form(operands):
    """(subscripts, arrays) from either calling form: ``einsum("ij,jk->ik", a, b)`` or
    ``einsum(a, [0, 1], b, [1, 2], [0, 2])``."""
    if isinstance(operands[0], str):
        return operands[0].replace(" ", ""), list(operands[1:])
    output = operands[-1] if len(operands) % 2 == 1 else None
    operands = operands[:-1] if output is not None else operands
    arrays, sublists = list(operands[0::2]), list(operands[1::2])

    def letters(sublist):
        return "".join("..." if s is Ellipsis else _LETTERS[operator.index(s)] for s in sublist)

    text = ",".join(letters(s) for s in sublists)
    return (text if output is None else text + "->" + letters(output)), arrays


def _expand(subscripts, shapes):
    """Input letter strings and the output string, ellipses replaced by letters of their own (right-aligned
    as NumPy broadcasts them) and an implicit output made explicit."""
    left, arrow, right = subscripts.partition("->")
    inputs = left.split(",")
    used = set(subscripts) - {".", ",", "-", ">"}
    spare = [c for c in _LETTERS if c not in used]
    widths = [len(shape) - len(term.replace("...", "")) for term, shape in zip(inputs, shapes) if "..." in term]
    width = max(widths, default=0)
    dots = "".join(spare[:width])
    inputs = [term.replace("...", dots[width - (len(shape) - len(term.replace("...", ""))) :])
              if "..." in term else term for term, shape in zip(inputs, shapes)]  # fmt: skip
    if arrow:
        output = right.replace("...", dots)
    else:  # implicit: the ellipsis letters, then every letter used once, in alphabetical order
        counts = {c: sum(term.count(c) for term in inputs) for c in set("".join(inputs))}
        output = dots + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in dots))
    return inputs, output


def _alone(array, letters, output, others):
    """An operand's own reductions: diagonals for its repeated letters, then sums over the letters that
    neither the output nor another operand has."""
    while len(set(letters)) < len(letters):
        c = next(c for c in letters if letters.count(c) > 1)
        first = letters.index(c)
        second = letters.index(c, first + 1)
        array = fnp.diagonal(array, 0, first, second)  # the diagonal becomes the last axis
        letters = "".join(x for k, x in enumerate(letters) if k not in (first, second)) + c
    return _sum_out(array, letters, set(output).union(*others))


def _sum_out(array, letters, needed):
    axes = tuple(k for k, c in enumerate(letters) if c not in needed)
    if not axes:
        return array, letters
    return fnp.sum(array, axis=axes), "".join(c for c in letters if c in needed)


def _sizes(term):
    array, letters = term
    return dict(zip(letters, np.shape(concrete(array))))


def _pair(a_term, b_term, needed):
    """Two operands as one: a batched matrix product over the shared letters (or a broadcast product
    when none is contracted)."""
    a_term = _sum_out(*a_term, needed | set(b_term[1]))
    b_term = _sum_out(*b_term, needed | set(a_term[1]))
    (a, a_letters), (b, b_letters) = a_term, b_term
    a_sizes, b_sizes = _sizes(a_term), _sizes(b_term)
    shared = [c for c in a_letters if c in b_letters]
    batch = [c for c in shared if c in needed]
    contracted = [c for c in shared if c not in needed]
    free_a = [c for c in a_letters if c not in b_letters]
    free_b = [c for c in b_letters if c not in a_letters]
    size = {**a_sizes, **b_sizes}
    for c in shared:  # a letter of size 1 on one side broadcasts against the other's
        size[c] = max(a_sizes[c], b_sizes[c])
    a = _arranged(a, a_letters, batch + free_a + contracted, size)
    b = _arranged(b, b_letters, batch + contracted + free_b, size)
    shape_of = lambda letters: tuple(size[c] for c in letters)  # noqa: E731
    if not contracted:  # an outer product on the free letters, elementwise on the batch ones
        a = fnp.reshape(a, shape_of(batch + free_a) + (1,) * len(free_b))
        b = fnp.reshape(b, shape_of(batch) + (1,) * len(free_a) + shape_of(free_b))
        return fnp.multiply(a, b), "".join(batch + free_a + free_b)
    n_batch, rows, k, columns = (math.prod(shape_of(x)) for x in (batch, free_a, contracted, free_b))
    product = fnp.matmul(fnp.reshape(a, (n_batch, rows, k)), fnp.reshape(b, (n_batch, k, columns)))
    return fnp.reshape(product, shape_of(batch + free_a + free_b)), "".join(batch + free_a + free_b)


def _arranged(array, letters, order, size):
    """The operand's axes in ``order``, each at its full size (a size-1 axis broadcast)."""
    if list(letters) != order:
        array = fnp.transpose(array, [letters.index(c) for c in order])
    shape = tuple(size[c] for c in order)
    return fnp.broadcast_to(array, shape) if np.shape(concrete(array)) != shape else array


def tensordot(a, b, axes=2):
    """``numpy.tensordot``: the einsum of the paired axes."""
    if recorder_of((a, b)) is None:
        return np.tensordot(a, b, axes)
    nd_a, nd_b = np.ndim(concrete(a)), np.ndim(concrete(b))
    np.tensordot(np.zeros(np.shape(concrete(a))), np.zeros(np.shape(concrete(b))), axes)  # NumPy's errors
    if isinstance(axes, (int, np.integer)):
        pairs_a, pairs_b = list(range(nd_a - axes, nd_a)), list(range(axes))
    else:
        pairs_a, pairs_b = ([axes_] if isinstance(axes_, (int, np.integer)) else list(axes_) for axes_ in axes)
        pairs_a, pairs_b = [x % nd_a for x in pairs_a], [x % nd_b for x in pairs_b]
    a_letters = list(_LETTERS[:nd_a])
    b_letters = list(_LETTERS[nd_a : nd_a + nd_b])
    for i, j in zip(pairs_a, pairs_b):
        b_letters[j] = a_letters[i]
    out = [c for k, c in enumerate(a_letters) if k not in pairs_a]
    out += [c for k, c in enumerate(b_letters) if k not in pairs_b]
    return einsum("".join(a_letters) + "," + "".join(b_letters) + "->" + "".join(out), a, b)


def kron(a, b):
    """``numpy.kron``: the outer product with each axis of a paired with b's, reshaped."""
    if recorder_of((a, b)) is None:
        return np.kron(a, b)
    shape_a, shape_b = np.shape(concrete(a)), np.shape(concrete(b))
    nd = max(len(shape_a), len(shape_b))
    shape_a, shape_b = (1,) * (nd - len(shape_a)) + shape_a, (1,) * (nd - len(shape_b)) + shape_b
    a, b = fnp.reshape(a, shape_a), fnp.reshape(b, shape_b)
    left, right = _LETTERS[:nd], _LETTERS[nd : 2 * nd]
    outer = einsum(f"{left},{right}->" + "".join(x + y for x, y in zip(left, right)), a, b)
    return fnp.reshape(outer, tuple(x * y for x, y in zip(shape_a, shape_b)))


FUNCTIONS = {np.einsum: einsum, np.tensordot: tensordot, np.kron: kron}
fnp.FUNCTIONS.update(FUNCTIONS)
