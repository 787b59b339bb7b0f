"""modwatch benchmarks (``python -m bench.run``); not part of the test suite. See bench/README.md."""
