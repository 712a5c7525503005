"""The memory budget of a tape and the size of the tape caches (``ft.set_options``)."""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest

import fasttape as ft
from fasttape import config


def _sumsq(x):
    return np.sum(x * x)


def test_a_tape_over_budget_fails_before_its_buffers_are_allocated():
    x = np.ones(500_000)  # 16 bytes per value for values + adjoints: the tape needs > 8 MB
    g = ft.grad(lambda v: np.sum(v))
    tracemalloc.start()
    try:
        with ft.options(memory_budget="1MiB"):
            with pytest.raises(MemoryError) as info:
                g(x)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    message = str(info.value)
    needed = int(message.split(" needs ")[1].split(" bytes")[0])
    assert needed >= 16 * x.size
    assert "memory budget of 1048576 bytes" in message
    assert "ft.set_options(memory_budget=" in message and "FASTTAPE_MEMORY_BUDGET" in message
    assert peak < needed  # the copy of the input was made, the value + adjoint buffer was not
    assert len(g.cache) == 0
    np.testing.assert_array_equal(g(x), np.ones_like(x))  # the default budget allows it


def test_budget_none_means_no_limit_and_options_restore():
    before = ft.get_options()
    with ft.options(memory_budget=None, cache_size=3):
        assert ft.get_options() == {
            "memory_budget": None,
            "cache_size": 3,
            "tape_kernels": before["tape_kernels"],
            "workers": before["workers"],
        }
        np.testing.assert_array_equal(ft.grad(_sumsq)(np.ones(4)), 2.0 * np.ones(4))
    assert ft.get_options() == before
    previous = ft.set_options(memory_budget="2GiB")
    try:
        assert ft.get_options()["memory_budget"] == 2 * 2**30
        assert previous == {"memory_budget": before["memory_budget"]}
    finally:
        ft.set_options(**previous)


def test_loading_a_tape_over_budget_raises_memory_error():
    buf = io.BytesIO()
    ft.trace(_sumsq, np.ones(1000)).save(buf)
    buf.seek(0)
    with ft.options(memory_budget=4096), pytest.raises(MemoryError, match=r"memory budget of 4096 bytes"):
        ft.load_tape(buf)
    buf.seek(0)
    assert ft.load_tape(buf).n_values > 1000


@pytest.mark.parametrize(
    "text, expected",
    [("4000000000", 4_000_000_000), ("512M", 512 * 10**6), ("8GiB", 8 * 2**30), ("1.5kib", 1536), ("none", None),
     ("0", None), ("1e9", 10**9)],
)  # fmt: skip
def test_parse_sizes(text, expected):
    assert config.parse_bytes(text) == expected


def test_environment_variables_set_the_defaults(monkeypatch):
    monkeypatch.setenv("FASTTAPE_MEMORY_BUDGET", "3GiB")
    monkeypatch.setenv("FASTTAPE_CACHE_SIZE", "5")
    opts = config._Options()
    assert (opts.memory_budget, opts.cache_size) == (3 * 2**30, 5)
    monkeypatch.setenv("FASTTAPE_CACHE_SIZE", "many")
    with pytest.raises(ValueError, match="FASTTAPE_CACHE_SIZE='many' must be a positive integer"):
        config._Options()
    monkeypatch.delenv("FASTTAPE_MEMORY_BUDGET")
    monkeypatch.delenv("FASTTAPE_CACHE_SIZE")
    opts = config._Options()
    assert opts.memory_budget == config.default_memory_budget() > 0
    assert opts.cache_size == 64


def test_tape_cache_is_a_bounded_lru_of_configurable_size():
    g = ft.grad(_sumsq)
    with ft.options(cache_size=3):
        for n in (1, 2, 3, 4, 5):
            g(np.ones(n))
        assert len(g.cache) == 3
        g(np.ones(3))  # most recently used now: survives the next insertion
        g(np.ones(6))
        shapes = sorted(t._args[0].leaves[0].shape[0] for t in g.cache.tapes())
        assert shapes == [3, 5, 6]
    assert g.cache.maxsize == 64


def test_an_explicit_cache_size_is_kept():
    cache = ft.api.TapeCache(2)
    with ft.options(cache_size=50):
        for k in range(5):
            cache.add(k, object())
    assert len(cache) == 2 and cache.maxsize == 2
