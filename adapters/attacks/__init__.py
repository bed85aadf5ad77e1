"""Attacks: every poisoning attack behind the interface of ``adapters.attacks.base``.

Importing this package registers the built-in attacks.
"""

import importlib

BUILTIN_ATTACK_MODULES = [
    "adapters.attacks.no_attack",
    "adapters.attacks.label_flip",
    "adapters.attacks.poison_frog",
    "adapters.attacks.convex_polytope",
    "adapters.attacks.witches_brew",
    "adapters.attacks.adv_poison",
    "adapters.attacks.art_poisoning",
    "adapters.attacks.art_backdoors",
]

for _module in BUILTIN_ATTACK_MODULES:
    importlib.import_module(_module)
