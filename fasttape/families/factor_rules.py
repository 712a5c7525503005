"""The factorisations' derivative rules: the matrix identities for the tangent and the adjoint of
``cholesky``, ``trisolve``, ``eigh``, ``svd``, ``qr`` and ``lu`` (the factor family, whose module
docstring says what each primitive computes and how the rows are laid out).

Each rule is written once, in ``fasttape.duals``' stack arithmetic: a stack's leading axis holds a
value and its tangents (or a constant, or a stack of cotangents), so the same rule serves the
compiled kernels and the executor, every direction count, and (applied to duals) second order.
``fasttape.traced_duals`` runs the same text on tracers, for derivatives inside traced functions.
Solves go through the stored factors, never an explicit inverse.
"""

from __future__ import annotations

import numpy as np
from numba.extending import register_jitable

from .. import duals as D

LOWER, TRANSPOSED, UNIT = 1, 2, 4  # trisolve's mode bits


# --------------------------------------------------------------------------
# the rules (stacks: fasttape.duals)
# --------------------------------------------------------------------------
@register_jitable
def _from_lower(A):
    """The symmetric matrix whose lower triangle A holds, on every slot."""
    return D.add(D.lower_part(A, 1.0), D.tr(D.lower_part(A, 0.0)), 1.0)


@register_jitable
def cholesky_tangent(L, dA):
    # dL = L Φ(L⁻¹ dA L⁻ᵀ), Φ: the lower triangle with half the diagonal (dA read from its lower triangle)
    Y, _ = D.solve_triangular(L, _from_lower(dA), True, False, False)
    Z, _ = D.solve_triangular_right(L, Y, True, True, False)
    return D.triangular_mm(L, D.lower_part(Z, 0.5), True, False)


@register_jitable
def cholesky_adjoint(L, L_bar):
    # S = L⁻ᵀ Φ(Lᵀ L̄) L⁻¹; the operand is A's lower triangle: Ā = S + Sᵀ below the diagonal, S on it.
    # L's upper triangle is a constant zero: its cotangent (even an infinite one) takes no part
    P = D.lower_part(D.triangular_mm(L, D.lower_part(L_bar, 1.0), True, True), 0.5)
    Y, _ = D.solve_triangular(L, P, True, True, False)
    S, _ = D.solve_triangular_right(L, Y, True, False, False)
    return D.lower_part(D.add(S, D.tr(S), 1.0), 0.5)


@register_jitable
def _op(A, transposed):
    return D.tr(A) if transposed else A


@register_jitable
def trisolve_tangent(T, X, dT, dB, mode, ga, gb):
    # dX = op(T)⁻¹ (dB - op(dT) X), dT on T's triangle
    lower, transposed, unit = (mode & LOWER) != 0, (mode & TRANSPOSED) != 0, (mode & UNIT) != 0
    R = dB if gb else np.zeros((dT.shape[0], X.shape[1], X.shape[2]))  # (no operation writes into R)
    if ga:
        R = D.add(R, D.mm(_op(D.triangle(dT, lower, 0.0 if unit else 1.0), transposed), X), -1.0)
    return D.solve_triangular(T, R, lower, transposed, unit)[0]


@register_jitable
def trisolve_adjoint(T, X, X_bar, mode):
    # B̄ = op(T)⁻ᵀ X̄;  T̄ = -B̄ Xᵀ (or -X B̄ᵀ when op(T) = Tᵀ) on T's triangle
    lower, transposed, unit = (mode & LOWER) != 0, (mode & TRANSPOSED) != 0, (mode & UNIT) != 0
    B_bar, _ = D.solve_triangular(T, X_bar, lower, not transposed, unit)
    P = D.mm(X, D.tr(B_bar)) if transposed else D.mm(B_bar, D.tr(X))
    return D.add(np.zeros((1, T.shape[1], T.shape[2])), D.triangle(P, lower, 0.0 if unit else 1.0), -1.0), B_bar


@register_jitable
def eigh_tangent(w, V, dA):
    # C = Vᵀ dA V (dA the symmetric matrix of its lower triangle):  dw = diag C,  dV = V (F ∘ C)
    C = D.mm(D.tr(V), D.mm(_from_lower(dA), V))
    return D.diagonal(C), D.mm(V, D.gap_product(D.inverse_gaps(w), C))


@register_jitable
def eigh_adjoint(w, V, w_bar, V_bar):
    # M = V (diag w̄ + F ∘ Vᵀ V̄) Vᵀ; the operand is A's lower triangle: Ā = M + Mᵀ below the diagonal, M on it
    K = D.add(D.diagonal_matrix(w_bar), D.gap_product(D.inverse_gaps(w), D.mm(D.tr(V), V_bar)), 1.0)
    M = D.mm(V, D.mm(K, D.tr(V)))
    return D.lower_part(D.add(M, D.tr(M), 1.0), 0.5)


# --------------------------------------------------------------------------
# singular value and QR decompositions of A (n, m), k = min(n, m)
# --------------------------------------------------------------------------
@register_jitable
def _outside(U, X):
    """(I - U Uᵀ) X: X's part outside the span of U's orthonormal columns."""
    return D.add(X, D.mm(U, D.mm(D.tr(U), X)), -1.0)


@register_jitable
def _skew(C):
    """C - Cᵀ."""
    return D.add(C, D.tr(C), -1.0)


@register_jitable
def svd_tangent(s, U, Vt, dA):
    # P = Uᵀ dA V, F_ij = 1 / (s_j² - s_i²):  ds = diag P,  dU = U (F ∘ (P S + S Pᵀ)) + (I - U Uᵀ) dA V S⁻¹,
    # dV = V (F ∘ (S P + Pᵀ S)) + (I - V Vᵀ) dAᵀ U S⁻¹ (the last terms where U or V has more rows than k)
    V = D.tr(Vt)
    dA_V = D.mm(dA, V)
    P = D.mm(D.tr(U), dA_V)
    F = D.inverse_gaps(D.squares(s))
    Pt = D.tr(P)
    dU = D.mm(U, D.gap_product(F, D.add(D.scaled(P, s, True), D.scaled(Pt, s, False), 1.0)))
    dV = D.mm(V, D.gap_product(F, D.add(D.scaled(P, s, False), D.scaled(Pt, s, True), 1.0)))
    if U.shape[1] > U.shape[2]:
        dU = D.add(dU, D.over_columns(_outside(U, dA_V), s), 1.0)
    if V.shape[1] > V.shape[2]:
        dV = D.add(dV, D.over_columns(_outside(V, D.mm(D.tr(dA), U)), s), 1.0)
    return D.diagonal(P), dU, D.tr(dV)


@register_jitable
def svd_adjoint(s, U, Vt, s_bar, U_bar, Vt_bar):
    # Ā = U [diag s̄ + (F ∘ (UᵀŪ - ŪᵀU)) S + S (F ∘ (VᵀV̄ - V̄ᵀV))] Vᵀ
    #     + (I - U Uᵀ) Ū S⁻¹ Vᵀ + U S⁻¹ V̄ᵀ (I - V Vᵀ)   (the transpose of svd_tangent)
    V, V_bar = D.tr(Vt), D.tr(Vt_bar)
    F = D.inverse_gaps(D.squares(s))
    K = D.add(D.diagonal_matrix(s_bar), D.scaled(D.gap_product(F, _skew(D.mm(D.tr(U), U_bar))), s, True), 1.0)
    K = D.add(K, D.scaled(D.gap_product(F, _skew(D.mm(D.tr(V), V_bar))), s, False), 1.0)
    A_bar = D.mm(U, D.mm(K, Vt))
    if U.shape[1] > U.shape[2]:
        A_bar = D.add(A_bar, D.mm(D.over_columns(_outside(U, U_bar), s), Vt), 1.0)
    if V.shape[1] > V.shape[2]:
        A_bar = D.add(A_bar, D.mm(U, D.tr(D.over_columns(_outside(V, V_bar), s))), 1.0)
    return A_bar


@register_jitable
def _right_solve_or_nan(R, B, transposed):
    """X op(R) = B for R's upper triangle; NaN where R has a zero on its diagonal (a rank-deficient A,
    where the QR derivative does not exist: JAX's triangular solve gives inf or NaN)."""
    X, ok = D.solve_triangular_right(R, B, False, transposed, False)
    if not ok:
        X[:, :, :] = np.nan
    return X


@register_jitable
def _thin_qr_tangent(Q, R, dA):
    # A = Q R with R square: C = Qᵀ dA R⁻¹, Ω = tril(C, -1) - tril(C, -1)ᵀ:  dQ = Q (Ω - C) + dA R⁻¹,
    # dR = (C - Ω) R
    dA_Rinv = _right_solve_or_nan(R, dA, False)
    C = D.mm(D.tr(Q), dA_Rinv)
    Omega = _skew(D.lower_part(C, 0.0))
    return D.add(D.mm(Q, D.add(Omega, C, -1.0)), dA_Rinv, 1.0), D.mm(D.add(C, Omega, -1.0), R)


@register_jitable
def _complement_terms(Q, k):
    """A complete Q = [Q1 Q2] of a tall A (n x k): (Z, Zᵀ, W) with Z = Q1b (Q1t - I)⁻¹, Q1t and Q1b Q1's
    first k and last n - k rows, and W = Q1 + Q2 Z."""
    n = Q.shape[1]
    Q1 = D.columns(Q, 0, k)
    Zt = D.solve(D.add(D.rows(Q1, 0, k), D.const(np.eye(k)), -1.0), D.tr(D.rows(Q1, k, n)), True)
    Z = D.tr(Zt)
    return Z, Zt, D.add(Q1, D.mm(D.columns(Q, k, n), Z), 1.0)


@register_jitable
def _complement_tangent(Q, dQ1, k):
    # the last n - k columns of a complete Q (Householder's, as LAPACK's dorgqr forms them) follow the
    # first k:  dQ2 = dQ1 Zᵀ - W (dQ1b - Z dQ1t)ᵀ  (Roberts and Roberts, arXiv:2409.13374, eq. 32)
    n = Q.shape[1]
    Z, Zt, W = _complement_terms(Q, k)
    E = D.add(D.rows(dQ1, k, n), D.mm(Z, D.rows(dQ1, 0, k)), -1.0)
    return D.add(D.mm(dQ1, Zt), D.mm(W, D.tr(E)), -1.0)


@register_jitable
def _complement_adjoint(Q, Q1_bar, Q2_bar, k):
    # the transpose of _complement_tangent:  Ē = -Q̄2ᵀ W,  Q̄1 += Q̄2 Z + [-Zᵀ Ē; Ē]  (rows t, b)
    Z, Zt, W = _complement_terms(Q, k)
    E_bar = D.mm(D.tr(Q2_bar), W)  # -Ē
    rows = np.concatenate((D.mm(Zt, E_bar), D.add(np.zeros((1, E_bar.shape[1], k)), E_bar, -1.0)), axis=1)
    return D.add(D.add(Q1_bar, D.mm(Q2_bar, Z), 1.0), rows, 1.0)


@register_jitable
def qr_tangent(Q, R, A, dA):
    # a wide A = [A1 A2] (n < m) is Q [R1 R2]: (Q, R1) the QR of A1, R2 = Qᵀ A2, so dR2 = dQᵀ A2 + Qᵀ dA2;
    # a complete Q of a tall A (more columns than R has rows): its first k columns, then their complement
    n, k, m = Q.shape[1], R.shape[1], R.shape[2]
    if Q.shape[2] > k:
        dQ1, dR = _thin_qr_tangent(D.columns(Q, 0, k), R, dA)
        return np.concatenate((dQ1, _complement_tangent(Q, dQ1, k)), axis=2), dR
    if n >= m:
        return _thin_qr_tangent(Q, R, dA)
    dQ, dR1 = _thin_qr_tangent(Q, D.columns(R, 0, k), D.columns(dA, 0, k))
    dR2 = D.add(D.mm(D.tr(dQ), D.columns(A, k, m)), D.mm(D.tr(Q), D.columns(dA, k, m)), 1.0)
    return dQ, np.concatenate((dR1, dR2), axis=2)


@register_jitable
def _thin_qr_adjoint(Q, R, Q_bar, R_bar):
    # M = R̄ Rᵀ - Qᵀ Q̄, C̄ its upper triangle mirrored below the diagonal:  Ā = (Q̄ + Q C̄) R⁻ᵀ
    M = D.add(D.mm(R_bar, D.tr(R)), D.mm(D.tr(Q), Q_bar), -1.0)
    C_bar = D.add(M, D.lower_part(_skew(M), 0.0), -1.0)
    return _right_solve_or_nan(R, D.add(Q_bar, D.mm(Q, C_bar), 1.0), True)


@register_jitable
def qr_adjoint(Q, R, A, Q_bar, R_bar):
    """(Ā, whether A was read): a wide A's R2 = Qᵀ A2 gives Ā2 = Q R̄2 and adds A2 R̄2ᵀ to Q̄."""
    n, k, m = Q.shape[1], R.shape[1], R.shape[2]
    if Q.shape[2] > k:  # a complete Q of a tall A
        Q1_bar = _complement_adjoint(Q, D.columns(Q_bar, 0, k), D.columns(Q_bar, k, n), k)
        return _thin_qr_adjoint(D.columns(Q, 0, k), R, Q1_bar, R_bar)
    if n >= m:
        return _thin_qr_adjoint(Q, R, Q_bar, R_bar)
    R2_bar = D.columns(R_bar, k, m)
    Q_bar = D.add(Q_bar, D.mm(D.columns(A, k, m), D.tr(R2_bar)), 1.0)
    A1_bar = _thin_qr_adjoint(Q, D.columns(R, 0, k), Q_bar, D.columns(R_bar, 0, k))
    return np.concatenate((A1_bar, D.mm(Q, R2_bar)), axis=2)


# --------------------------------------------------------------------------
# LU factors with partial pivoting (A = P L U) and their row interchanges
# --------------------------------------------------------------------------
@register_jitable
def _upper(A):
    """The upper triangle of every slot, its diagonal included."""
    return D.add(A, D.lower_part(A, 0.0), -1.0)


@register_jitable
def _unit_lower_times(LU, X):
    """L X, L the unit lower triangle of LU: its part below the diagonal times X, plus X."""
    return D.add(D.mm(D.lower_part(LU, 0.0), X), X, 1.0)


@register_jitable
def lu_tangent(LU, piv, dA):
    # A = P L U: M = L⁻¹ Pᵀ dA U⁻¹, and dLU = dL + dU = L tril(M, -1) + triu(M) U
    Y, _ = D.solve_triangular(LU, D.swapped(dA, piv, False), True, False, True)
    M = _right_solve_or_nan(LU, Y, False)
    return D.add(_unit_lower_times(LU, D.lower_part(M, 0.0)), D.mm(_upper(M), _upper(LU)), 1.0)


@register_jitable
def lu_adjoint(LU, piv, LU_bar):
    # M̄ = tril(Lᵀ L̄U, -1) + triu(L̄U Uᵀ);  Ā = P L⁻ᵀ M̄ U⁻ᵀ  (the transpose of lu_tangent)
    Lt_G = D.add(D.mm(D.tr(D.lower_part(LU, 0.0)), LU_bar), LU_bar, 1.0)
    M_bar = D.add(D.lower_part(Lt_G, 0.0), _upper(D.mm(LU_bar, D.tr(_upper(LU)))), 1.0)
    Y, _ = D.solve_triangular(LU, _right_solve_or_nan(LU, M_bar, True), True, True, True)
    return D.swapped(Y, piv, True)
