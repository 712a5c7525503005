"""The matmul family: batched matrix products, ``(batch, m, k) @ (batch, k, n)``.

The recorder promotes 1-D operands and broadcasts the batch axes (np.matmul's rules), so
each instruction is ``batch`` products of flat C-order runs.  Large products go to BLAS
straight into the buffer (``loops.blas_product``); small ones are plain loops.
"""

from __future__ import annotations

import numpy as np

from ..jit import jit
from ..layout import (
    C_A,
    C_B,
    C_FLAGS,
    C_N,
    C_NA,
    C_NB,
    C_OUT,
    F_CONST_ADJOINT,
    F_GRAD_A,
    F_GRAD_B,
    F_INIT_A,
    F_INIT_B,
    linear_planes,
    param_columns,
)
from ..loops import add_outer, blas_product, zero_first_writes

KINDS = ("matmul",)
PARAMS = ("batch", "m", "k", "n")
P_BATCH, P_M, P_K, P_N = param_columns(PARAMS)


@jit
def matmul_forward(buf, o, A_values, a, B_values, b, batch, m, k, n):
    """The products into ``buf`` at o, of the operands at a in ``A_values`` and b in ``B_values`` (the
    buffer, or an argument where the caller holds it: fasttape.input_refs)."""
    for t in range(batch):
        ao = a + t * m * k
        bo = b + t * k * n
        oo = o + t * m * n
        A = A_values[ao : ao + m * k]
        B = B_values[bo : bo + k * n]
        C = buf[oo : oo + m * n]
        if m * k * n >= 32768:
            np.dot(A.reshape(m, k), B.reshape(k, n), C.reshape(m, n))
        elif n == 1:  # matrix @ vector: one dot product per row
            for i in range(m):
                s = 0.0
                for p in range(k):
                    s += A[i * k + p] * B[p]
                C[i] = s
        else:
            for i in range(m):
                for j in range(n):
                    C[i * n + j] = 0.0
                for p in range(k):
                    av = A[i * k + p]
                    for j in range(n):
                        C[i * n + j] += av * B[p * n + j]


@jit
def matmul_reverse(buf, N, o, a, b, A_values, a_at, B_values, b_at, batch, m, k, n, grad_a, grad_b, init_a, init_b):
    """The operands' adjoints (at N + a and N + b in ``buf``) from the product's; their values at a_at in
    ``A_values`` and b_at in ``B_values`` (as matmul_forward's)."""
    # d(A B) = (G Bᵀ, Aᵀ G) for the adjoint G of the product
    for t in range(batch):
        ao = a + t * m * k
        bo = b + t * k * n
        go = N + o + t * m * n
        A = A_values[a_at + t * m * k : a_at + (t + 1) * m * k]
        B = B_values[b_at + t * k * n : b_at + (t + 1) * k * n]
        G = buf[go : go + m * n]
        dA = buf[N + ao : N + ao + m * k]
        dB = buf[N + bo : N + bo + k * n]
        if m * k * n >= 32768:  # BLAS straight into the adjoint: assigned (beta 0) or accumulated
            if grad_a and n == 1 and not init_a:
                add_outer(dA, G, B, m, k)
            elif grad_a:  # (m x k) = or += (m x n) (k x n)ᵀ
                blas_product(dA, G, B, m, k, n, False, True, 0.0 if init_a else 1.0)
            if grad_b:  # (k x n) = or += (m x k)ᵀ (m x n)
                blas_product(dB, A, G, k, n, m, True, False, 0.0 if init_b else 1.0)
            continue
        if init_a and grad_a:
            dA[:] = 0.0
        if init_b and grad_b:
            dB[:] = 0.0
        if n == 1:
            for i in range(m):
                g = G[i]
                if grad_a:
                    for p in range(k):
                        dA[i * k + p] += g * B[p]
                if grad_b:
                    for p in range(k):
                        dB[p] += A[i * k + p] * g
        else:
            for i in range(m):
                for p in range(k):
                    if grad_a:
                        s = 0.0
                        for j in range(n):
                            s += G[i * n + j] * B[p * n + j]
                        dA[i * k + p] += s
                    if grad_b:
                        av = A[i * k + p]
                        for j in range(n):
                            dB[p * n + j] += av * G[i * n + j]


BLAS_SIZE = 32768  # multiply-adds from which a product goes to BLAS (below: plain loops, no call overhead)


@jit
def matmul_into(dst, A, B, m, k, n, accumulate):
    """dst (m x n) = or += A (m x k) @ B (k x n), all flat C-order runs."""
    if m * k * n >= BLAS_SIZE:
        blas_product(dst, A, B, m, n, k, False, False, 1.0 if accumulate else 0.0)
        return
    if not accumulate:
        for j in range(m * n):
            dst[j] = 0.0
    for i in range(m):
        for p in range(k):
            av = A[i * k + p]
            for j in range(n):
                dst[i * n + j] += av * B[p * n + j]


@jit
def matmul_t_into(dst, A, B, m, k, n, left):
    """dst += Aᵀ B (left: A is m x k, B is m x n, dst k x n) or A Bᵀ (A m x n, B k x n, dst m x k)."""
    if not left and n == 1:
        add_outer(dst, A, B, m, k)
        return
    if m * k * n >= 32768:
        if left:  # (k x n) += (m x k)ᵀ (m x n)
            blas_product(dst, A, B, k, n, m, True, False, 1.0)
        else:  # (m x k) += (m x n) (k x n)ᵀ
            blas_product(dst, A, B, m, k, n, False, True, 1.0)
        return
    if left:
        for i in range(m):
            for p in range(k):
                av = A[i * k + p]
                for j in range(n):
                    dst[p * n + j] += av * B[i * n + j]
    else:
        for i in range(m):
            for p in range(k):
                s = 0.0
                for j in range(n):
                    s += A[i * n + j] * B[p * n + j]
                dst[i * k + p] += s


@jit
def fields(ins, i):
    """A matmul row: (output, A, B, batch, m, k, n, A takes adjoints, B takes adjoints)."""
    flags = ins[i, C_FLAGS]
    return (
        ins[i, C_OUT], ins[i, C_A], ins[i, C_B], ins[i, P_BATCH], ins[i, P_M], ins[i, P_K], ins[i, P_N],
        (flags & F_GRAD_A) != 0, (flags & F_GRAD_B) != 0,
    )  # fmt: skip


@jit
def forward(ins, i, aux, buf):
    o, a, b, batch, m, k, n, _, _ = fields(ins, i)
    matmul_forward(buf, o, buf, a, buf, b, batch, m, k, n)


@jit
def reverse(ins, i, aux, buf, N):
    o, a, b, batch, m, k, n, ga, gb = fields(ins, i)
    flags = ins[i, C_FLAGS]
    init_a, init_b = (flags & F_INIT_A) != 0, (flags & F_INIT_B) != 0
    matmul_reverse(buf, N, o, a, b, buf, a, buf, b, batch, m, k, n, ga, gb, init_a, init_b)


@jit
def matmul_tangent(tan, o, A_values, A_tangents, a_at, B_values, B_tangents, b_at, batch, m, k, n, grad_a, grad_b):
    """One direction's tangent of the products into ``tan`` at o; the operands' values at a_at in ``A_values``
    and their tangents at a_at in ``A_tangents`` (the buffer and the tangent plane, or an argument and its
    direction where the caller holds them: fasttape.input_refs), B's likewise."""
    # d(A B) = dA B + A dB
    for t in range(batch):
        A = A_values[a_at + t * m * k : a_at + (t + 1) * m * k]
        dA = A_tangents[a_at + t * m * k : a_at + (t + 1) * m * k]
        B = B_values[b_at + t * k * n : b_at + (t + 1) * k * n]
        dB = B_tangents[b_at + t * k * n : b_at + (t + 1) * k * n]
        dst = tan[o + t * m * n : o + (t + 1) * m * n]
        if grad_a:
            matmul_into(dst, dA, B, m, k, n, False)
        else:
            dst[:] = 0.0
        if grad_b:
            matmul_into(dst, A, dB, m, k, n, True)


@jit
def matmul_second(buf, tan, adj2, N, o, a, b, A_values, A_tangents, a_at, B_values, B_tangents, b_at, batch, m, k, n,
                  grad_a, grad_b, first_a, first_b, flat, init_a, init_b):  # fmt: skip
    """One direction's second-order adjoints of the operands (at a and b in ``adj2``) and, for an operand
    with ``first_*``, its first-order adjoint (at N + a, N + b in ``buf``): an HVP needs no first-order
    adjoint of an input, which only its gradient would read.  ``flat``: the product's second-order adjoint
    is a structural zero; ``init_*``: this row writes the operand's adjoints first (assigns them).  The
    operands' values and tangents as matmul_tangent's."""
    # the adjoints this row writes first are zeroed before any is added to (A and B may be one array)
    sides = ((first_a, init_a and grad_a, a, batch * m * k), (first_b, init_b and grad_b, b, batch * k * n))
    for first, init, at, size in sides:
        if init:
            adj2[at : at + size] = 0.0
            if first:
                buf[N + at : N + at + size] = 0.0
    # Ā = G Bᵀ, B̄ = Aᵀ G;  Ā' = G' Bᵀ + G B'ᵀ,  B̄' = A'ᵀ G + Aᵀ G'
    for t in range(batch):
        A = A_values[a_at + t * m * k : a_at + (t + 1) * m * k]
        dA = A_tangents[a_at + t * m * k : a_at + (t + 1) * m * k]
        B = B_values[b_at + t * k * n : b_at + (t + 1) * k * n]
        dB = B_tangents[b_at + t * k * n : b_at + (t + 1) * k * n]
        G = buf[N + o + t * m * n : N + o + (t + 1) * m * n]
        G2 = adj2[o + t * m * n : o + (t + 1) * m * n]
        if grad_a:
            gA = buf[N + a + t * m * k : N + a + (t + 1) * m * k]
            gA2 = adj2[a + t * m * k : a + (t + 1) * m * k]
            if first_a:
                matmul_t_into(gA, G, B, m, k, n, False)
            if not flat:
                matmul_t_into(gA2, G2, B, m, k, n, False)
            if grad_b:
                matmul_t_into(gA2, G, dB, m, k, n, False)
        if grad_b:
            gB = buf[N + b + t * k * n : N + b + (t + 1) * k * n]
            gB2 = adj2[b + t * k * n : b + (t + 1) * k * n]
            if first_b:
                matmul_t_into(gB, A, G, m, k, n, True)
            if not flat:
                matmul_t_into(gB2, A, G2, m, k, n, True)
            if grad_a:
                matmul_t_into(gB2, dA, G, m, k, n, True)


# kernels a tape's own kernels call by address with operands where the caller holds them (fasttape.input_refs)
DIRECT = {
    "product_forward": matmul_forward,
    "product_reverse": matmul_reverse,
    "product_tangent": matmul_tangent,
    "product_second": matmul_second,
}


@jit
def tangent(ins, i, aux, buf, tan, NV, k):
    # d(A B) = dA B + A dB
    o, a, b, batch, m, kk, nn, ga, gb = fields(ins, i)
    if k > 1 and m * kk * nn < BLAS_SIZE <= k * m * kk * nn:  # small products: together, one BLAS call
        for bt in range(batch):
            tangent_directions(buf, tan, NV, k, o + bt * m * nn, a + bt * m * kk, b + bt * kk * nn, m, kk, nn, ga, gb)
        return
    for d in range(k):
        t = tan[d * NV : (d + 1) * NV]
        for bt in range(batch):
            ao = a + bt * m * kk
            bo = b + bt * kk * nn
            oo = o + bt * m * nn
            dst = t[oo : oo + m * nn]
            if ga:
                matmul_into(dst, t[ao : ao + m * kk], buf[bo : bo + kk * nn], m, kk, nn, False)
            else:
                dst[:] = 0.0
            if gb:
                matmul_into(dst, buf[ao : ao + m * kk], t[bo : bo + kk * nn], m, kk, nn, True)


@jit
def tangent_directions(buf, tan, NV, k, oo, ao, bo, m, kk, nn, ga, gb):
    """The k directions of one product's tangent as (at most) two products of k times the size, so that
    BLAS sees one large product instead of k small ones: [dA_1; ...; dA_k] B stacks the tangents of A
    as rows, A [dB_1 ... dB_k] those of B as columns."""
    out = np.zeros(k * m * nn)
    if ga:  # rows: direction d's dA is rows d m .. (d + 1) m
        rows = np.empty(k * m * kk)
        for d in range(k):
            rows[d * m * kk : (d + 1) * m * kk] = tan[d * NV + ao : d * NV + ao + m * kk]
        matmul_into(out, rows, buf[bo : bo + kk * nn], k * m, kk, nn, False)
    if gb:  # columns: direction d's dB is columns d nn .. (d + 1) nn
        cols = np.empty(kk * k * nn)
        for d in range(k):
            for p in range(kk):
                cols[p * k * nn + d * nn : p * k * nn + (d + 1) * nn] = tan[
                    d * NV + bo + p * nn : d * NV + bo + (p + 1) * nn
                ]
        wide = np.empty(m * k * nn)
        matmul_into(wide, buf[ao : ao + m * kk], cols, m, kk, k * nn, False)
        for d in range(k):
            for r in range(m):
                out[d * m * nn + r * nn : d * m * nn + (r + 1) * nn] += wide[
                    r * k * nn + d * nn : r * k * nn + (d + 1) * nn
                ]
    for d in range(k):
        tan[d * NV + oo : d * NV + oo + m * nn] = out[d * m * nn : (d + 1) * m * nn]


@jit
def second(ins, i, aux, buf, tan, adj2, N, k, second):
    # Ā = G Bᵀ, B̄ = Aᵀ G;  Ā' = G' Bᵀ + G B'ᵀ,  B̄' = A'ᵀ G + Aᵀ G'
    zero_first_writes(ins, i, buf, adj2, N, k, second)
    o, a, b, batch, m, kk, nn, ga, gb = fields(ins, i)
    flat = second and (ins[i, C_FLAGS] & F_CONST_ADJOINT) != 0  # G' is a structural zero: no G' Bᵀ, Aᵀ G'
    for bt in range(batch):
        ao = a + bt * m * kk
        bo = b + bt * kk * nn
        oo = o + bt * m * nn
        A = buf[ao : ao + m * kk]
        B = buf[bo : bo + kk * nn]
        G = buf[N + oo : N + oo + m * nn]
        if second:
            if ga:
                matmul_t_into(buf[N + ao : N + ao + m * kk], G, B, m, kk, nn, False)
            if gb:
                matmul_t_into(buf[N + bo : N + bo + kk * nn], A, G, m, kk, nn, True)
        for d in range(k):
            Gd = adj2[d * N + oo : d * N + oo + m * nn]
            if ga:
                dA = adj2[d * N + ao : d * N + ao + m * kk]
                if not flat:
                    matmul_t_into(dA, Gd, B, m, kk, nn, False)
                if second and gb:
                    matmul_t_into(dA, G, tan[d * N + bo : d * N + bo + kk * nn], m, kk, nn, False)
            if gb:
                dB = adj2[d * N + bo : d * N + bo + kk * nn]
                if not flat:
                    matmul_t_into(dB, A, Gd, m, kk, nn, True)
                if second and ga:
                    matmul_t_into(dB, tan[d * N + ao : d * N + ao + m * kk], G, m, kk, nn, True)


# --------------------------------------------------------------------------
# NumPy rules (the executor tier)
# --------------------------------------------------------------------------
def _operands(row, buf):
    _, o, n, a, na, b, nb = row[:7]
    batch, m, k, nn = row[P_BATCH : P_N + 1]
    return buf[a : a + na].reshape(batch, m, k), buf[b : b + nb].reshape(batch, k, nn)


def numpy_forward(row, aux, buf):
    o, n = row[C_OUT], row[C_N]
    A, B = _operands(row, buf)
    buf[o : o + n] = np.matmul(A, B).reshape(-1)


def numpy_tangent(row, aux, buf, T):
    # d(A B) = dA B + A dB
    _, o, n, a, na, b, nb = row[:7]
    batch, m, k, nn = row[P_BATCH : P_N + 1]
    flags = row[C_FLAGS]
    A, B = _operands(row, buf)
    d = T.shape[0]
    t = np.zeros((d, batch, m, nn))
    if flags & F_GRAD_A:
        t += np.matmul(T[:, a : a + na].reshape(d, batch, m, k), B)
    if flags & F_GRAD_B:
        t += np.matmul(A, T[:, b : b + nb].reshape(d, batch, k, nn))
    T[:, o : o + n] = t.reshape(d, n)


def numpy_reverse(row, aux, buf, G, G2, T):
    # Ā = G Bᵀ, B̄ = Aᵀ G;  Ā' = G' Bᵀ + G B'ᵀ,  B̄' = A'ᵀ G + Aᵀ G'
    _, o, n, a, na, b, nb = row[:7]
    batch, m, k, nn = row[P_BATCH : P_N + 1]
    flags = row[C_FLAGS]
    ga, gb = flags & F_GRAD_A, flags & F_GRAD_B
    Am, Bm = _operands(row, buf)
    if T is not None and ga and gb:
        g = G[:, o : o + n].reshape(1, batch, m, nn)
        tA = T[:, a : a + na].reshape(T.shape[0], batch, m, k)
        tB = T[:, b : b + nb].reshape(T.shape[0], batch, k, nn)
        G2[:, a : a + na] += np.matmul(g, np.swapaxes(tB, -1, -2)).reshape(G2.shape[0], na)
        G2[:, b : b + nb] += np.matmul(np.swapaxes(tA, -1, -2), g).reshape(G2.shape[0], nb)
    for A in linear_planes(row, G, G2, T):
        g = A[:, o : o + n].reshape(A.shape[0], batch, m, nn)
        if ga:
            A[:, a : a + na] += np.matmul(g, np.swapaxes(Bm, -1, -2)).reshape(A.shape[0], na)
        if gb:
            A[:, b : b + nb] += np.matmul(np.swapaxes(Am, -1, -2), g).reshape(A.shape[0], nb)


# --------------------------------------------------------------------------
# declarations, saved form, listing, JAX
# --------------------------------------------------------------------------
def side_size(prim, params):
    return 0


def validate(prim, row, n_values, pool_end):
    n, na, nb = row[C_N], row[C_NA], row[C_NB]
    batch, m, k, nn = params = tuple(row[P_BATCH : P_N + 1])
    if min(params) < 0:
        return f"bad extents {params}"
    if n != batch * m * nn or na != batch * m * k or nb != batch * k * nn:
        return f"sizes {na}, {nb} -> {n} do not match {batch}x({m}x{k} @ {k}x{nn})"
    return None


def describe(prim, params):
    return f"[{params['batch']}x{params['m']}x{params['k']}x{params['n']}]"


def jax_call(jnp, fn, operands, params, index):
    return fn(operands[0], operands[1], params["batch"], params["m"], params["k"], params["n"])
