"""CUB's bird attributes as ground truth: the attribute files read into multi-label labels that follow the
splits, the archive's layout and the rows with an extra column, hostile files as one-line errors, the AUC and
the probe on multi-label attributes (an image may show several values of one attribute, or none), the render
test on a fake renderer, and `evaluate ground-truth` end to end on a tiny CUB model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from _fake_data import CUB_ATTRIBUTES, cub_attribute_present, write_cub
from conftest import run_cli
from torch import nn

from viscoin_cli.data import load_dataset
from viscoin_cli.errors import UserError
from viscoin_cli.metrics.ground_truth import (
    attribute_auc,
    matched_concepts,
    probe_accuracy,
    render_test,
    train_probe,
    value_present,
)

WINGS = {"wing_color": ["red", "green", "blue"]}


def _wings(image_ids, classes: int) -> list[list[bool]]:
    return [[cub_attribute_present(i, a, classes) for a in (1, 2, 3)] for i in image_ids]


# --- reading the files -------------------------------------------------------------------------------------


def test_the_attribute_files_become_multi_label_attributes_that_follow_each_split(tmp_path):
    root = write_cub(tmp_path / "CUB_200_2011", classes=4, train=8, test=4, attributes=True)
    train = load_dataset("cub", "train", root=root, resolution=16)
    assert train.attribute_values == {"wing_color": ["red", "green", "blue"], "size": ["small_(5_-_9_in)"]}
    assert train.attributes["wing_color"].shape == (8, 3) and train.attributes["size"].shape == (8, 1)
    assert train.attributes["wing_color"].bool().tolist() == _wings(range(1, 9), 4)  # image 1 has the extra column
    assert train.attributes["wing_color"][3].tolist() == [1, 1, 0]  # class 3 is yellow: two wing colours at once
    test = load_dataset("cub", "test", root=root, resolution=16)
    assert test.attributes["wing_color"].bool().tolist() == _wings(range(9, 13), 4)
    assert test.attributes["size"][:, 0].tolist() == [1, 0, 1, 0]  # small for odd ids (9, 11), none otherwise


def test_the_held_out_val_split_keeps_its_images_attributes(tmp_path):
    root = write_cub(tmp_path / "CUB_200_2011", classes=2, train=12, test=2, attributes=True)
    whole = load_dataset("cub", "train", root=root, resolution=16)
    val = load_dataset("cub", "val", root=root, resolution=16, val_fraction=0.25)
    assert len(val) == 4 and torch.equal(val.attributes["wing_color"], whole.attributes["wing_color"][val.positions])


def test_without_the_attribute_files_the_split_has_no_attributes(tmp_path):
    root = write_cub(tmp_path / "CUB_200_2011", attributes=False)
    assert not getattr(load_dataset("cub", "test", root=root, resolution=16), "attributes", None)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (
            lambda root: _edit(root / "attributes" / "image_attribute_labels.txt", " 1 3 12.5", " x 3 12.5"),
            "is_present must be 0 or 1, found 'x'",
        ),
        (lambda root: _edit(root.parent / "attributes.txt", "has_size::", "has_size--"), "is not 'group::value'"),
        (lambda root: _drop_image(root, 2), "no attribute labels for image id 2"),
        (
            lambda root: _edit(root / "attributes" / "image_attribute_labels.txt", "1 4 ", "1 9 "),
            "attribute id 9 is not in",
        ),
        (
            lambda root: _edit(root / "attributes" / "image_attribute_labels.txt", "2 1 ", "2\n"),
            "expected at least 3 columns",
        ),
    ],
)
def test_damaged_attribute_files_are_one_line_errors(tmp_path, damage, message):
    root = write_cub(tmp_path / "CUB_200_2011", attributes=True)
    damage(root)
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_dataset("cub", "train", root=root, resolution=16)


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _drop_image(root: Path, image_id: int) -> None:
    path = root / "attributes" / "image_attribute_labels.txt"
    path.write_text("".join(line for line in path.read_text().splitlines(True) if line.split()[0] != str(image_id)))


# --- the score on multi-label attributes ----------------------------------------------------------------------


def _random_wings(count: int, seed: int) -> torch.Tensor:
    return torch.randint(2, (count, 3), generator=torch.Generator().manual_seed(seed)).to(torch.uint8)


def test_value_present_reads_both_kinds_of_labels():
    assert value_present(torch.tensor([0, 2, 1, 2]), 2).tolist() == [False, True, False, True]
    assert value_present(torch.tensor([[1, 0], [1, 1], [0, 0]]), 1).tolist() == [False, True, False]


def test_concepts_that_are_the_attribute_values_score_1_and_random_ones_about_a_half():
    labels = _random_wings(400, seed=0)
    oracle = attribute_auc(labels.float(), {"wing_color": labels}, WINGS)
    assert oracle["mean_auc"] == 1.0 and oracle["captured"] == 3 and oracle["attributes_captured"] == 1
    assert [v["concept"] for v in oracle["per_attribute"]["wing_color"]["values"].values()] == [0, 1, 2]
    noise = torch.rand(400, 16, generator=torch.Generator().manual_seed(1))
    random = attribute_auc(noise, {"wing_color": labels}, WINGS)
    assert random["captured"] == 0 and 0.5 <= random["mean_auc"] < 0.65  # the best of 16 random concepts


def _wing_images(labels: torch.Tensor, seed: int) -> torch.Tensor:
    """Channel k bright where wing colour k is present, dark where not, plus noise."""
    noise = torch.rand(len(labels), 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 0.3 - 0.15
    return (labels.float()[:, :, None, None] * 1.2 - 0.6 + noise).clamp(-1, 1)


class WingRenderer(nn.Module):
    """Concept k draws wing colour k: channel k is bright when map k's mean exceeds 0.5."""

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))

    def render(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return _wing_images((concept_maps.mean((2, 3)) > 0.5).to(torch.uint8), seed=5)


def test_the_probe_and_the_render_test_on_a_multi_label_attribute():
    probe = train_probe(_wing_images(_random_wings(300, 2), 0), {"wing_color": _random_wings(300, 2)}, WINGS, steps=150)
    test_labels = _random_wings(100, 3)
    scores = probe_accuracy(probe, _wing_images(test_labels, 1), {"wing_color": test_labels})
    assert scores["accuracy"]["wing_color"] > 0.95 and 0.5 <= scores["majority"]["wing_color"] < 0.65
    maps = (test_labels.float() * 0.5 + 0.25)[:, :, None, None].expand(100, 3, 3, 3).clone()
    attributes = {"wing_color": test_labels}
    matches = matched_concepts(attribute_auc(maps.mean((2, 3)), attributes, WINGS), WINGS)
    assert matches == {("wing_color", 0): 0, ("wing_color", 1): 1, ("wing_color", 2): 2}
    renders = render_test(WingRenderer(), maps, torch.zeros(100, 1), attributes, matches, probe, lam=4.0, samples=30)
    for target in matches:  # every sampled image lacks the value; λ = 4 lifts its map's mean to 1.0
        assert renders[target]["samples"] == 30 and renders[target]["baseline_rate"] == 0.0
        assert renders[target]["flip_rate"] == pytest.approx(1.0, abs=0.05)


# --- the command line ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_evaluate_ground_truth_on_cub_end_to_end(tmp_path):
    from conftest import TINY_G

    from viscoin_cli.io.checkpoint import save_checkpoint
    from viscoin_cli.nets.classifier import Classifier
    from viscoin_cli.nets.stylegan2 import Generator

    root = write_cub(tmp_path / "CUB_200_2011", classes=4, train=16, test=8, attributes=True)
    facts = load_dataset("cub", "test", root=root, resolution=16).facts()
    torch.manual_seed(0)
    f = Classifier("resnet18", 4, width=4, stem="small")
    save_checkpoint(tmp_path / "f.safetensors", f.state_dict(), kind="classifier", config=f.config, dataset=facts)
    G = Generator(**TINY_G)
    save_checkpoint(tmp_path / "G.safetensors", G.state_dict(), kind="generator", config=TINY_G, dataset=facts)
    data = ["--dataset", "cub", "--data-root", root, "--resolution", "16"]
    args = ["--classifier", tmp_path / "f.safetensors", "--generator", tmp_path / "G.safetensors", *data]
    args += ["--concepts", "8", "--hidden", "8", "--real-batch", "4", "--synthetic-batch", "4", "--iterations", "2"]
    args += ["--lpips", "none"]
    trained = run_cli("train", *args, "--device", "cpu", "--quiet", "--out", tmp_path / "run")
    assert trained.exit_code == 0, trained.output
    model = ["--model", tmp_path / "run" / "latest.safetensors", "--data-root", root, "--device", "cpu"]
    result = run_cli("evaluate", "ground-truth", *model, "--render-samples", "3", "--json")
    assert result.exit_code == 0, result.output
    gt = json.loads(result.stdout)["metrics"]["ground_truth"]
    assert gt["samples"] == 8 and gt["attributes"] == 2 and gt["targets"] == len(CUB_ATTRIBUTES)
    assert gt["probe"]["train_images"] == 16 and set(gt["probe"]["accuracy"]) == {"wing_color", "size"}
    values = gt["per_attribute"]["wing_color"]["values"]
    assert list(values) == ["red", "green", "blue"] and values["blue"]["positives"] == 2  # ids 19 and 23 (class 2)
    assert all(0 <= value["auc"] <= 1 for value in values.values())
    assert gt["render"]["targets"] >= 1
