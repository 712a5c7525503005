"""Determinism: the same inputs give bitwise-identical results, call after call, tape after tape."""

from __future__ import annotations

import io

import numpy as np

import fasttape as ft


def _loss(x, m):
    y = np.tanh(m @ x) * np.exp(-(x**2))
    return np.sum(np.cumsum(y) ** 2) + np.max(y) + np.sum(np.sin(x)[::-1] * np.arange(x.size))


def _inputs():
    rng = np.random.default_rng(3)
    return rng.normal(size=50), rng.normal(size=(50, 50)) / 7.0


def _same(a, b):
    la, ta = ft.api.optree.tree_flatten(a)
    lb, tb = ft.api.optree.tree_flatten(b)
    assert ta == tb
    for u, v in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v), strict=True)
        assert np.asarray(u).tobytes() == np.asarray(v).tobytes()  # -0.0 and NaN payloads too


def test_repeated_calls_are_bitwise_identical():
    x, m = _inputs()
    v = np.linspace(-1.0, 1.0, x.size)
    transforms = {
        "value_and_grad": lambda: ft.value_and_grad(_loss)(x, m),
        "grad-both": lambda: ft.grad(_loss, argnums=(0, 1))(x, m),
        "hvp": lambda: ft.hvp(lambda y: _loss(y, m), (x,), (v,)),
        "jvp": lambda: ft.jvp(_loss, (x, m), (v, m)),
        "vjp": lambda: ft.vjp(lambda y: np.tanh(m @ y), x)[1](v),
        "hessian": lambda: ft.hessian(lambda y: _loss(y, m))(x),
    }
    for name, fn in transforms.items():
        first = fn()
        for _ in range(20):
            _same(fn(), first)
        assert name


def test_same_function_object_and_tape_repeat_exactly():
    x, m = _inputs()
    vg = ft.value_and_grad(_loss)
    tape = ft.trace(_loss, x, m)
    first = vg(x, m)
    for _ in range(200):
        _same(vg(x, m), first)
        _same(tape.value_and_grad(x, m), first)


def test_retracing_and_reloading_give_the_same_bits():
    x, m = _inputs()
    first = ft.value_and_grad(_loss)(x, m)
    _same(ft.value_and_grad(_loss)(x, m), first)  # a new transformed object records a new tape
    buf = io.BytesIO()
    ft.trace(_loss, x, m).save(buf)
    buf.seek(0)
    _same(ft.load_tape(buf).value_and_grad(x, m), first)


def test_interleaved_shapes_do_not_disturb_each_other():
    x, m = _inputs()
    vg = ft.value_and_grad(_loss)
    small = (x[:5], m[:5, :5])
    a, b = vg(x, m), vg(*small)
    for _ in range(20):
        _same(vg(*small), b)
        _same(vg(x, m), a)
