"""Performance benchmarks of the refinement engine (issue 9): `make bench`, `python -m benchmarks`.

Every figure is a ratio of two things timed side by side in the same process: the functions run in
turn for a few rounds, the ratio is the median over rounds of the two timed next to each other, so
it holds on a noisy machine; absolute times (the fastest round) are printed too. Not part of
``make test``. Results and the machine they came from: docs/performance.md.
"""
