"""Every CUDA path, checked against the CPU: bf16 autocast, channels-last training, the batched attacks, the torch
head and its refits, the cache round trip of a CUDA-trained backbone, grouped training.

Marked ``cuda``: skipped where no CUDA device is (CI); ``scripts/gpu_check.sh`` runs them on the card
(``pytest -m cuda``). Small models and data: seconds each on a GPU.
"""

from __future__ import annotations

import pytest
import torch

from adapters.attacks.adv_poison import AdvPoison
from adapters.attacks.base import AttackContext
from adapters.attacks.poison_frog import PoisonFrog
from adapters.backbones import build_backbone, feature_extractor
from adapters.heads.base import fit_head, fit_heads, head_accuracy
from adapters.heads.refit import RowEdit, refit_heads
from benchmark.cell.training import Member, train_backbone, train_backbones

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")
CNN = {"width": 8, "feature_dim": 32}


def _data(n: int = 128, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 32, 32, generator=g), torch.randint(classes, (n,), generator=g)


def _model(name: str = "small_cnn", params: dict | None = None, classes: int = 3, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_backbone(name, CNN if params is None and name == "small_cnn" else (params or {}), num_classes=classes)


def _flat(model: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().cpu().flatten() for p in model.state_dict().values()])


def _relative_gap(init: torch.nn.Module, a: torch.nn.Module, b: torch.nn.Module) -> float:
    """|a - b| over how far training moved a from its initial weights: 0 for identical runs, ~1 for unrelated ones."""
    return float((_flat(a) - _flat(b)).norm() / (_flat(a) - _flat(init)).norm())


@pytest.fixture
def no_tf32():
    """float32 comparisons with the CPU: TF32 (on by default for cuDNN convolutions) rounds to 10 mantissa bits."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.parametrize("defense", ["naive", "pgd"])
def test_float32_training_on_cuda_matches_the_cpu(defense, no_tf32):
    """Channels-last on CUDA, float32: the same training as on the CPU to float tolerance (VGG13, no batch norm)."""
    x, y = _data(64)
    params = {"max_epochs": 2, "batch_size": 32, "lr": 1e-4, "precision": "float32", "stop_at": 1.0}
    if defense == "pgd":
        params.update(eps=3 / 255, steps=3)
    init, cpu, gpu = _model("vgg13"), _model("vgg13"), _model("vgg13")
    r_cpu = train_backbone(cpu, x, y, defense, params, device="cpu", progress=False)
    r_gpu = train_backbone(gpu, x, y, defense, params, device=CUDA, progress=False)
    assert _relative_gap(init, cpu, gpu) < 0.05  # Adam and sign steps amplify rounding; unrelated runs: ~1
    for a, b in zip(r_cpu.curves["train_loss"], r_gpu.curves["train_loss"], strict=True):
        assert abs(a - b) < 1e-3 * a
    assert next(gpu.parameters()).device.type == CUDA.type and not gpu.training


def test_bf16_autocast_and_channels_last_are_used_on_cuda():
    """precision auto on CUDA: convolutions see channels-last bf16 activations; the losses stay close to float32."""
    x, y = _data(128)
    seen: list[tuple[torch.dtype, bool]] = []
    params = {"max_epochs": 2, "batch_size": 32, "lr": 1e-3, "stop_at": 1.0}
    model = _model("vgg13")
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    hook = conv.register_forward_hook(
        lambda _m, inp, out: seen.append((out.dtype, inp[0].is_contiguous(memory_format=torch.channels_last)))
    )
    auto = train_backbone(model, x, y, "naive", params, device=CUDA, progress=False)
    hook.remove()
    assert seen and all(dtype == torch.bfloat16 and cl for dtype, cl in seen)
    ref = train_backbone(_model("vgg13"), x, y, "naive", {**params, "precision": "float32"}, device=CUDA,
                         progress=False)
    for a, b in zip(auto.curves["train_loss"], ref.curves["train_loss"], strict=True):
        assert abs(a - b) < 0.05 * b
    # the backbone is handed back in the default layout, ready for the feature extractor and the cache
    assert all(p.is_contiguous() for p in model.parameters())


def _attack_context(device: torch.device) -> AttackContext:
    torch.manual_seed(0)
    backbone = _model(classes=2)
    extractor = feature_extractor(backbone).to(device)
    x, _ = _data(96, seed=1)
    y = torch.arange(96) % 2
    with torch.no_grad():
        f = extractor(x.to(device)).float().cpu()
    head = fit_head(f[:64], y[:64])
    return AttackContext(extractor=extractor, x_train=x[:64], y_train=y[:64], x_test=x[64:], y_test=y[64:],
                         f_train=f[:64], f_test=f[64:], head=head, fit_head=lambda a, b: fit_head(a, b),
                         device=device)


def test_batched_poison_frog_on_cuda_matches_the_cpu():
    """Same targets, same bases; the collision reaches the same feature distance (sign steps amplify float noise, so
    the result is compared, as in the benchmark, not the bits)."""
    attack = PoisonFrog(num_targets=8, num_poisons=2, steps=20, binary=False, batch_size=16)
    cpu, gpu = attack(_attack_context(torch.device("cpu"))), attack(_attack_context(CUDA))
    assert [t.target_index for t in cpu.trials] == [t.target_index for t in gpu.trials]
    assert all(torch.equal(a.indices, b.indices) for a, b in zip(cpu.trials, gpu.trials, strict=True))
    d_cpu, d_gpu = cpu.info["mean_feature_distance"], gpu.info["mean_feature_distance"]
    assert abs(d_cpu - d_gpu) <= 0.05 * d_cpu
    x_train = _attack_context(torch.device("cpu")).x_train
    for t in gpu.trials:
        assert (t.x.cpu() - x_train[t.indices]).abs().max() <= attack.budget_eps + 1e-6


def test_batched_adv_poison_on_cuda_matches_the_cpu():
    attack = AdvPoison(steps=5, eps=8 / 255)
    cpu, gpu = attack(_attack_context(torch.device("cpu"))), attack(_attack_context(CUDA))
    xc, xg = cpu.trials[0].x.cpu(), gpu.trials[0].x.cpu()
    assert xc.shape == xg.shape and torch.equal(cpu.trials[0].indices, gpu.trials[0].indices)
    # sign steps: most pixels take the same path; a few flip where the gradient is near zero
    assert ((xc - xg).abs() < 1e-4).float().mean() > 0.9


def test_torch_svm_and_refits_on_cuda_match_the_cpu_and_linearsvc():
    g = torch.Generator().manual_seed(0)
    n, d = 400, 64
    y = torch.randint(2, (n,), generator=g)
    f = (torch.randn(2, d, generator=g)[y] + 2.0 * torch.randn(n, d, generator=g)).relu()
    h_cpu, h_gpu = fit_head(f, y, "torch_svm", device="cpu"), fit_head(f, y, "torch_svm", device=CUDA)
    assert torch.allclose(h_cpu.weight.cpu(), h_gpu.weight.cpu(), atol=1e-5)
    edits = [RowEdit(torch.tensor([i]), f[i : i + 1] + 1.0, y[i : i + 1]) for i in range(10)]
    heads = refit_heads(f, y, edits, "torch_svm", device=CUDA, init=h_gpu)
    sets = [e.apply(f, y) for e in edits]
    for (fe, ye), h, sk in zip(sets, heads, fit_heads(sets, "linear_svc"), strict=True):
        assert abs(head_accuracy(h, fe, ye) - head_accuracy(sk, fe, ye)) <= 0.01


def test_cache_round_trip_of_a_cuda_trained_backbone(smoke_dict, tmp_path):
    """A cell trained on CUDA caches its backbone (on the CPU); the second run loads it and gives the same metrics."""
    from conftest import tiny_suite

    from benchmark.cell.pipeline import RunOptions, run_cell
    from benchmark.suite import expand, parse_suite

    cell = expand(parse_suite(tiny_suite(smoke_dict)))[0]
    opts = RunOptions(device="cuda", cache_dir=str(tmp_path / "cache"))
    first, second = run_cell(cell, opts), run_cell(cell, opts)
    assert first.status == second.status == "FINISHED", (first.error, second.error)
    assert first.metrics["backbone_cached"] == 0.0 and second.metrics["backbone_cached"] == 1.0
    for key in ("clean_accuracy", "external_accuracy"):  # from the cached weights and features: exactly the same
        assert second.metrics[key] == first.metrics[key]
    # recomputed on the card from the loaded weights; cuDNN's backward may round differently: one sample at most
    assert abs(second.metrics["robust_accuracy"] - first.metrics["robust_accuracy"]) <= 1 / cell.evaluation.robust_samples
    from benchmark.store.cache import Cache

    entry = Cache(str(tmp_path / "cache")).entries()
    assert any(e.kind == "backbone" for e in entry)


def test_grouped_training_on_cuda_matches_sequential(no_tf32):
    x, y = _data(96)
    specs = [("naive", {}, 0), ("pgd", {"eps": 3 / 255, "steps": 3}, 1), ("fgsm", {"eps": 3 / 255}, 2)]
    common = {"max_epochs": 2, "batch_size": 32, "lr": 1e-3, "precision": "float32", "stop_at": 1.0}
    sequential = []
    for defense, extra, seed in specs:
        model = _model(seed=seed)
        train_backbone(model, x, y, defense, {**common, **extra}, device=CUDA, seed=seed, progress=False)
        sequential.append(model)
    members = [Member(_model(seed=seed), defense, {**common, **extra}, seed) for defense, extra, seed in specs]
    train_backbones(members, x, y, device=CUDA, progress=False)
    for model, member, (_, _, seed) in zip(sequential, members, specs, strict=True):
        assert _relative_gap(_model(seed=seed), model, member.backbone) < 0.05  # unrelated runs: ~1


def test_grouped_bf16_on_cuda_stays_close_to_sequential():
    """Under bf16 autocast the two paths round differently; the training losses must still agree closely."""
    x, y = _data(128)
    common = {"max_epochs": 2, "batch_size": 64, "lr": 1e-3, "stop_at": 1.0}
    results = [train_backbone(_model(seed=s), x, y, "naive", common, device=CUDA, seed=s, progress=False)
               for s in (0, 1)]
    grouped = train_backbones([Member(_model(seed=s), "naive", common, s) for s in (0, 1)], x, y, CUDA, progress=False)
    for a, b in zip(results, grouped, strict=True):
        for la, lb in zip(a.curves["train_loss"], b.curves["train_loss"], strict=True):
            assert abs(la - lb) < 0.02 * la
    assert grouped[0].classes == [0, 1, 2]
