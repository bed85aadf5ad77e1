"""Label-flip artifacts: the table of relabelled rows and the from -> to picture; nothing for unchanged labels."""

from __future__ import annotations

import csv
import io

import torch

from adapters.attacks.base import PoisonResult, PoisonTrial
from benchmark.cell.artifacts import label_flip_artifacts, poison_artifacts

PNG = b"\x89PNG\r\n\x1a\n"


def _rows(data: bytes) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(data.decode())))


def test_table_lists_exactly_the_flipped_rows():
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    # rows 1 and 4 are replaced; row 4 keeps its label (a random draw can land on the same class)
    trial = PoisonTrial(indices=torch.tensor([1, 4]), y=torch.tensor([2, 1]), x=torch.zeros(2, 1, 2, 2))
    out = label_flip_artifacts(y, PoisonResult(trials=[trial]))
    assert _rows(out["label_flips.csv"]) == [{"trial": "0", "index": "1", "label": "1", "poisoned_label": "2"}]
    assert out["label_flips.png"].startswith(PNG)


def test_nothing_when_no_label_changes():
    y = torch.tensor([0, 1])
    clean_label = PoisonTrial(indices=torch.tensor([0]), y=torch.tensor([0]), x=torch.ones(1, 1, 2, 2))
    assert label_flip_artifacts(y, PoisonResult(trials=[clean_label])) == {}
    assert label_flip_artifacts(y, PoisonResult(trials=[PoisonTrial(torch.tensor([], dtype=torch.long),
                                                                    torch.tensor([], dtype=torch.long))])) == {}


def test_gallery_only_for_changed_images():
    x = torch.rand(4, 3, 8, 8)
    relabelled = PoisonTrial(indices=torch.tensor([0, 2]), y=torch.tensor([1, 1]), x=x[[0, 2]].clone())
    assert "poison_examples.png" not in poison_artifacts(x, PoisonResult(trials=[relabelled]))
    moved = x[[0, 2]].clone()
    moved[1] = (moved[1] + 0.01).clamp(0, 1)
    perturbed = PoisonTrial(indices=torch.tensor([0, 2]), y=torch.tensor([0, 0]), x=moved)
    assert poison_artifacts(x, PoisonResult(trials=[perturbed]))["poison_examples.png"].startswith(PNG)
