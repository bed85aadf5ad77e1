"""One PGD adversarial-training epoch: our loop (torchattacks PGD) vs ART's AdversarialTrainerMadryPGD.

Same model (the small CNN, channels-last inside), same data, same PGD settings. Ours runs in float32 (the CPU
default) and, reported beside it, under bf16 autocast (``precision: bf16``; ART has no mixed precision)."""

from __future__ import annotations

import numpy as np
import torch
from conftest import peak_rss_mb, report, timed

from adapters.backbones import build_backbone
from benchmark.cell.training import train_backbone

EPS, STEPS, BATCH = 8 / 255, 7, 64


def test_pgd_epoch_vs_art(benchmark, problem):
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import PyTorchClassifier

    x, y = problem.ctx.x_train, problem.ctx.y_train
    params = {"max_epochs": 1, "stop_at": 1.0, "eps": EPS, "steps": STEPS, "batch_size": BATCH}

    def art_epoch() -> None:
        torch.manual_seed(0)
        model = build_backbone("small_cnn", {"width": 16, "feature_dim": 64}, num_classes=2)
        clf = PyTorchClassifier(
            model=model,
            loss=torch.nn.CrossEntropyLoss(),
            optimizer=torch.optim.Adam(model.parameters(), lr=1e-4),
            input_shape=tuple(x.shape[1:]),
            nb_classes=2,
            clip_values=(0.0, 1.0),
        )
        trainer = AdversarialTrainerMadryPGD(
            clf, nb_epochs=1, batch_size=BATCH, eps=EPS, eps_step=0.333 * EPS, max_iter=STEPS, num_random_init=0
        )
        trainer.fit(x.numpy(), np.eye(2, dtype=np.float32)[y.numpy()])

    def our_epoch(precision: str = "float32") -> None:
        torch.manual_seed(0)
        model = build_backbone("small_cnn", {"width": 16, "feature_dim": 64}, num_classes=2)
        train_backbone(model, x, y, "pgd", {**params, "precision": precision}, device="cpu", seed=0, progress=False)

    for warm_up in (art_epoch, our_epoch, lambda: our_epoch("bf16")):  # first calls pay for kernel set-up
        warm_up()
    lib_s, _ = timed(art_epoch)
    bf16_s, _ = timed(lambda: our_epoch("bf16"))
    benchmark.pedantic(our_epoch, rounds=1, iterations=1)
    report(benchmark, "PGD training epoch (float32) vs ART AdversarialTrainerMadryPGD", lib_s,
           benchmark.stats.stats.mean, images=len(x), ours_bf16_seconds=bf16_s, ratio_bf16=lib_s / bf16_s,
           peak_rss_mb=peak_rss_mb())
