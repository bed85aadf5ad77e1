"""Poison Frog: batched over targets vs one target at a time; ours vs ART's FeatureCollisionAttack."""

from __future__ import annotations

from conftest import peak_rss_mb, report, timed

from adapters.attacks.art_poisoning import ArtFeatureCollision
from adapters.attacks.poison_frog import PoisonFrog

TARGETS = 100
STEPS = 40


def test_batched_vs_one_target_at_a_time(benchmark, problem):
    """Same attack: all 100 targets in one tensor vs a loop. Sign steps amplify float differences between batched
    and single-image convolutions, so the poisons are compared by their result (feature distance), not bitwise."""
    batched = PoisonFrog(num_targets=TARGETS, steps=STEPS, batch_size=256)
    one_by_one = PoisonFrog(num_targets=TARGETS, steps=STEPS, batch_size=1)
    lib_s, slow = timed(lambda: one_by_one(problem.ctx))
    fast = benchmark.pedantic(lambda: batched(problem.ctx), rounds=1, iterations=1)
    ours_s = benchmark.stats.stats.mean
    report(benchmark, "poison_frog batched vs one target at a time", lib_s, ours_s, targets=len(fast.trials),
           peak_rss_mb=peak_rss_mb())
    assert len(slow.trials) == len(fast.trials)
    d_slow, d_fast = slow.info["mean_feature_distance"], fast.info["mean_feature_distance"]
    assert abs(d_slow - d_fast) <= 0.05 * d_slow, (d_slow, d_fast)


def test_ours_vs_art_feature_collision(benchmark, problem):
    """Same backbone, same targets, same number of optimisation iterations (ART: one target at a time)."""
    n = 10
    art = ArtFeatureCollision(num_targets=n, max_iter=STEPS)
    ours = PoisonFrog(num_targets=n, steps=STEPS)
    lib_s, _ = timed(lambda: art(problem.ctx))
    benchmark.pedantic(lambda: ours(problem.ctx), rounds=1, iterations=1)
    report(benchmark, "poison_frog vs ART FeatureCollisionAttack", lib_s, benchmark.stats.stats.mean, targets=n,
           peak_rss_mb=peak_rss_mb())
