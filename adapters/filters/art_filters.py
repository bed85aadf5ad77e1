"""ART's poison detectors on the frozen features: activation clustering (``ActivationDefence``, Chen et al. 2018)
and spectral signatures (``SpectralSignatureDefense``, Tran et al. 2018). Both read the activations of a
classifier's last layer; ART is given a PyTorchClassifier whose only layer passes the feature vectors through,
so the activations they analyse are the frozen features, the representation both papers analyse.

ART 1.20's spectral score projects the *uncentred* features on the top singular vector of the centred ones
(``spectral_signature_scores``), where Tran et al. score ``((r - mean) . v)^2``; with features that are not
centred, outliers on one side of the mean then get small scores (on real MNIST digits with a 20-image backdoor it
removed none of them, the centred score put 14 of them in the 14 rows it removed). ``implementation: fixed``
computes the published score with ART's cut-off rule, ``art`` runs ART's code unchanged."""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import Field

from adapters.filters.base import PoisonFilter
from benchmark.core.errors import ParamError
from benchmark.core.registry import Params, register


def _feature_classifier(dim: int, n_classes: int):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(
        model=torch.nn.Sequential(torch.nn.Identity()),
        loss=torch.nn.CrossEntropyLoss(),
        input_shape=(dim,),
        nb_classes=n_classes,
    )


def _art_inputs(features: torch.Tensor, labels: torch.Tensor):
    """The ART classifier, features as float32 numpy and one-hot labels over the classes present."""
    _, y = torch.unique(labels, return_inverse=True)
    n_classes = int(y.max()) + 1
    one_hot = np.eye(n_classes, dtype=np.float32)[y.numpy()]
    return _feature_classifier(features.shape[1], n_classes), features.float().numpy(), one_hot


class ActivationParams(Params):
    nb_clusters: int = Field(2, ge=2)  # ART default (Chen et al.: 2)
    nb_dims: int = Field(10, ge=1)  # ART default (Chen et al.: 10 ICA/PCA components)
    reduce: Literal["PCA", "FastICA"] = "PCA"  # ART default (Chen et al. used ICA)
    # ART default "smaller"; ART 1.20's "relative-size" raises on a class with no suspicious cluster, so not offered
    cluster_analysis: Literal["smaller", "distance"] = "smaller"


@register
class ActivationClustering(PoisonFilter):
    name = "art_activation_clustering"
    description = "ART ActivationDefence: per class, 2-means on reduced features; the smaller cluster is removed"
    Params = ActivationParams

    def keep(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        from art.defences.detector.poison import ActivationDefence

        classifier, x, y = _art_inputs(features, labels)
        defence = ActivationDefence(classifier, x, y)
        np.random.seed(seed)  # ART's MiniBatchKMeans draws from numpy's global generator
        _, is_clean = defence.detect_poison(**self.params.model_dump(), clustering_method="KMeans")
        return torch.as_tensor(np.asarray(is_clean) == 1)


class SpectralParams(Params):
    # ART's default is 0.33, which with the multiplier removes half of every class; our attacks poison a few rows
    expected_poison_fraction: float = Field(0.05, gt=0, le=1)
    eps_multiplier: float = Field(1.5, gt=0)  # ART default; Tran et al. remove 1.5 x the expected poisons
    implementation: Literal["fixed", "art"] = "fixed"  # see the module docstring


@register
class SpectralSignature(PoisonFilter):
    name = "art_spectral_signature"
    description = "ART SpectralSignatureDefense: per class, removes the rows with the largest top-singular-vector score"
    Params = SpectralParams

    def _check_params(self) -> None:
        p = self.params
        removed = p.eps_multiplier * p.expected_poison_fraction
        if removed >= 1:
            raise ParamError(
                f"filter '{self.name}': eps_multiplier x expected_poison_fraction = {removed:g} removes every row of "
                "every class (rows scoring below the 1 - that quantile are kept); keep the product below 1"
            )

    def keep(self, features: torch.Tensor, labels: torch.Tensor, seed: int) -> torch.Tensor:
        p = self.params
        if p.implementation == "fixed":
            return self._keep_centred(features, labels)
        from art.defences.detector.poison import SpectralSignatureDefense

        classifier, x, y = _art_inputs(features, labels)
        defence = SpectralSignatureDefense(
            classifier, x, y, expected_pp_poison=p.expected_poison_fraction, eps_multiplier=p.eps_multiplier
        )
        _, is_clean = defence.detect_poison()
        return torch.as_tensor(np.asarray(is_clean) == 1)

    def _keep_centred(self, features: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Per class: score ((r - mean) . v)^2 with v the top right singular vector of the centred features; keep
        the rows below the score's (1 - eps_multiplier * expected_poison_fraction) quantile (ART's cut-off)."""
        p = self.params
        keep = torch.ones(len(labels), dtype=torch.bool)
        quantile = max(1.0 - p.eps_multiplier * p.expected_poison_fraction, 0.0)
        for c in torch.unique(labels):
            rows = torch.nonzero(labels == c).squeeze(1)
            r = features[rows].double()
            centred = r - r.mean(dim=0)
            v = torch.linalg.svd(centred, full_matrices=False).Vh[0]
            score = (centred @ v) ** 2
            keep[rows] = score < torch.quantile(score, quantile)
        return keep
