"""Benchmarks: scripts that print measured figures with a baseline measured in the same run
(docs/benchmarks.md holds the figures and the commands). Run from the repository root, e.g.
`python -m bench.cluster`, `python -m bench.storage`, `python -m bench.data_prep`."""
