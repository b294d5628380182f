"""Performance benchmarks of the refinement engine (issue 9): ``make bench`` or ``python -m benchmarks``.

Every figure is a ratio of two things timed side by side in the same process (interleaved, best of
a few runs), so it holds on a noisy machine; absolute times are printed too. Not part of
``make test``. Results and the machine they came from: docs/performance.md.
"""
