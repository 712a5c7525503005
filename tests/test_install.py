"""The package imports and works whatever Numba's on-disk cache can do."""

import os
import subprocess
import sys
import textwrap

_SMOKE = """
import numpy as np
import fasttape as ft
from fasttape import kernels
g = ft.grad(lambda x: np.sum(np.sin(x) * x))(np.linspace(0.0, 1.0, 5))
expected = np.sin(np.linspace(0.0, 1.0, 5)) + np.linspace(0.0, 1.0, 5) * np.cos(np.linspace(0.0, 1.0, 5))
assert np.allclose(g, expected, rtol=1e-12), g
print("cache", kernels.CACHE_ENABLED)
"""


def _run(code, **env):
    full_env = {**os.environ, **env}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=full_env)


def test_environment_variable_switches_the_disk_cache_off():
    result = _run(_SMOKE, FASTTAPE_NO_CACHE="1")
    assert result.returncode == 0, result.stderr
    assert "cache False" in result.stdout


def test_import_survives_when_no_cache_location_is_writable():
    # Numba raises at decoration time when it finds no writable cache location
    # (read-only install and unwritable home); simulate exactly that.
    patch = """
        import numba.core.dispatcher as d
        def refuse(self):
            raise RuntimeError("cannot cache function: no locator available for file")
        d.Dispatcher.enable_caching = refuse
        """
    code = textwrap.dedent(patch) + _SMOKE
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert "cache False" in result.stdout
