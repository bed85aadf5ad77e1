"""Benchmark suite for poisoning attacks against robust (adversarially trained) features."""

__version__ = "0.1.0"
