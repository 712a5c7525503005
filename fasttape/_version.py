"""The release version (read by pyproject.toml, the kernel cache key and ``fasttape.__version__``)."""

__version__ = "0.1.0"
