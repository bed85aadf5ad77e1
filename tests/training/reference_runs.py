"""The single-backbone training runs whose weights and curves were saved at commit 2e7ea86 (before the grouped and
the single loop became one): ``python tests/training/reference_runs.py`` writes ``training_reference.json`` (each
weight tensor as the sha256 of its bytes, dtype and shape; the curves as floats, which JSON keeps exactly);
``test_single_loop_reference.py`` trains them again and compares bit for bit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from adapters.backbones import build_backbone

REFERENCE = Path(__file__).parent / "training_reference.json"
COMMON = {"batch_size": 32, "lr": 1e-3, "max_epochs": 2, "stop_at": 1.0, "precision": "float32"}
EPS = {"eps": 0.03}
# name -> (defense, params, backbone params): every defense, the random ones, a partial batch, batch norm, early stop
RUNS = {
    "naive": ("naive", {}, {}),
    "naive_early_stop": ("naive", {"stop_at": 0.0, "max_epochs": 3}, {}),
    "naive_batch_norm": ("naive", {}, {"batch_norm": True}),
    "fgsm": ("fgsm", EPS, {}),
    "fgsm_half": ("fgsm", {**EPS, "adv_fraction": 0.5}, {}),
    "pgd": ("pgd", {**EPS, "steps": 2}, {}),
    "pgd_random_start": ("pgd", {**EPS, "steps": 2, "random_start": True}, {}),
    "pgd_batch_norm": ("pgd", {**EPS, "steps": 2}, {"batch_norm": True}),
    "trades": ("trades", {**EPS, "steps": 2, "step_size": 0.01}, {}),
    "fast_at": ("fast_at", EPS, {}),
    "free_at": ("free_at", {**EPS, "replays": 2, "max_epochs": 3}, {}),
}
CNN = {"width": 4, "feature_dim": 8}


def data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return torch.rand(80, 3, 16, 16, generator=g), torch.randint(3, (80,), generator=g)  # 80: a partial last batch


def model(seed: int, **params) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone("small_cnn", {**CNN, **params}, num_classes=3)


def digest(tensor: torch.Tensor) -> str:
    """The tensor bit for bit: its dtype, shape and bytes."""
    head = f"{tensor.dtype}{tuple(tensor.shape)}".encode()
    return hashlib.sha256(head + tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def train(name: str, seed: int = 1) -> dict:
    from benchmark.cell.training import train_backbone

    defense, extra, arch = RUNS[name]
    net = model(seed, **arch)
    x, y = data()
    res = train_backbone(net, x, y, defense, {**COMMON, **extra}, seed=seed, progress=False)
    return {"state": {k: digest(v) for k, v in net.state_dict().items()}, "train_loss": res.curves["train_loss"],
            "train_acc": res.curves["train_acc"], "epochs": res.epochs, "stopped_early": res.stopped_early}


if __name__ == "__main__":
    torch.set_num_threads(1)
    REFERENCE.write_text(json.dumps({name: train(name) for name in RUNS}, indent=1) + "\n")
    print(f"wrote {REFERENCE} ({REFERENCE.stat().st_size} bytes)")
