"""hepflows benchmarks: ``python -m benchmarks [--quick]``; results in ``benchmarks/results/<date>.json``."""
