"""Evaluation: the benchmark and its CI gate, comparison figures, FID."""
