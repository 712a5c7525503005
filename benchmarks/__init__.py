"""pytest-benchmark suites comparing NumPy, fasttape and JAX on shared workloads (see ``workloads.py``)."""
