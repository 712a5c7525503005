"""Exact, machine-independent operation counts of a tape's sweeps (the ``OPS`` columns of the report).

``tape.stats()`` counts instructions; the sweeps' work depends on their sizes, so the counts here are
*element operations* read from the tape's instruction rows (``tape.ins``), one per value produced or
element folded in, under this model:

* **forward** (``OPS(f)``): every instruction.  Elementwise: one per output element.  Reductions and
  cumulative sums: one per input element.  Broadcasts and gathers: one copy per output element.
  Matmul: one multiply-add per ``batch * m * k * n``.  Linear algebra, per matrix (n x n, m right-hand
  sides): solve 2n³/3 + 2n²m (LU, then the solves), slogdet 2n³/3, cholesky n³/3, a triangular solve
  n²m, eigh 9n³ (the textbook count of the symmetric QR algorithm with eigenvectors); for an n x m
  matrix, N = max(n, m) and k = min(n, m), svd 14Nk² + 8k³ (Golub and Van Loan's R-SVD with thin
  singular vectors), qr 4Nk² - 4k³/3 (Householder, then forming Q), lu 2n³/3; permute (applying
  LU's row interchanges) one copy per output element.  Take: one copy per output element; scatter: one
  copy per element of the array updated and one add or write per value; argsort r log₂ r comparisons
  per column of r, argmax and argmin one per input element, searchsorted log₂(n + 1) per value.
* **reverse** (first-order adjoint): only active instructions (their output depends on a differentiated
  input), for each operand that needs an adjoint, the same unit of work as that operand's share of the
  forward: one multiply-accumulate per element (elementwise, reductions, scans, broadcasts' sums,
  gathers' scatter-adds) or one matmul (``Ā = Ḡ Bᵀ``, ``B̄ = Aᵀ Ḡ``); for linear algebra, the products
  and solves of the rule (2n²m for solve and a triangular solve, 2n³ for slogdet's inverse, 3n³ for
  cholesky's and eigh's three n x n products or solves, 6Nk² for svd's and 4Nk² for qr's products and
  solves, 4n³ for lu's).  Comparisons and the piecewise
  constant primitives (sign, floor, ceil, round) have no reverse work.
* **tangent** (forward-mode directional derivative, the first half of an HVP): the same count as the
  reverse sweep, one product per active operand and element (or one matmul per active operand).
* **curvature** (the second-order terms of the HVP's adjoint-of-adjoint sweep): for a nonlinear
  elementwise primitive with ``a`` active operands, ``a²`` terms per element (``a(a - 1)`` for
  multiply, whose own second derivatives vanish); ``logsumexp`` and ``prod`` one per input element;
  matmul with both operands active one extra matmul per operand (``Ā' += Ḡ B'ᵀ``); linear algebra one
  more evaluation of its reverse work (the rule's tangent, ``fasttape.duals``); none for the
  linear and piecewise-linear primitives (add, subtract, negative, abs, maximum, minimum, where, sum,
  max, min, cumsum, broadcast, gather).

Then ``OPS(f) = forward``, ``OPS(grad) = forward + reverse`` (one ``value_and_grad`` call) and
``OPS(hvp) = forward + tangent + reverse + (reverse + curvature)`` (one forward-over-reverse HVP call
in one direction).  The ratios ``OPS(grad)/OPS(f)`` and ``OPS(hvp)/OPS(f)`` are what the cheap-gradient
principle bounds (Griewank and Walther: about 4 for the gradient); the report shows them next to the
measured time ratios.  Input writes, buffer zeroing and guard checks are not counted.
"""

import math

from fasttape import kernels as K

# from the declarations' facts
LINEAR = {p.name for p in K.PRIMITIVES if p.linear}
PIECEWISE_LINEAR = {p.name for p in K.PRIMITIVES if p.piecewise_linear}
# per matrix (n, m): (forward work, reverse work per operand)
LINALG = {
    "solve": lambda n, m: (2 * n**3 // 3 + 2 * n * n * m, 2 * n * n * m),
    "slogdet": lambda n, m: (2 * n**3 // 3, 2 * n**3),
    "cholesky": lambda n, m: (n**3 // 3, 3 * n**3),
    "trisolve": lambda n, m: (n * n * m, 2 * n * n * m),
    "eigh": lambda n, m: (9 * n**3, 3 * n**3),
    "svd": lambda n, m: (14 * max(n, m) * min(n, m) ** 2 + 8 * min(n, m) ** 3, 6 * max(n, m) * min(n, m) ** 2),
    "lu": lambda n, m: (2 * n**3 // 3, 4 * n**3),
    "qr": lambda n, m: (4 * max(n, m) * min(n, m) ** 2 - 4 * min(n, m) ** 3 // 3, 4 * max(n, m) * min(n, m) ** 2),
}
OPERANDS = ((K.C_A, K.C_NA, K.F_GRAD_A), (K.C_B, K.C_NB, K.F_GRAD_B), (K.C_C, K.C_NC, K.F_GRAD_C))


def _sizes(row, prim):
    """(forward work, per-operand unit of reverse work) of one instruction row."""
    n = int(row[K.C_N])
    if prim.kind in ("reduction", "scan"):
        work = int(row[K.C_P0] * row[K.C_P1] * row[K.C_P2])
        return work, work
    if prim.kind == "matmul":
        work = int(row[K.C_P0] * row[K.C_P1] * row[K.C_P2] * row[K.C_P3])
        return work, work
    if prim.kind == "scatter":
        return int(row[K.C_NA] + row[K.C_NB]), int(row[K.C_NB])
    if prim.kind == "argsort":
        return n * max(1, math.ceil(math.log2(max(int(row[K.C_P1]), 1)))), n
    if prim.kind == "argreduce":
        return int(row[K.C_NA]), n
    if prim.kind == "searchsorted":
        return n * max(1, math.ceil(math.log2(int(row[K.C_NA]) + 1))), n
    if prim.kind in LINALG:  # batch, n, m: the first three parameters of both linear-algebra families
        batch, size, rhs = int(row[K.C_P0]), int(row[K.C_P1]), int(row[K.C_P2])
        forward, unit = LINALG[prim.kind](size, rhs)
        return batch * forward, batch * unit
    return n, n


def _curvature(prim, unit, active):
    if not prim.differentiable or prim.name in LINEAR or prim.name in PIECEWISE_LINEAR:
        return 0
    if prim.kind == "matmul" or prim.name == "multiply":
        return unit * active * (active - 1)
    if prim.kind == "reduction" or prim.kind in LINALG:  # logsumexp, prod; the tangent of a matrix rule
        return unit
    return unit * active * active


def count(tape):
    """``{"instructions", "forward", "reverse", "tangent", "curvature", "f", "grad", "hvp",
    "grad_ratio", "hvp_ratio"}``: element-operation counts of one tape under the module's model."""
    forward = reverse = curvature = 0
    for row in tape.ins:
        prim = K.PRIMITIVE_BY_OPCODE[int(row[K.C_OP])]
        work, unit = _sizes(row, prim)
        forward += work
        if not row[K.C_FLAGS] & K.F_ACTIVE or not prim.differentiable:
            continue
        active = sum(1 for _, _, flag in OPERANDS[: prim.arity] if row[K.C_FLAGS] & flag)
        if prim.name == "where":  # each element's adjoint goes to one of the two branches
            active = min(active, 1)
        reverse += unit * active
        curvature += _curvature(prim, unit, active)
    tangent = reverse
    grad, hvp = forward + reverse, forward + tangent + 2 * reverse + curvature
    return {
        "instructions": int(tape.ins.shape[0]),
        "forward": forward,
        "reverse": reverse,
        "tangent": tangent,
        "curvature": curvature,
        "f": forward,
        "grad": grad,
        "hvp": hvp,
        "grad_ratio": grad / forward,
        "hvp_ratio": hvp / forward,
    }
