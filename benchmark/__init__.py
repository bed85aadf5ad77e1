"""Benchmark suite for poisoning attacks against robust (adversarially trained) features."""

__version__ = "0.1.0"

COMMAND = "uv run python -m benchmark"
"""The command as a user types it in messages: `uv run` puts the project's environment first."""
