"""Imports every built-in attack module so that each registers itself."""

import importlib

BUILTIN_ATTACK_MODULES = [
    "adapters.no_attack",
    "adapters.label_flip",
    "adapters.poison_frog",
    "adapters.convex_polytope",
    "adapters.witches_brew",
    "adapters.adv_poison",
    "adapters.art_adapter",
    "adapters.art_backdoors",
]

for _module in BUILTIN_ATTACK_MODULES:
    importlib.import_module(_module)
