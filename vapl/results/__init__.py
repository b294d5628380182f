"""Finished runs: reading run folders, the comparison report, the benchmark grid of runs."""
