"""Ground truth (`viscoin evaluate ground-truth`): the AUC against sklearn's, planted dictionaries (the
attributes themselves: 1; random: ≈ 0.5), the render test on a fake renderer whose concept draws the
attribute (flips ≈ 1) or ignores it (≈ 0), the metric end to end on the tiny model with planted attribute
labels, the comparison's rows, the CLI's errors, and the probe on the shapes dataset."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from torch import nn

from viscoin_cli.data.images import ImageDataset
from viscoin_cli.metrics.checks import Check, flatten
from viscoin_cli.metrics.ground_truth import (
    attribute_auc,
    auc,
    concept_aucs,
    matched_concepts,
    probe_accuracy,
    render_test,
    result_keys,
    train_probe,
)

VALUES = {"shape": ["circle", "square", "triangle", "cross"], "pattern": ["solid", "striped"], "size": ["s", "l"]}


def _attributes(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {name: torch.randint(len(names), (n,), generator=generator) for name, names in VALUES.items()}


def _one_hot(attributes: dict[str, torch.Tensor]) -> torch.Tensor:
    """[N, 8]: concept k is value k (shape's 4, then pattern's 2, then size's 2)."""
    columns = [attributes[name] == i for name, names in VALUES.items() for i in range(len(names))]
    return torch.stack(columns, 1).float()


# --- the AUC ------------------------------------------------------------------------------------------------


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(0)
    for n, levels in ((50, 3), (300, 10), (1000, 1000)):
        scores = rng.integers(0, levels, n).astype(float)  # few levels: many ties
        labels = rng.random(n) < 0.3
        assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert auc(torch.tensor(scores), torch.tensor(labels)) == pytest.approx(roc_auc_score(labels, scores))
    assert auc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]) == 1.0
    assert auc([0.1, 0.2, 0.8, 0.9], [1, 1, 0, 0]) == 0.0
    assert auc([1.0, 1.0, 1.0, 1.0], [1, 0, 1, 0]) == 0.5  # all tied: every pair counts half
    assert auc(rng.random(2000), rng.random(2000) < 0.5) == pytest.approx(0.5, abs=0.05)


def test_concept_aucs_is_auc_per_column_and_nan_when_undefined():
    torch.manual_seed(0)
    pooled = torch.randint(0, 4, (120, 5)).float()
    positives = torch.rand(3, 120) < 0.4
    table = concept_aucs(pooled, positives)
    for t in range(3):
        for k in range(5):
            assert table[t, k] == pytest.approx(auc(pooled[:, k], positives[t]), abs=1e-12)
    assert concept_aucs(pooled, torch.zeros(1, 120, dtype=torch.bool)).isnan().all()  # no positive
    pooled[3, 2] = float("nan")  # a broken concept: no AUC, not a made-up rank
    assert (
        concept_aucs(pooled, positives)[:, 2].isnan().all() and not concept_aucs(pooled, positives)[:, 0].isnan().any()
    )


# --- detection on planted dictionaries -------------------------------------------------------------------------


def test_a_model_whose_concepts_are_the_attributes_scores_1_and_captures_all():
    attributes = _attributes(300)
    result = attribute_auc(_one_hot(attributes), attributes, VALUES)
    assert result["mean_auc"] == 1.0 and result["captured"] == result["targets"] == 8
    assert result["attributes_captured"] == result["attributes"] == 3 and result["captured_fraction"] == 1.0
    assert [entry["concept"] for a in result["per_attribute"].values() for entry in a["values"].values()] == list(
        range(8)
    )
    assert result["per_attribute"]["shape"]["values"]["square"] == {
        "concept": 1,
        "auc": 1.0,
        "captured": True,
        "positives": int((attributes["shape"] == 1).sum()),
    }
    assert matched_concepts(result, VALUES) == {
        (name, i): k for k, (name, i) in enumerate((n, i) for n, v in VALUES.items() for i in range(len(v)))
    }
    # permuted columns and extra dead or noisy concepts change which index, not the score
    shuffled = torch.cat(
        [torch.zeros(300, 1), torch.rand(300, 3), _one_hot(attributes)[:, [5, 2, 7, 0, 1, 6, 3, 4]]], 1
    )
    again = attribute_auc(shuffled, attributes, VALUES)
    assert again["mean_auc"] == 1.0 and again["captured"] == 8
    assert (
        again["per_attribute"]["pattern"]["values"]["solid"]["concept"] == 11
    )  # old column 4, moved to 7 of the block


def test_a_random_model_scores_about_a_half_and_captures_none():
    attributes = _attributes(400, seed=1)
    result = attribute_auc(torch.rand(400, 8, generator=torch.Generator().manual_seed(2)), attributes, VALUES)
    assert result["mean_auc"] == pytest.approx(0.5, abs=0.1)
    assert result["captured"] == 0 and result["attributes_captured"] == 0
    for attribute in result["per_attribute"].values():
        assert attribute["mean_auc"] == pytest.approx(0.5, abs=0.1)


def test_an_anti_correlated_concept_is_credited_to_the_other_value_not_flipped():
    """A concept active exactly when `pattern` is not solid is the concept for striped: AUC 1 there, 0 for solid."""
    attributes = _attributes(200)
    striped = (attributes["pattern"] == 1).float()[:, None]
    result = attribute_auc(torch.cat([striped, torch.full((200, 1), 0.3)], 1), attributes, VALUES, threshold=0.8)
    values = result["per_attribute"]["pattern"]["values"]
    assert values["striped"]["auc"] == 1.0 and values["striped"]["captured"]
    assert values["solid"]["auc"] == 0.5 and not values["solid"]["captured"]  # the constant, not 1 - 0
    assert result["per_attribute"]["pattern"]["mean_auc"] == 0.75 and result["attributes_captured"] == 0
    assert result["threshold"] == 0.8


def test_a_value_absent_from_the_split_has_no_score_and_is_not_counted():
    attributes = _attributes(100)
    attributes["shape"][attributes["shape"] == 3] = 0  # no cross in the split
    result = attribute_auc(_one_hot(attributes), attributes, VALUES)
    cross = result["per_attribute"]["shape"]["values"]["cross"]
    assert cross == {"concept": None, "auc": None, "captured": False, "positives": 0}
    assert result["targets"] == 7 and result["captured"] == 7 and result["mean_auc"] == 1.0
    assert result["attributes_captured"] == 3  # every value the split has is captured


# --- the render test on a fake renderer ---------------------------------------------------------------------------

BRIGHT = {"light": ["dark", "bright"]}


def _brightness_images(levels: torch.Tensor, seed: int) -> torch.Tensor:
    noise = torch.rand(len(levels), 3, 16, 16, generator=torch.Generator().manual_seed(seed)) * 0.2 - 0.1
    return (levels[:, None, None, None] + noise).clamp(-1, 1)


class Renderer(nn.Module):
    """Concept 0 is 'bright', concept 1 'dark' (maps of 0.75 where present, 0.25 where not); the render's
    brightness is 2·(mean Φ_0 - mean Φ_1) (or, `ignores`, the original brightness kept in the support)."""

    def __init__(self, ignores: bool = False):
        super().__init__()
        self.ignores = ignores
        self.anchor = nn.Parameter(torch.zeros(()))  # where the model lives

    def render(self, concept_maps: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        level = support[:, 0] if self.ignores else 2 * (concept_maps[:, 0] - concept_maps[:, 1]).mean((1, 2))
        return _brightness_images(level.clamp(-1, 1), seed=7)


def _encoded_brightness(count: int = 120) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
    bright = torch.arange(count) % 2
    present = torch.stack([bright, 1 - bright], 1).float() * 0.5 + 0.25  # [N, 2]
    maps = present[:, :, None, None].expand(count, 2, 3, 3).clone()
    support = (bright.float() * 2 - 1)[:, None]  # the original brightness
    return maps, support, {"light": bright}


@pytest.fixture(scope="module")
def brightness_probe():
    levels = torch.tensor([-0.6, 0.6]).repeat(100)
    probe = train_probe(_brightness_images(levels, seed=0), {"light": (levels > 0).long()}, BRIGHT, steps=80)
    test_levels = torch.tensor([-0.6, 0.6]).repeat(50)
    scores = probe_accuracy(probe, _brightness_images(test_levels, seed=1), {"light": (test_levels > 0).long()})
    assert scores["accuracy"]["light"] == 1.0 and scores["majority"]["light"] == 0.5
    return probe


def test_turning_up_the_concept_that_draws_the_attribute_flips_the_probe(brightness_probe):
    maps, support, attributes = _encoded_brightness()
    result = attribute_auc(maps.mean((2, 3)), attributes, BRIGHT)
    matches = matched_concepts(result, BRIGHT)
    assert matches == {("light", 0): 1, ("light", 1): 0}
    before = maps.clone()
    renders = render_test(Renderer(), maps, support, attributes, matches, brightness_probe, lam=4.0, samples=40)
    assert torch.equal(maps, before)  # the encodings are not edited in place
    for target in matches:
        assert renders[target]["samples"] == 40
        assert renders[target]["flip_rate"] == pytest.approx(1.0, abs=0.05)
        assert renders[target]["probability_gain"] > 0.8 and renders[target]["baseline_rate"] == 0.0


def test_a_renderer_that_ignores_the_concept_flips_nothing(brightness_probe):
    maps, support, attributes = _encoded_brightness()
    matches = matched_concepts(attribute_auc(maps.mean((2, 3)), attributes, BRIGHT), BRIGHT)
    renders = render_test(Renderer(ignores=True), maps, support, attributes, matches, brightness_probe, samples=40)
    for target in matches:
        assert renders[target]["flip_rate"] == pytest.approx(0.0, abs=0.05)
        assert abs(renders[target]["probability_gain"]) < 0.05
    # the same seed draws the same images
    assert render_test(Renderer(), maps, support, attributes, matches, brightness_probe, samples=7) == render_test(
        Renderer(), maps, support, attributes, matches, brightness_probe, samples=7
    )


def test_result_keys_name_every_number_of_the_document(brightness_probe):
    from viscoin_cli.metrics.ground_truth import add_render_results

    maps, support, attributes = _encoded_brightness(20)
    result = attribute_auc(maps.mean((2, 3)), attributes, BRIGHT)
    renders = render_test(Renderer(), maps, support, attributes, matched_concepts(result, BRIGHT), brightness_probe)
    add_render_results(result, renders, BRIGHT, 4.0, 100)
    result["probe"] = {"resolution": 16, "steps": 80, "train_images": 200, "test_images": 100}
    result["probe"] |= probe_accuracy(brightness_probe, _brightness_images(support[:, 0], 3), attributes)
    assert set(flatten({"ground_truth": result})) == result_keys(BRIGHT, render=True)
    assert result["render"]["targets"] == 2 and result["render"]["flip_rate"] == 1.0


# --- the shift test: generator directions on a fake generator ----------------------------------------------------


class BrightnessGenerator(nn.Module):
    """A stand-in G: z is w (2 W+ vectors of 4 dims); the image's brightness is w[0]: direction e0 draws
    'bright' going up and 'dark' going down, e1 changes nothing the probe can see."""

    z_dim, w_dim = 4, 4

    def __init__(self):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(()))  # where the model lives

    def mapping(self, z: torch.Tensor, c: None) -> torch.Tensor:  # noqa: ARG002 (G's signature)
        return z[:, None, :].expand(-1, 2, -1) * 0.3

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:  # noqa: ARG002
        return _brightness_images(ws[:, 0, 0].clamp(-0.7, 0.7), seed=5)


def _planted_directions():
    from viscoin_cli.nets.latent_directions import LatentDirections

    directions = LatentDirections(2, 4)
    directions.raw.data = torch.eye(4)[:2].clone()
    return directions


def test_the_direction_that_draws_the_attribute_flips_the_probe_and_the_other_flips_nothing(brightness_probe):
    from viscoin_cli.metrics.ground_truth import shift_test

    result = shift_test(BrightnessGenerator(), _planted_directions(), brightness_probe, BRIGHT, shift=3.0, samples=60)
    bright, dark = (result["per_attribute"]["light"]["values"][v] for v in ("bright", "dark"))
    assert (bright["direction"], bright["sign"], dark["direction"], dark["sign"]) == (0, 1, 0, -1)
    assert bright["flip_rate"] > 0.95 and dark["flip_rate"] > 0.95 and bright["probability_gain"] > 0.5
    assert bright["samples"] + dark["samples"] == 60  # each image lacks exactly one of the two values
    assert 0.2 < bright["baseline_rate"] < 0.8
    assert result["controlled"] == 2 and result["targets"] == 2 and result["flip_rate"] > 0.95
    first, second = result["by_direction"]
    assert first["direction"] == 0 and first["flip_rate"] > 0.95
    assert second["direction"] == 1 and second["flip_rate"] == pytest.approx(0.0, abs=0.05)
    again = shift_test(BrightnessGenerator(), _planted_directions(), brightness_probe, BRIGHT, shift=3.0, samples=60)
    assert again == result  # the seed draws the same latents


def test_a_value_the_generator_always_draws_has_nothing_to_flip(brightness_probe):
    from viscoin_cli.metrics.ground_truth import shift_test

    class AlwaysBright(BrightnessGenerator):
        def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:  # noqa: ARG002  # noqa: ARG002
            return _brightness_images(torch.full((len(ws),), 0.6), seed=5)

    result = shift_test(AlwaysBright(), _planted_directions(), brightness_probe, BRIGHT, shift=3.0, samples=20)
    bright, dark = (result["per_attribute"]["light"]["values"][v] for v in ("bright", "dark"))
    assert bright["samples"] == 0 and bright["flip_rate"] is None and bright["baseline_rate"] == 1.0
    assert dark["samples"] == 20 and dark["flip_rate"] == 0.0
    assert result["targets"] == 1 and result["controlled"] == 0


# --- the metric end to end: the tiny digits model with planted attribute labels --------------------------------


class Labelled(ImageDataset):
    """A split of digits with two recorded attributes: ink (the image's mean pixel above the split's median)
    and parity (of the digit)."""

    def __init__(self, base: ImageDataset):
        self.base, self.name, self.split, self.root = base, base.name, base.split, None
        self.class_names, self.resolution, self.labels = base.class_names, base.resolution, base.labels
        ink = torch.stack([base[i][0].mean() for i in range(len(base))])
        self.attributes = {"ink": (ink > ink.median()).long(), "parity": torch.tensor(base.labels) % 2}
        self.attribute_values = {"ink": ["light", "heavy"], "parity": ["even", "odd"]}

    def __getitem__(self, index: int):
        return self.base[index]


@pytest.fixture(scope="module")
def labelled_evaluation(tiny_model):
    from viscoin_cli.data import load_dataset
    from viscoin_cli.metrics.evaluation import Settings, open_evaluation
    from viscoin_cli.runtime import setup_runtime

    rt = setup_runtime(device="cpu", seed=0)
    evaluation = open_evaluation(tiny_model, rt, Settings(render_samples=12, seed=3))
    for split in ("train", "test"):
        evaluation._datasets[split] = Labelled(load_dataset("digits", split, resolution=16))
    return evaluation


def test_the_metric_end_to_end_with_its_checks(labelled_evaluation):
    checks = [Check("ground_truth.captured", 0, "under", "captured=0"), Check("ground_truth.mean_auc", 2, "over", "x")]
    document = labelled_evaluation.evaluate(["ground_truth"], checks)
    gt = document["metrics"]["ground_truth"]
    assert gt["samples"] == 360 and gt["concepts"] == 8 and gt["attributes"] == 2 and gt["targets"] == 4
    assert 0 <= gt["mean_auc"] <= 1 and gt["threshold"] == 0.9
    assert gt["render"]["lambda"] == 4.0 and gt["render"]["samples"] == 12 and gt["render"]["targets"] == 4
    assert gt["probe"]["train_images"] == 1437 and gt["probe"]["test_images"] == 360 and gt["probe"]["resolution"] == 16
    assert set(gt["probe"]["accuracy"]) == {"ink", "parity"}
    assert gt["probe"]["accuracy"]["ink"] > 0.8  # mean brightness: the probe sees it
    for attribute in gt["per_attribute"].values():
        for entry in attribute["values"].values():
            assert 0 <= entry["concept"] < 8 and entry["render"]["samples"] == 12
            assert 0 <= entry["render"]["flip_rate"] <= 1
    assert [check["passed"] for check in document["checks"]] == [True, True]
    assert document["settings"]["capture_threshold"] == 0.9 and document["settings"]["render_samples"] == 12
    assert "ground_truth_probe" in document["seconds"] and "non_finite" not in document
    assert set(flatten({"ground_truth": gt})) == labelled_evaluation.optional_keys(["ground_truth"])
    json.dumps(document, allow_nan=False)


def test_an_unknown_ground_truth_key_fails_before_any_work(labelled_evaluation):
    from viscoin_cli.errors import UserError

    with pytest.raises(UserError, match=r"unknown key \(try ground_truth\."):
        labelled_evaluation.evaluate(["ground_truth"], [Check("ground_truth.nope", 1, "under", "ground_truth.nope")])


# --- the comparison's rows ----------------------------------------------------------------------------------------


def test_compare_shows_the_ground_truth_rows_only_when_asked():
    from viscoin_cli.interpret.compare import Measures, cells, comparison_document

    models = [
        SimpleNamespace(
            path=Path(f"{name}/latest.safetensors"),
            sha256="ab" * 32,
            method=name,
            num_concepts=8,
            split={"name": "shapes", "resolution": 32},
            classifier="cd" * 32,
        )
        for name in ("viscoin", "flint")
    ]
    measures = [Measures(), Measures()]
    measures[0].metrics["ground_truth"] = {
        "mean_auc": 0.97,
        "captured": 14,
        "targets": 16,
        "render": {"flip_rate": 0.8},
    }
    measures[1].metrics["ground_truth"] = {"mean_auc": 0.71, "captured": 3, "targets": 16, "render": None}
    document = comparison_document(models, measures, {"thresholds": [0.2]}, ["ground_truth"], [2.0])
    rows = {row["key"]: row for row in document["rows"]}
    assert (
        rows["ground_truth.mean_auc"]["values"] == [0.97, 0.71] and rows["ground_truth.mean_auc"]["better"] == "higher"
    )
    assert cells(rows["ground_truth.captured"]) == ["14 of 16", "3 of 16"]
    assert rows["ground_truth.render.flip_rate"]["values"] == [0.8, None]
    plain = comparison_document(models, [Measures(), Measures()], {"thresholds": [0.2]}, ["accuracy"], [2.0])
    assert not any(row["key"].startswith("ground_truth") for row in plain["rows"])


# --- the command line ------------------------------------------------------------------------------------------


def test_ground_truth_on_a_dataset_without_attributes_is_a_one_line_error(tiny_model):
    result = run_cli("evaluate", "ground-truth", "--model", tiny_model, "--device", "cpu")
    line = assert_one_line_error(result)
    assert "dataset digits has no attribute labels: ground-truth needs a dataset that records them" in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["accuracy", "--fail-under", "ground-truth.captured=3"],
            "ground_truth is not computed (evaluate ground-truth)",
        ),
        (["ground-truth", "--capture-threshold", "1.5"], "--capture-threshold 1.5: must be an AUC in (0, 1]"),
        (["ground-truth", "--render-samples", "-1"], "--render-samples -1: must be 0"),
        (["ground-truth", "--render-lambda", "inf"], "--render-lambda inf: must be a number within"),
    ],
)
def test_ground_truth_usage_errors(tiny_model, args, message):
    result = run_cli("evaluate", *args, "--model", tiny_model, "--device", "cpu")
    assert message in assert_one_line_error(result)


# --- the shapes dataset ------------------------------------------------------------------------------------------


def test_on_shapes_the_attributes_as_concepts_capture_everything_and_the_probe_is_trustworthy():
    shapes = pytest.importorskip("viscoin_cli.data.shapes")
    train, test = shapes.ShapesDataset("train", 32, False), shapes.ShapesDataset("test", 32, False)
    columns = [test.attributes[name] == i for name, names in test.attribute_values.items() for i in range(len(names))]
    oracle = attribute_auc(torch.stack(columns, 1).float(), test.attributes, test.attribute_values)
    assert oracle["mean_auc"] == 1.0 and oracle["captured"] == oracle["targets"] == 16
    assert oracle["attributes_captured"] == 6
    images = lambda data: data.images.float() * (2 / 255) - 1  # noqa: E731  (what __getitem__ gives, all at once)
    probe = train_probe(images(train), train.attributes, train.attribute_values, seed=0)
    accuracy = probe_accuracy(probe, images(test), test.attributes)["accuracy"]
    assert min(accuracy.values()) > 0.85, accuracy


@pytest.fixture(scope="module")
def shapes_models(tmp_path_factory) -> list[Path]:
    """`viscoin train` for a few steps on 16 px shapes with a random tiny f and G (as conftest's tiny model),
    twice (seeds 0 and 1, the same f and G)."""
    from conftest import TINY_G

    from viscoin_cli.data import DATASET_NAMES
    from viscoin_cli.io.checkpoint import save_checkpoint
    from viscoin_cli.nets.classifier import Classifier
    from viscoin_cli.nets.stylegan2 import Generator

    if "shapes" not in DATASET_NAMES:
        pytest.skip("the shapes dataset is not registered yet")
    from viscoin_cli.data import load_dataset

    folder = tmp_path_factory.mktemp("shapes-model")
    facts = load_dataset("shapes", "test", resolution=16).facts()
    torch.manual_seed(0)
    f = Classifier("resnet18", 8, width=4, stem="small")
    save_checkpoint(folder / "f.safetensors", f.state_dict(), kind="classifier", config=f.config, dataset=facts)
    G = Generator(**TINY_G)
    save_checkpoint(folder / "G.safetensors", G.state_dict(), kind="generator", config=TINY_G, dataset=facts)
    args = ["--classifier", folder / "f.safetensors", "--generator", folder / "G.safetensors", "--dataset", "shapes"]
    args += ["--concepts", "8", "--hidden", "8", "--real-batch", "4", "--synthetic-batch", "4", "--iterations", "4"]
    models = []
    for seed in (0, 1):
        result = run_cli("train", *args, "--device", "cpu", "--seed", seed, "--quiet", "--out", folder / f"run{seed}")
        assert result.exit_code == 0, result.output
        models.append(folder / f"run{seed}" / "latest.safetensors")
    return models


def test_evaluate_ground_truth_on_shapes_end_to_end(shapes_models):
    args = ["--model", shapes_models[0], "--device", "cpu", "--render-samples", "5", "--seed", "1"]
    result = run_cli("evaluate", "ground-truth", *args, "--json", "--fail-under", "ground-truth.captured=99")
    assert result.exit_code == 1, result.output  # a 4-step model captures nowhere near 99 values
    document = json.loads(result.stdout)
    gt = document["metrics"]["ground_truth"]
    assert list(document["metrics"]) == ["ground_truth"] and gt["attributes"] == 6 and gt["targets"] == 16
    assert gt["samples"] == 1000 and gt["probe"]["train_images"] == 4000 and gt["render"]["samples"] == 5
    assert set(gt["probe"]["accuracy"]) == {"shape", "colour", "pattern", "size", "position", "background"}
    assert document["checks"][0]["key"] == "ground_truth.captured" and not document["checks"][0]["passed"]
    assert "check failed: ground_truth.captured" in result.stderr
    table = run_cli("evaluate", "ground-truth", *args, "--render-samples", "0")
    assert table.exit_code == 0, table.output
    for text in ("ground_truth.mean_auc", "ground_truth.captured", "best concept", "circle", "background"):
        assert text in table.stdout


def test_compare_shows_ground_truth_per_model_on_shapes(shapes_models):
    args = ["--metrics", "ground-truth", "--render-samples", "2", "--device", "cpu", "--json"]
    result = run_cli("compare", *shapes_models, *args)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    rows = {row["key"]: row for row in document["rows"]}
    for key in ("ground_truth.mean_auc", "ground_truth.captured", "ground_truth.render.flip_rate"):
        assert all(isinstance(value, int | float) for value in rows[key]["values"]), rows[key]
    assert rows["ground_truth.captured"]["of"] == [16, 16]
    assert document["settings"]["render_samples"] == 2 and document["settings"]["metrics"] == ["ground_truth"]


@pytest.fixture(scope="module")
def shapes_directions(shapes_models, tmp_path_factory) -> tuple[Path, Path, dict]:
    """Both directions methods on the shapes models' f and G (a few steps): the classifier directions'
    checkpoint, the generator directions' checkpoint and its summary.json."""
    folder, out = shapes_models[0].parent.parent, tmp_path_factory.mktemp("shapes-directions")
    result = run_cli(
        "directions", "classifier", "--classifier", folder / "f.safetensors", "--directions", 3, "--samples", 600,
        "--test-images", 40, "--top-images", 2, "--device", "cpu", "--batch-size", 128, "--out", out / "classifier",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    result = run_cli(
        "directions", "gan", "--generator", folder / "G.safetensors", "--directions", 3, "--iterations", 2,
        "--batch-size", 4, "--eval-samples", 8, "--device", "cpu", "--out", out / "gan",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "ground truth (shift test" in result.stdout
    summary = json.loads((out / "gan" / "summary.json").read_text())
    return out / "classifier" / "directions.safetensors", out / "gan" / "latest.safetensors", summary


def test_directions_gan_writes_the_shift_test_on_shapes(shapes_directions):
    truth = shapes_directions[2]["ground_truth"]
    assert truth["method"] == "gan" and truth["directions"] == 3 and truth["samples"] == 100
    assert [row["direction"] for row in truth["by_direction"]] == [0, 1, 2]
    assert set(truth["per_attribute"]) == {"shape", "colour", "pattern", "size", "position", "background"}
    assert 0 < truth["targets"] <= 16 and 0 <= truth["controlled"] <= truth["targets"]
    assert set(truth["probe"]["accuracy"]) == set(truth["per_attribute"])


def test_compare_shows_the_directions_ground_truth_on_shapes(shapes_models, shapes_directions, capsys):
    from viscoin_cli.cli.compare import print_directions

    classifier_dirs, gan_dirs, _ = shapes_directions
    args = ["--metrics", "ground-truth", "--render-samples", "2", "--device", "cpu"]
    args += ["--directions", classifier_dirs, "--directions", gan_dirs]
    result = run_cli("compare", *shapes_models, *args, "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    entries = {entry["method"]: entry for entry in document["directions"]}
    by_method = {method: entry["ground_truth"] for method, entry in entries.items()}
    assert by_method["classifier"]["method"] == "classifier" and by_method["classifier"]["targets"] == 16
    kept = len(entries["classifier"]["pairings"][0]["pairs"])  # the directions URA kept
    assert len(by_method["classifier"]["by_direction"]) == kept and 0 <= by_method["classifier"]["mean_auc"] <= 1
    assert by_method["gan"]["method"] == "gan" and len(by_method["gan"]["by_direction"]) == 3
    capsys.readouterr()
    for entry in document["directions"]:  # the tables compare prints without --json
        print_directions(entry, document)
    table = capsys.readouterr().out
    for text in ("ground truth", "mean best AUC", "shift test", "(AUC 0."):
        assert text in table, text
    plain = run_cli("compare", *shapes_models, "--metrics", "accuracy", "--device", "cpu", "--directions", gan_dirs)
    assert plain.exit_code == 0 and "shift test" not in plain.stdout  # only with the ground-truth metric
