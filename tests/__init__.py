"""fasttape test suite."""
