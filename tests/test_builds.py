"""Build workers: the command a worker runs, its failures reported as False (the caller then compiles
in its own process), and the plan that builds an entry point's sweeps before the entry point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fasttape import builds, sweeps


def test_every_entry_point_needs_only_known_sweeps_and_has_a_signature():
    assert set(builds.NEEDS) == set(sweeps.ENTRY_POINTS)
    for entry, parts in builds.NEEDS.items():
        assert parts and set(parts) <= set(builds.SWEEPS), entry
        assert len(builds.signature(entry)) == getattr(sweeps, entry).py_func.__code__.co_argcount
    for name in builds.SWEEPS:
        function, types = builds.sweep_signature(name)
        assert len(types) == getattr(sweeps, function).py_func.__code__.co_argcount, name


def test_a_worker_refuses_unknown_names_and_its_failure_is_reported():
    assert builds.run_workers([("no_such_kernel",)]) is False
    command = [sys.executable, "-m", "fasttape", "build", "no_such_kernel"]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2
    assert "unknown kernel(s) ['no_such_kernel']" in result.stderr


@pytest.mark.skipif(not builds.usable(), reason="workers hand kernels over through the disk cache, which is off")
def test_an_entry_point_is_built_after_its_sweeps_then_remembered(monkeypatch):
    monkeypatch.setattr(builds, "_DONE", set())
    started = []
    real = builds.run_workers

    def recording(groups, jobs=None, on_done=None):
        started.append([tuple(g) for g in groups])
        return real(groups, jobs, on_done)

    monkeypatch.setattr(builds, "run_workers", recording)
    assert builds.build_entry("run_jvp")
    assert started == [[("forward_sweep",), ("tangent_sweep",)], [("run_jvp",)]]
    assert builds.build_entry("run_jvp") and builds.build_entry("run_forward")
    assert started[2:] == [[("run_forward",)]]  # its sweep was built already; run_jvp not again
