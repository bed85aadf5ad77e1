"""Defenses: how a backbone is trained on the external data. Importing this package registers the built-ins."""

from adapters.defenses import published, standard  # noqa: F401  (registers built-ins)
from adapters.defenses.base import Defense, DefenseParams, EpsParams

__all__ = ["Defense", "DefenseParams", "EpsParams"]
