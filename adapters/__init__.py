"""Attack adapters: every poisoning attack behind the interface of ``adapters.base``.

Importing this package registers the built-in attacks.
"""

from adapters import registered  # noqa: F401  (registers built-ins)
