"""ART's poisoning attacks (adversarial-robustness-toolbox 1.20) that fit the frozen-feature, linear-head protocol.

- ``art_feature_collision``: ``FeatureCollisionAttack``; no L-inf ball (``eps: 1.0``), a smaller ``eps`` projects
  ART's poisons onto the ball afterwards.
- ``art_bullseye_polytope``: ``BullseyePolytopeAttackPyTorch``, single model. ART 1.20's ``poison`` never uses the
  target (its "center" comes from the bases) and its transfer mode crashes, so ``implementation: fixed`` (default)
  computes the published objective with ART's optimiser, schedule and projection; ``art`` runs ART's code as is.
- ``art_svm_feature_space``: ``PoisoningAttackSVM`` on a linear SVC over the clean training *features*: a
  feature-space upper bound, not an image-space attack.

The image-space adapters follow Poison Frog's task, targets and bases (adapters/attacks/targeted.py) and wrap extractor +
clean head in ART's ``PyTorchClassifier`` with the feature layer ``"features"``. Why ART's other poisoning attacks
are not adapted: README, "Attacks".
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

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
)
from adapters.attacks.targeted import (
    TargetedAttack,
    TargetedParams,
    feature_distance,
    nearest_rows,
    require_pool,
)
from benchmark.core.errors import ParamError
from benchmark.core.progress import progress
from benchmark.core.registry import Params, register

log = logging.getLogger(__name__)

class _TargetedArtParams(TargetedParams):
    num_targets: int = Field(10, ge=1, description="ART optimises one target at a time")


class _TargetedArtAttack(TargetedAttack):
    """Shared protocol of the targeted image-space ART adapters: poisons come from ART, one target at a time."""

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        p = self.params
        return AttackCost(passes=p.num_targets * p.num_poisons * p.max_iter, refits=p.num_targets)

    def _poison_one(self, classifier, target: np.ndarray, bases: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def _project(self, bases: torch.Tensor, poisons: torch.Tensor) -> torch.Tensor:
        return poisons

    def forward(self, ctx: AttackContext) -> PoisonResult:
        p = self.params
        targets, pool = self.targets_and_pool(ctx)
        if targets.numel() == 0 or pool.numel() == 0:
            log.warning("%s: no usable target (%d) or base image (%d)", self.name, targets.numel(), pool.numel())
            return PoisonResult(trials=[], targeted=True, info={"num_targets": 0.0})
        target_feats = ctx.f_test[targets].float()
        require_pool(self.name, pool, p.num_poisons, p.base_class)
        bases = nearest_rows(ctx, target_feats, pool, p.num_poisons, "l2")
        with cuda_device(ctx), numpy_seed(ctx.seed):
            classifier = art_classifier(ctx)
            trials, art_linf, d, d0 = [], [], [], []
            for t in progress(range(len(targets)), desc=self.name, total=len(targets)):
                x_base = ctx.x_train[bases[t]].float()
                ti = int(targets[t])
                x_target = ctx.x_test[ti : ti + 1].float()
                raw = torch.from_numpy(
                    np.asarray(self._poison_one(classifier, x_target.numpy(), x_base.numpy().copy()), np.float32)
                ).reshape(x_base.shape)
                art_linf.append((raw - x_base).abs().flatten(1).amax(dim=1))
                x = self._project(x_base, raw)
                tf = target_feats[t : t + 1]
                d.append(feature_distance(ctx.features(x).float(), tf, "l2"))
                d0.append(feature_distance(ctx.f_train[bases[t]].float(), tf, "l2"))
                trials.append(self.trial(bases[t], x, ti))
        linf = torch.cat(art_linf)
        info = {
            "num_targets": float(len(targets)),
            "art_linf_max": float(linf.max()),
            "art_linf_mean": float(linf.mean()),
            "mean_feature_distance": float(torch.cat(d).mean()),
            "mean_initial_feature_distance": float(torch.cat(d0).mean()),
        }
        return PoisonResult(trials=trials, targeted=True, info=info)


# ---------------------------------------------------------------------------------------------------------------
# Feature collision


class ArtFeatureCollisionParams(_TargetedArtParams):
    eps: float = Field(1.0, ge=0.0, le=1.0, description="L-inf bound; 1.0: none (ART's attack has no ball)")
    # ART 1.20 defaults
    max_iter: int = Field(120, ge=1)
    learning_rate: float = Field(500 * 255.0, gt=0.0)
    decay_coeff: float = Field(0.5, gt=0.0)
    stopping_tol: float = Field(1e-10, gt=0.0)
    obj_threshold: float | None = Field(None, gt=0.0)
    num_old_obj: int = Field(40, ge=1)
    similarity_coeff: float = Field(256.0, ge=0.0)
    watermark: float | None = Field(None, ge=0.0, lt=1.0)


@register
class ArtFeatureCollision(_TargetedArtAttack):
    name = "art_feature_collision"
    description = (
        "ART's FeatureCollisionAttack (Shafahi et al., forward-backward splitting, no L-inf ball unless eps < 1, "
        "then projected afterwards)."
    )
    Params = ArtFeatureCollisionParams

    def _poison_one(self, classifier, target: np.ndarray, bases: np.ndarray) -> np.ndarray:
        from art.attacks.poisoning import FeatureCollisionAttack

        p = self.params
        attack = FeatureCollisionAttack(
            classifier,
            target=target,
            feature_layer=FEATURE_LAYER,
            learning_rate=p.learning_rate,
            decay_coeff=p.decay_coeff,
            stopping_tol=p.stopping_tol,
            obj_threshold=p.obj_threshold,
            num_old_obj=p.num_old_obj,
            max_iter=p.max_iter,
            similarity_coeff=p.similarity_coeff,
            watermark=p.watermark,
            verbose=False,
        )
        poisons, _ = attack.poison(bases)
        return poisons

    def _project(self, bases: torch.Tensor, poisons: torch.Tensor) -> torch.Tensor:
        if self.params.eps < 1.0:
            return project_linf(bases, poisons, self.params.eps)
        return poisons.clamp(0.0, 1.0)


# ---------------------------------------------------------------------------------------------------------------
# Bullseye polytope


def _bullseye_fixed_class():
    from art.attacks.poisoning import BullseyePolytopeAttackPyTorch

    class BullseyeTransfer(BullseyePolytopeAttackPyTorch):
        """ART's class with a ``poison`` that uses the target: the single-model, single-feature-layer Bullseye
        Polytope objective of the original code, ``||mean_i f(p_i) - mean_t f(t)|| / ||mean_t f(t)||``, minimised
        with ART's optimiser (Adam or SGD with ``momentum``), learning-rate schedule (``decay_coeff`` every
        ``decay_iter`` iterations) and projection (eps-ball around the bases, then clip_values) after each step."""

        def poison(self, x: np.ndarray, y: np.ndarray | None = None, **kwargs) -> tuple[np.ndarray, np.ndarray]:
            est = self.estimator
            dev = est.device
            base = torch.from_numpy(np.asarray(x, np.float32)).to(dev)
            with torch.no_grad():
                target = torch.from_numpy(np.asarray(self.target, np.float32)).to(dev)
                center = est.get_activations(target, self.feature_layer, framework=True).detach().flatten(1).mean(0)
            scale = center.norm().clamp_min(1e-12)
            poison = nn.Parameter(base.clone())
            if self.opt.lower() == "sgd":
                opt = torch.optim.SGD([poison], lr=self.learning_rate, momentum=self.momentum)
            else:
                opt = torch.optim.Adam([poison], lr=self.learning_rate, betas=(self.momentum, 0.999))
            lo, hi = (float(v) for v in est.clip_values)
            for ite in range(self.max_iter):
                if ite % self.decay_iter == 0 and ite != 0:
                    for group in opt.param_groups:
                        group["lr"] *= self.decay_coeff
                opt.zero_grad()
                with torch.enable_grad():
                    feats = est.get_activations(poison, self.feature_layer, framework=True).flatten(1)
                    loss = (feats.mean(0) - center).norm() / scale
                loss.backward()
                opt.step()
                with torch.no_grad():
                    poison.copy_((base + (poison - base).clamp(-self.epsilon, self.epsilon)).clamp(lo, hi))
            return poison.detach().cpu().numpy(), y

    return BullseyeTransfer


class ArtBullseyeParams(_TargetedArtParams):
    num_poisons: int = Field(5, ge=1, description="poisons per target (the polytope's vertices)")
    eps: float = Field(0.1, gt=0.0, le=1.0, description="L-inf radius (ART's epsilon; ART default 0.1)")
    implementation: Literal["fixed", "art"] = Field(
        "fixed", description="fixed: our poison() that uses the target; art: ART 1.20's poison() as is"
    )
    # ART 1.20 defaults
    opt: Literal["adam", "sgd"] = "adam"
    max_iter: int = Field(4000, ge=1)
    learning_rate: float = Field(4e-2, gt=0.0)
    momentum: float = Field(0.9, ge=0.0, le=1.0)
    decay_iter: int = Field(10000, ge=1)
    decay_coeff: float = Field(0.5, ge=0.0, le=1.0)
    batch_size: int = Field(128, ge=1)


@register
class ArtBullseyePolytope(_TargetedArtAttack):
    name = "art_bullseye_polytope"
    description = (
        "ART's BullseyePolytopeAttackPyTorch (Aghakhani et al.), single model, L-inf ball; default 'fixed' "
        "poison() because ART 1.20's ignores the target."
    )
    Params = ArtBullseyeParams

    def _poison_one(self, classifier, target: np.ndarray, bases: np.ndarray) -> np.ndarray:
        from art.attacks.poisoning import BullseyePolytopeAttackPyTorch

        p = self.params
        cls = _bullseye_fixed_class() if p.implementation == "fixed" else BullseyePolytopeAttackPyTorch
        attack = cls(
            classifier,
            target=target,
            feature_layer=FEATURE_LAYER,
            opt=p.opt,
            max_iter=p.max_iter,
            learning_rate=p.learning_rate,
            momentum=p.momentum,
            decay_iter=p.decay_iter,
            decay_coeff=p.decay_coeff,
            epsilon=p.eps,
            batch_size=p.batch_size,
            verbose=False,
        )
        y = np.zeros((len(bases), classifier.nb_classes), np.float32)  # passed through by ART, unused
        poisons, _ = attack.poison(bases, y=y)
        return poisons

    def _project(self, bases: torch.Tensor, poisons: torch.Tensor) -> torch.Tensor:
        # ART already projects; repeat it in float32 so rounding cannot leave the ball
        return project_linf(bases, poisons, self.params.eps)


# ---------------------------------------------------------------------------------------------------------------
# SVM poisoning in feature space


def _fast_svc_class():
    from art.estimators.classification.scikitlearn import ScikitlearnSVC

    class FastScikitlearnSVC(ScikitlearnSVC):
        """ART's ScikitlearnSVC with a vectorised ``q_submatrix`` and linear kernel (same values; ART loops over
        every pair and calls sklearn, which validates its input on every call) and a
        ``predict`` that never asks for probabilities: ART tests ``model.probability``, which scikit-learn 1.9 made
        the truthy string ``"deprecated"`` (so ART calls ``predict_proba`` and fails) and 1.11 removes."""

        def predict(self, x: np.ndarray, **kwargs) -> np.ndarray:
            x_pre, _ = self._apply_preprocessing(x, y=None, fit=False)
            labels = np.asarray(self.model.predict(x_pre)).reshape(-1).astype(np.int64)
            return np.eye(self.nb_classes)[labels]

        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            if getattr(self.model, "kernel", None) == "linear":  # same values as sklearn's linear_kernel, no checks
                self._kernel = lambda a, b: np.asarray(a, np.float64) @ np.asarray(b, np.float64).T

        def _signs(self, x: np.ndarray) -> np.ndarray:
            """ART's ``predict`` mapped to -1/+1 (labels are 0/1); for a binary linear SVC, the sign of the
            decision function computed directly (sklearn's predict validates its input on every call, which made
            this the attack's bottleneck)."""
            model = self.model
            if model.kernel == "linear" and len(model.classes_) == 2:
                return np.where(x @ model.coef_[0] + model.intercept_[0] > 0, 1.0, -1.0)
            labels = np.asarray(model.predict(x), dtype=np.float64)
            return np.where(labels == 0, -1.0, labels)

        def q_submatrix(self, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
            return self._kernel(rows, cols) * self._signs(rows)[:, None] * self._signs(cols)[None, :]

    return FastScikitlearnSVC


class ArtSvmParams(Params):
    class_a: int = Field(0, ge=0)
    class_b: int = Field(1, ge=0)
    num_poisons: int = Field(5, ge=1)
    step: float | None = Field(
        None, gt=0.0, description="L2 step in feature space; None: 0.02 x mean L2 norm of the training features"
    )
    eps: float = Field(1.0, gt=0.0, description="ART's eps: stop once the validation objective rises by eps")
    max_iter: int = Field(100, ge=2)  # ART requires > 1
    max_train: int = Field(500, ge=2, description="training rows the surrogate SVM sees (ART refits it every step)")
    num_val: int = Field(100, ge=2, description="held-out training rows ART evaluates the attack on")
    C: float = Field(1.0, gt=0.0, description="the surrogate SVC's C (sklearn default)")


@register
class ArtSvmFeatureSpace(Attack):
    name = "art_svm_feature_space"
    description = (
        "FEATURE-SPACE UPPER BOUND: ART's PoisoningAttackSVM (Biggio et al.) moves feature vectors, not images, of "
        "label-flipped training rows against a linear SVC; what an attacker who controls features could do."
    )
    Params = ArtSvmParams
    space = "feature"

    def _check_params(self) -> None:
        if self.params.class_a == self.params.class_b:
            raise ParamError(f"attack '{self.name}': class_a and class_b must differ")

    @property
    def budget_eps(self) -> float:
        return 0.0  # no pixel budget: ``eps`` is ART's convergence tolerance, not an L-inf radius

    def max_poisons(self, n_train: int) -> int:
        return self.params.num_poisons

    def cost(self, n_train: int, n_per_class: int) -> AttackCost:
        return AttackCost(passes=self.params.num_poisons * self.params.max_iter)

    def task_classes(self) -> list[int]:
        return [self.params.class_a, self.params.class_b]

    def forward(self, ctx: AttackContext) -> PoisonResult:
        from art.attacks.poisoning import PoisoningAttackSVM
        from sklearn.svm import SVC
        from threadpoolctl import threadpool_limits

        p = self.params
        classes = torch.tensor([p.class_a, p.class_b])
        rows = torch.nonzero(torch.isin(ctx.y_train, classes)).flatten()
        g = ctx.generator()
        rows = rows[torch.randperm(len(rows), generator=g)]
        # the attacker's own split of the training set: a surrogate training subset and a held-out validation set
        if p.num_val > len(rows) // 2:  # refused, not lowered: the run's num_val must be the number used
            raise ParamError(f"attack '{self.name}': num_val {p.num_val} is more than half of the {len(rows)} training "
                             f"rows of classes {p.class_a} and {p.class_b}; lower num_val")
        val_rows, sur_rows = rows[: p.num_val], rows[p.num_val :][: p.max_train]
        sur_rows = sur_rows.sort().values
        f = ctx.f_train.double().numpy()
        binary = (ctx.y_train == p.class_b).long().numpy()  # class_a -> 0, class_b -> 1
        onehot = np.eye(2)[binary]
        x_sur, y_sur = f[sur_rows.numpy()], onehot[sur_rows.numpy()]
        x_val, y_val = f[val_rows.numpy()], onehot[val_rows.numpy()]
        # starting points: training rows of the surrogate set, their label flipped (ART's examples do the same)
        start = sur_rows[torch.randperm(len(sur_rows), generator=g)[: p.num_poisons]].sort().values
        x_init = f[start.numpy()].copy()
        y_attack = 1.0 - onehot[start.numpy()]
        lo, hi = float(f.min()), float(f.max())
        step = p.step if p.step is not None else 0.02 * float(np.linalg.norm(x_sur, axis=1).mean())
        # the matrices are small (at most max_train support vectors): one BLAS thread is faster, and much faster
        # on a loaded machine, than a thread pool
        with numpy_seed(ctx.seed), threadpool_limits(limits=1, user_api="blas"):
            estimator = _fast_svc_class()(model=SVC(C=p.C, kernel="linear"), clip_values=(lo, max(hi, lo + 1e-6)))
            estimator.fit(x_sur, y_sur)
            attack = PoisoningAttackSVM(
                estimator, step, p.eps, x_sur, y_sur, x_val, y_val, p.max_iter, verbose=False
            )
            x_adv, _ = attack.poison(x_init.copy(), y=y_attack)
        new_labels = classes[torch.from_numpy(y_attack.argmax(axis=1))]
        feats = torch.from_numpy(np.asarray(x_adv)).to(ctx.f_train.dtype).reshape(len(start), -1)
        moved = (feats.double() - torch.from_numpy(x_init)).norm(dim=1)
        trial = PoisonTrial(indices=start, y=new_labels, features=feats)
        info = {
            "feature_l2_moved_mean": float(moved.mean()),
            "feature_l2_moved_max": float(moved.max()),
            "step": float(step),
            "surrogate_train_rows": float(len(sur_rows)),
            "validation_rows": float(len(val_rows)),
        }
        return PoisonResult(trials=[trial], space="feature", info=info)
