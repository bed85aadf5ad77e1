"""Heads: the linear classifier fitted on frozen features (LinearSVC, a batched torch SVM), and the refit of many
heads that differ from one base by a few rows. Importing this package registers the built-ins."""

from adapters.heads import linear_svc, torch_svm  # noqa: F401  (registers built-ins)
from adapters.heads.base import Head, fit_head, fit_heads, head_accuracy, make_head
from adapters.heads.linear import LinearHead

__all__ = ["Head", "LinearHead", "fit_head", "fit_heads", "head_accuracy", "make_head"]
