"""ART's clean-label backdoors (adversarial-robustness-toolbox 1.20) in the frozen-feature, linear-head protocol.

- ``art_hidden_trigger``: ``HiddenTriggerBackdoorPyTorch`` (Saha et al. 2020): base-class poisons inside the eps-ball
  whose features approach those of triggered victim-class training images; the trigger appears only at test time.
- ``art_clean_label_backdoor``: ``PoisoningAttackCleanLabelBackdoor`` (Turner et al. 2019): base-class images made
  hard by PGD on the proxy (extractor + clean head), then stamped with the trigger.

Both keep the poisons' base-class labels; each trial has its own random patch, its own poisons and its own refitted
head, and is judged on triggered victim-class test images (benchmark/cell/backdoor.py). ART 1.20 defects worked around:
README, "Attacks".
"""

from __future__ import annotations

import contextlib
import io
from typing import Literal

import numpy as np
import torch
from pydantic import Field

from adapters.attacks.art_estimator import (
    FEATURE_LAYER,
    art_classifier,
    cuda_device,
    numpy_seed,
    project_linf,
)
from adapters.attacks.base import (
    Attack,
    AttackContext,
    AttackCost,
    PoisonResult,
    PoisonTrial,
    Trigger,
)
from adapters.attacks.targeted import feature_distance
from benchmark.core.errors import AttackError, ParamError
from benchmark.core.progress import progress
from benchmark.core.registry import Params, register


class BackdoorParams(Params):
    # the victim class's triggered test images should be classified as base_class, whose rows carry the poisons
    target_class: int = Field(0, ge=0, description="victim class: its triggered test images are attacked")
    base_class: int = Field(1, ge=0, description="the poisons' class and label; what triggered victims should become")
    binary: bool = True  # restrict the task to [target_class, base_class], as the targeted attacks do
    num_trials: int = Field(10, ge=1, description="each: its own random patch, poisons and refitted head")
    num_poisons: int = Field(25, ge=1, description="poisons per trial (Toxic: 25 of 2,500 fine-tuning images, 1%)")
    eps: float = Field(8 / 255, ge=0.0, le=1.0, description="L-inf radius of the poisons (Toxic: 8/255)")
    patch_size: int = Field(8, ge=1, description="side of the square trigger (Toxic's code: 8 on 32x32 CIFAR)")
    patch_location: Literal["random", "corner"] = Field(
        "random", description="random: a position drawn per trial; corner: the bottom-right corner"
    )


class _ArtBackdoor(Attack):
    """What both backdoors share: the task, the per-trial trigger, poison rows and trials."""

    Params = BackdoorParams

    def _check_params(self) -> None:
        if self.params.target_class == self.params.base_class:
            raise ParamError(f"attack '{self.name}': target_class and base_class must differ")

    def max_poisons(self, n_train: int) -> int:
        return self.params.num_poisons

    def max_trigger_area(self, image_shape: tuple[int, ...]) -> int:
        return self.params.patch_size**2

    def task_classes(self) -> list[int] | None:
        return [self.params.target_class, self.params.base_class] if self.params.binary else None

    def rows_needed(self) -> dict[int, tuple[str, int]]:
        return {self.params.base_class: ("num_poisons", self.params.num_poisons)}

    def min_image_side(self) -> tuple[str, int]:
        return "patch_size", self.params.patch_size

    def trigger(self, image_shape: tuple[int, ...], g: torch.Generator) -> Trigger:
        """A patch of uniform random pixels at a random (or the bottom-right) position."""
        c, h, w = image_shape
        k = self.params.patch_size
        if k > min(h, w):
            raise AttackError(f"attack '{self.name}': patch_size {k} does not fit {h}x{w} images")
        if self.params.patch_location == "corner":
            top, left = h - k, w - k
        else:
            top, left = (int(torch.randint(0, n - k + 1, (1,), generator=g)) for n in (h, w))
        pattern = torch.zeros(image_shape)
        mask = torch.zeros(h, w, dtype=torch.bool)
        pattern[:, top : top + k, left : left + k] = torch.rand(c, k, k, generator=g)
        mask[top : top + k, left : left + k] = True
        return Trigger(pattern=pattern, mask=mask)

    def _poison(
        self, ctx: AttackContext, classifier, trigger: Trigger, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(training rows, their poisoned images) of one trial."""
        raise NotImplementedError

    def forward(self, ctx: AttackContext) -> PoisonResult:
        p = self.params
        self.require_rows(ctx, "base", p.base_class)
        trials = []
        with cuda_device(ctx):
            classifier = art_classifier(ctx)
            for t in progress(range(p.num_trials), desc=self.name, total=p.num_trials):
                g = ctx.generator(offset=t)
                trigger = self.trigger(tuple(ctx.x_train.shape[1:]), g)
                with numpy_seed(ctx.seed * 1_000_003 + t):
                    rows, x = self._poison(ctx, classifier, trigger, g)
                trials.append(
                    PoisonTrial(
                        indices=rows,
                        y=torch.full((len(rows),), p.base_class, dtype=torch.long),
                        x=x,
                        target_label=p.target_class,
                        adversarial_label=p.base_class,
                        trigger=trigger,
                    )
                )
        return PoisonResult(trials=trials, info=self.summary(ctx, trials))

    def require_rows(self, ctx: AttackContext, what: str, label: int) -> None:
        n, need = int((ctx.y_train == label).sum()), self.params.num_poisons
        if n < need:
            raise AttackError(f"attack '{self.name}': {n} {what}-class training images for {need} poisons")

    def summary(self, ctx: AttackContext, trials: list[PoisonTrial]) -> dict[str, float]:
        """What the poisons are in feature space: the share the clean head still gives base_class, and the mean
        L2 distance of their features (before and after the attack) to the centroid of the trial's triggered
        victim-class training images, the region hidden trigger pulls them to."""
        p = self.params
        victims = ctx.x_train[ctx.y_train == p.target_class]
        kept, before, after = [], [], []
        for trial in trials:
            centre = ctx.features(trial.trigger.apply(victims)).mean(0, keepdim=True)
            feats = ctx.features(trial.x)
            kept.append(ctx.head.predict(feats).cpu() == p.base_class)
            before.append(feature_distance(ctx.f_train[trial.indices], centre, "l2"))
            after.append(feature_distance(feats, centre, "l2"))
        return {
            "poisons_clean_head_base": float(torch.cat(kept).float().mean()),
            "mean_initial_feature_distance": float(torch.cat(before).mean()),
            "mean_feature_distance": float(torch.cat(after).mean()),
        }

    def onehot(self, ctx: AttackContext, labels: torch.Tensor) -> np.ndarray:
        """Labels as ART's one-hot rows over the clean head's classes."""
        return np.eye(len(ctx.head.classes), dtype=np.float32)[ctx.head.index_of(labels).cpu().numpy()]


def _backdoor(trigger: Trigger):
    """ART's backdoor object whose perturbation stamps ``trigger`` on NCHW numpy images."""
    from art.attacks.poisoning import PoisoningAttackBackdoor

    return PoisoningAttackBackdoor(lambda a: trigger.apply(torch.from_numpy(np.asarray(a))).numpy())


# ---------------------------------------------------------------------------------------------------------------
# Hidden trigger backdoor


class HiddenTriggerParams(BackdoorParams):
    # ART 1.20 defaults (those of Saha et al.'s code, lr aside)
    learning_rate: float = Field(0.001, gt=0.0)
    decay_coeff: float = Field(0.95, gt=0.0, le=1.0)
    decay_iter: int = Field(2000, ge=1)
    stopping_threshold: float = Field(10.0, ge=0.0, description="stop once the summed squared distance is below")
    max_iter: int = Field(5000, ge=1)
    batch_size: int = Field(100, ge=1, description="poisons optimised together")


@register
class ArtHiddenTrigger(_ArtBackdoor):
    name = "art_hidden_trigger"
    description = (
        "ART's HiddenTriggerBackdoorPyTorch (Saha et al. 2020): base-class poisons inside the eps-ball whose "
        "features approach triggered victim-class images'; labels kept, the trigger appears only at test time."
    )
    Params = HiddenTriggerParams

    def rows_needed(self) -> dict[int, tuple[str, int]]:
        return {**super().rows_needed(), self.params.target_class: ("num_poisons", self.params.num_poisons)}

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        p = self.params
        return AttackCost(passes=p.num_trials * p.num_poisons * (p.max_iter + 1), refits=p.num_trials)

    def _poison(
        self, ctx: AttackContext, classifier, trigger: Trigger, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        from art.attacks.poisoning import HiddenTriggerBackdoorPyTorch

        p = self.params
        self.require_rows(ctx, "victim", p.target_class)  # as many triggered victims as poisons
        # ART 1.20's is_index=True always raises (it checks the poison rows, not the source rows, against the
        # poison class), so ART picks the rows from labels: exactly num_poisons bases, as many victims
        base = torch.nonzero(ctx.y_train == p.base_class).flatten()
        pool = torch.cat([base, torch.nonzero(ctx.y_train == p.target_class).flatten()])
        labels = self.onehot(ctx, torch.tensor([p.base_class, p.target_class]))
        attack = HiddenTriggerBackdoorPyTorch(
            classifier,
            target=labels[0],
            source=labels[1],
            feature_layer=FEATURE_LAYER,
            backdoor=_backdoor(trigger),
            eps=p.eps,
            learning_rate=p.learning_rate,
            decay_coeff=p.decay_coeff,
            decay_iter=p.decay_iter,
            stopping_threshold=p.stopping_threshold,
            max_iter=p.max_iter,
            batch_size=p.batch_size,
            poison_percent=(p.num_poisons - 0.5) / len(base),  # ART takes ceil(percent * bases)
            verbose=False,
            print_iter=p.max_iter + 1,
        )
        with contextlib.redirect_stdout(io.StringIO()):  # ART prints the loss unconditionally
            poisons, idx = attack.poison(ctx.x_train[pool].numpy(), y=self.onehot(ctx, ctx.y_train[pool]))
        rows = pool[torch.from_numpy(np.asarray(idx, np.int64))]
        x_base = ctx.x_train[rows].float()
        return rows, project_linf(x_base, torch.from_numpy(np.asarray(poisons, np.float32)), p.eps)


# ---------------------------------------------------------------------------------------------------------------
# Clean-label backdoor


def _rows_clbd_class():
    from art.attacks.poisoning import PoisoningAttackCleanLabelBackdoor

    class RowsCleanLabelBackdoor(PoisoningAttackCleanLabelBackdoor):
        """ART's attack on exactly the rows it is given: ART 1.20's ``poison`` draws ``pp_poison`` (< 1) of them
        *with replacement* (so duplicates, and never all); here every row gets ART's PGD (against its true label)
        and then ART's backdoor, as ART does to the rows it draws."""

        def poison(self, x: np.ndarray, y: np.ndarray | None = None, broadcast: bool = True, **kwargs):
            perturbed = self.attack.generate(x, y=y)
            stamped, _ = self.backdoor.poison(perturbed, self.target, broadcast=broadcast)
            return stamped, y

    return RowsCleanLabelBackdoor


class CleanLabelBackdoorParams(BackdoorParams):
    # Toxic's PGD (Turner et al.'s L-inf setting); ART 1.20's defaults (eps 0.3, step 0.1, 100 steps, no random
    # start) are MNIST-scale
    eps_step: float = Field(2 / 255, gt=0.0)
    max_iter: int = Field(20, ge=1)
    num_random_init: int = Field(1, ge=0, description="random starts in the eps-ball (0: from the image)")
    trigger_in_ball: bool = Field(
        False, description="clip the stamped poisons to the eps-ball as Toxic's code does (Turner, ART: no)"
    )


@register
class ArtCleanLabelBackdoor(_ArtBackdoor):
    name = "art_clean_label_backdoor"
    description = (
        "ART's PoisoningAttackCleanLabelBackdoor (Turner et al. 2019): base-class images made hard by PGD on "
        "extractor + clean head inside eps, then stamped with the trigger; labels kept."
    )
    Params = CleanLabelBackdoorParams

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        p = self.params
        passes = p.num_trials * p.num_poisons * p.max_iter * max(1, p.num_random_init)
        return AttackCost(passes=passes, refits=p.num_trials)

    def _poison(
        self, ctx: AttackContext, classifier, trigger: Trigger, g: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.params
        base = torch.nonzero(ctx.y_train == p.base_class).flatten()
        rows = base[torch.randperm(len(base), generator=g)[: p.num_poisons]].sort().values
        target = self.onehot(ctx, torch.tensor([p.base_class]))[0]
        attack = _rows_clbd_class()(
            _backdoor(trigger),
            classifier,
            target,
            norm=np.inf,
            eps=p.eps,
            eps_step=p.eps_step,
            max_iter=p.max_iter,
            num_random_init=p.num_random_init,
        )
        attack.attack.set_params(verbose=False)  # ART builds its PGD with progress bars on
        x_base = ctx.x_train[rows].float()
        y = np.broadcast_to(target, (len(rows), len(target))).copy()
        poisons, _ = attack.poison(x_base.numpy().copy(), y=y)
        x = torch.from_numpy(np.asarray(poisons, np.float32))
        return rows, project_linf(x_base, x, p.eps) if p.trigger_in_ball else x
