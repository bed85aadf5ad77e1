"""The attack as a cached stage: its poisons, triggers, per-target rows and budget verdict, made once per key.

The key is the features' key plus the attack's configuration, the head's (attacks see the clean head) and the seed,
so cells that differ only in their filter share one attack. Entries live in the cache as the kind ``attack``
(atomic, checksummed, see ``benchmark.store.cache``); a lock per key makes a second process wait for the first and read
its entry instead of running the same attack again. A budget violation is a verdict, stored and raised again;
any other error is not stored (it may not happen twice).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from adapters.attacks.base import BudgetReport, PoisonResult, PoisonTrial, Trigger
from benchmark.core.errors import BudgetError
from benchmark.core.hashing import stable_hash
from benchmark.core.versions import ATTACK_STAGES, versions
from benchmark.store import leases
from benchmark.store.cache import Cache

KIND = "attack"
Made = tuple[PoisonResult, BudgetReport, float]  # the result, its budget report, the seconds it took to make


def attack_key(cell: Any, features_key: str) -> str:
    """Everything that determines an attack's output: the features it attacks, its configuration, the clean head's
    configuration, the seed and the versions of the stages up to the attack."""
    return stable_hash(
        {
            "features": features_key,
            "attack": [cell.attack.name, cell.attack.params],
            "head": [cell.head.name, cell.head.params],
            "seed": cell.seed,
            "versions": versions(ATTACK_STAGES),
        }
    )


def cached_attack(cache: Cache, key: str, make: Callable[[], tuple[PoisonResult, BudgetReport]]) -> tuple[Made, bool]:
    """The attack's output from the cache, else ``make()``d (under the key's lock) and stored; and whether cached."""
    with _key_lock(cache, key):
        stored = cache.load(KIND, key)
        if stored is not None:
            return _unpack(stored), True
        t0 = time.perf_counter()
        try:
            result, report = make()
        except BudgetError as err:
            cache.save(KIND, key, {"budget_error": str(err)}, meta={"verdict": "violated"})
            raise
        seconds = time.perf_counter() - t0
        cache.save(KIND, key, _pack(result, report, seconds), meta={"verdict": "passed", "trials": len(result.trials)})
        return (result, report, seconds), False


def _key_lock(cache: Cache, key: str) -> AbstractContextManager:
    """The key's lock; none where the cache cannot be written: its entries then live in this process's memory, where
    no other process could read them, so there is nothing to wait for."""
    return nullcontext() if cache.unwritable() else leases.held(lock_file(cache, key))


def lock_file(cache: Cache, key: str) -> Path:
    return cache.root / "locks" / f"{KIND}-{key}.lock"


def _pack(result: PoisonResult, report: BudgetReport, seconds: float) -> dict[str, Any]:
    return {
        "trials": [_pack_trial(t) for t in result.trials],
        "targeted": result.targeted,
        "space": result.space,
        "info": {k: float(v) for k, v in result.info.items()},
        "report": asdict(report),
        "seconds": seconds,
    }


def _pack_trial(trial: PoisonTrial) -> dict[str, Any]:
    out = {f.name: getattr(trial, f.name) for f in fields(trial)}
    out["trigger"] = None if trial.trigger is None else {"pattern": trial.trigger.pattern, "mask": trial.trigger.mask}
    return out


def _unpack(stored: dict[str, Any]) -> Made:
    if "budget_error" in stored:  # the verdict of the run that made it: the same poisons violate the same budget
        raise BudgetError(stored["budget_error"])
    trials = []
    for t in stored["trials"]:
        trigger = None if t["trigger"] is None else Trigger(t["trigger"]["pattern"], t["trigger"]["mask"])
        trials.append(PoisonTrial(**{**t, "trigger": trigger}))
    result = PoisonResult(trials, targeted=stored["targeted"], space=stored["space"], info=dict(stored["info"]))
    return result, BudgetReport(**stored["report"]), float(stored["seconds"])
