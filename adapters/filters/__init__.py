"""Poison filters: a defense that removes suspicious rows from the (possibly poisoned) training set before the head
is fitted. Importing this package registers the built-ins."""

from adapters.filters import art_filters, knn  # noqa: F401  (registers built-ins)
from adapters.filters.base import PoisonFilter

__all__ = ["PoisonFilter"]
