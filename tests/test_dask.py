"""``fasttape.dask``: batches of gradients on a ``LocalCluster`` of worker processes.

Every result is compared, bit for bit, with the same batch run here (``.map``, ``value_and_grad_batch``): the
workers run the very compiled code on the same inputs.  The cluster's worker processes load the tape once
(a plugin, checked by its identity on each worker), survive one of them being killed mid-run (its chunks,
finished or not, run again elsewhere), and a worker that cannot import fasttape is named.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time

import numpy as np
import optree
import pytest

import fasttape as ft

from .helpers import branchy_loss as _branchy
from .helpers import regression_loss as _loss

dask_array = pytest.importorskip("dask.array")
distributed = pytest.importorskip("distributed")
ftd = pytest.importorskip("fasttape.dask")

pytestmark = pytest.mark.xdist_group("dask")  # (nox -s tests: --dist loadgroup, one process, one cluster)


def _two_layers(params, x):
    W, b = params
    h = np.tanh(W @ x + b)
    return np.sum(h**2), {"mean": np.mean(h), "positive": h > 0.0}


rng = np.random.default_rng(7)
B = 600
W = rng.uniform(-1.0, 1.0, (B, 40))
X = rng.normal(size=(30, 40))
Y = rng.normal(size=30)


def _identical(a, b):
    """The same structure, shapes, dtypes and bits."""
    leaves_a, tree_a = optree.tree_flatten(a)
    leaves_b, tree_b = optree.tree_flatten(b)
    assert tree_a == tree_b
    for x, y in zip(leaves_a, leaves_b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.shape == y.shape and x.dtype == y.dtype
        assert np.array_equal(x, y), f"differ by up to {np.max(np.abs(x.astype(float) - y.astype(float)))}"


@pytest.fixture(scope="module")
def client():
    with (
        distributed.LocalCluster(n_workers=3, threads_per_worker=1, processes=True, dashboard_address=":0") as cluster,
        distributed.Client(cluster, set_as_default=False) as client,
    ):
        yield client


def _plugin_ids(client, name):
    """Per worker: the id of its plugin object ``name`` (None without one)."""

    def plugin_id(name, dask_worker):
        plugin = dask_worker.plugins.get(name)
        return None if plugin is None else id(plugin)

    return client.run(plugin_id, name)


def test_the_issue_example_ships_the_tape_once_per_worker(client):
    g = ft.grad(_loss)
    W_chunks = [W[:100], W[100:350], W[350:]]
    futs = ft.dask.map(g, W_chunks, X, Y, client=client)  # the tape ships once per worker
    assert len(futs) == 3 and all(isinstance(f, distributed.Future) for f in futs)
    G = futs.result()
    _identical(G, g.map(W, X, Y))
    shipped = _plugin_ids(client, futs.plugin)
    assert len(shipped) == 3 and None not in shipped.values()  # the tape, on every worker
    again = ft.dask.compute(g, W[::-1].copy(), X, Y, client=client, chunk_size=50)
    _identical(again, g.map(W[::-1].copy(), X, Y))
    assert _plugin_ids(client, futs.plugin) == shipped  # the same plugin objects: not shipped again


def test_numpy_and_dask_arrays_are_split_into_chunks(client):
    vg = ft.value_and_grad(_loss)
    expected = vg.map(W, X, Y)
    batch = ft.dask.map(vg, W, X, Y, client=client, chunk_size=64)
    assert len(batch) == -(-B // 64) and batch.starts[:3] == [0, 64, 128]
    _identical(batch.result(), expected)
    blocks = dask_array.from_array(W, chunks=(250, 40))
    batch = ft.dask.map(vg, blocks, X, Y, client=client)
    assert len(batch) == 3  # the Dask array's blocks
    _identical(batch.result(), expected)
    transposed = dask_array.from_array(W.T.copy(), chunks=(20, 100))  # the batch on axis 1, split on both axes
    _identical(ft.dask.compute(vg, transposed, X, Y, in_axes=(1, None, None), client=client), expected)
    shared = dask_array.from_array(X, chunks=(10, 40))  # a shared Dask array
    _identical(ft.dask.compute(vg, W, shared, Y, client=client, chunk_size=200), expected)


def test_trees_and_aux_match_the_local_batch(client):
    g = ft.grad(_two_layers, has_aux=True)
    Ws, bs = rng.normal(size=(B, 8, 40)), rng.normal(size=(B, 8))
    x = rng.normal(size=40)
    expected = g.map((Ws, bs), x)
    _identical(ft.dask.compute(g, (Ws, bs), x, client=client, chunk_size=128), expected)
    _identical(ft.dask.compute(g, [(Ws[:300], bs[:300]), (Ws[300:], bs[300:])], x, client=client), expected)
    tape = g.tape((Ws[0], bs[0]), x)
    _identical(ft.dask.compute(tape, (Ws, bs), x, client=client), tape.value_and_grad_batch((Ws, bs), x))


def test_members_on_another_branch_are_finished_on_the_client(client):
    vg = ft.value_and_grad(_branchy)
    values, grads = ft.dask.compute(vg, W, X, Y, client=client, chunk_size=100)
    assert 0 < np.sum(np.sum(W, axis=1) > 0) < B  # both branches taken
    _identical((values, grads), vg.map(W, X, Y))
    tape = ft.trace(_branchy, W[0], X, Y)
    with pytest.raises(ft.BranchChangedError, match=r"batch members \[\d+, \d+, .*of 600\) take a different branch"):
        ft.dask.compute(tape, W, X, Y, client=client)


def test_the_tape_kernels_tier_runs_on_the_workers(client):
    def loss(w, X, y):  # a function of its own: a tape not yet hot anywhere
        return _loss(w, X, y) + np.sum(np.sin(w))

    g = ft.grad(loss)
    with ft.options(tape_kernels="always"):
        expected = g.map(W, X, Y)  # (compiles the tape's kernels here, into the disk cache the workers load)
        assert g.tape(W[0], X, Y)._kernels.state == "ready"
        batch = ft.dask.map(g, W, X, Y, client=client)
        _identical(batch.result(), expected)

    def state(name, dask_worker):
        return dask_worker.plugins[name].tape._kernels.state

    ran = {w for holders in client.who_has(batch.futures).values() for w in holders}  # (the workers that ran chunks)
    assert batch.plugin.endswith("-kernels") and ran
    assert client.run(state, batch.plugin, workers=list(ran)) == dict.fromkeys(ran, "ready")


def test_bad_inputs_raise_before_anything_runs(client):
    g = ft.grad(_loss)
    with pytest.raises(ValueError, match=r"chunk 1\): mapped sizes differ: arg0 has 100 members .* arg2 has 99"):
        ft.dask.map(g, [W[:50], W[50:150]], X, [np.zeros(50), np.zeros(99)], in_axes=(0, None, 0), client=client)
    with pytest.raises(ValueError, match="in_axes has 2 entries but the call has 3 positional arguments"):
        ft.dask.map(g, W, X, Y, in_axes=(0, None), client=client)
    with pytest.raises(ValueError, match=r"in_axes 2 for arg0, but it has 2 dimension\(s\) \(shape \(600, 40\)\)"):
        ft.dask.map(g, dask_array.from_array(W), X, Y, in_axes=(2, None, None), client=client)
    with pytest.raises(TypeError, match="arg0 is a list of 2 chunks but arg2, also mapped, is a ndarray"):
        ft.dask.map(g, [W[:50], W[50:]], X, Y, in_axes=(0, None, 0), client=client)
    with pytest.raises(TypeError, match=r"expects ft.grad\(f\), ft.value_and_grad\(f\) or a Tape, got function"):
        ft.dask.map(_loss, W, X, Y, client=client)
    with pytest.raises(ValueError, match="chunk_size must be a positive int"):
        ft.dask.map(g, W, X, Y, chunk_size=0, client=client)


def _pick(w, i):
    return np.sum(w[i] ** 2)


def test_an_error_in_a_member_names_it(client):
    Ws, I = rng.normal(size=(40, 5)), rng.integers(0, 5, (40, 3))
    I[17, 2] = 99
    with pytest.raises(IndexError, match=r"ft.dask.map: batch member 17 \(member 7 of chunk 1\): index 99 is out of"):
        ft.dask.compute(ft.grad(_pick), Ws, I, in_axes=(0, 0), chunk_size=10, retries=0, client=client)


def test_a_worker_lost_mid_run_loses_no_result(client):
    X_big, Y_big = rng.normal(size=(400, 200)), rng.normal(size=400)
    Ws = rng.uniform(-0.1, 0.1, (1600, 200))
    g = ft.grad(_loss)
    expected = g.map(Ws, X_big, Y_big)
    ft.dask.compute(g, Ws[:30], X_big, Y_big, client=client)  # (warm: the tape loaded, the kernels too)
    batch = ft.dask.map(g, Ws, X_big, Y_big, client=client, chunk_size=20)
    with client.as_current():
        distributed.wait(batch.futures, return_when="FIRST_COMPLETED")
    holders = client.who_has(batch.futures)
    held = {}
    for workers in holders.values():
        for w in workers:
            held[w] = held.get(w, 0) + 1
    victim = max(held, key=held.get)
    pid = client.run(os.getpid, workers=[victim])[victim]
    done = sum(f.done() for f in batch.futures)
    os.kill(pid, signal.SIGKILL)
    # mid-run: results that lived on the victim alone, and chunks not yet run
    assert held[victim] >= 1 and done < len(batch), (held, done, len(batch))
    _identical(batch.result(timeout=120), expected)
    assert victim not in client.scheduler_info()["workers"]
    client.wait_for_workers(3, timeout=60)  # the nanny's new worker: the plugin loaded the tape there too
    deadline = time.monotonic() + 60  # (a worker is listed once registered, before its plugins are set up)
    while list(client.run(ftd._holds, batch.plugin).values()) != [True] * 3:
        assert time.monotonic() < deadline, "the restarted worker did not load the tape"
        time.sleep(0.1)


def test_workers_that_cannot_import_fasttape_are_named(client, monkeypatch):
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=1, processes=True, dashboard_address=":0", env={"FASTTAPE_TIERS": "bogus"}
        ) as cluster,
        distributed.Client(cluster, set_as_default=False) as bad,
    ):
        (address,) = bad.scheduler_info()["workers"]
        named = rf"worker {address} cannot import fasttape \(ValueError.*FASTTAPE_TIERS='bogus'"
        with pytest.raises(ImportError, match=named):
            ft.dask.map(ft.grad(_loss), W, X, Y, client=bad)
    monkeypatch.setattr(ftd, "__version__", "0.0.0")
    with pytest.raises(ImportError, match=r"worker tcp://\S+ has fasttape \S+, this client 0\.0\.0; worker"):
        ft.dask.map(ft.grad(_loss), W, X, Y, client=client)


def test_a_worker_that_cannot_load_the_tape_is_named(client, monkeypatch):
    monkeypatch.setattr(ftd, "_saved", lambda tape: b"not a tape file")
    with pytest.raises(
        RuntimeError, match=r"workers? (tcp://\S+ )+could not load the tape of 'regression_loss': TapeFormatError"
    ):
        ft.dask.map(ft.grad(_loss), W, X, Y, client=client)

    def names(dask_scheduler):
        return list(dask_scheduler.worker_plugins)

    garbage = hashlib.sha256(b"not a tape file").hexdigest()[:24]
    assert not any(garbage in name for name in client.run_on_scheduler(names))  # unregistered: the next map retries


def test_fasttape_imports_without_dask_and_names_the_extra():
    code = (
        "import sys; import fasttape; assert 'dask' not in sys.modules and 'distributed' not in sys.modules\n"
        "sys.modules['distributed'] = None\n"
        "try:\n    import fasttape.dask\nexcept ImportError as e:\n    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert 'pip install "fasttape[dask]"' in result.stdout


def test_no_client_is_a_clear_error():
    with pytest.raises(ValueError, match=r"needs a distributed Client: pass client=Client"):
        ft.dask.map(ft.grad(_loss), W, X, Y)  # (the module's client is not the default one)
