"""`viscoin directions classifier`: encoding/decoding direction pairs in a classifier's activations.

Planted cases first (synthetic activations built from known direction pairs, a linear "classifier" that
reads only some of them), then the real command on a tiny random classifier.
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import assert_one_line_error, run_cli, save_tiny_classifier, save_tiny_generator
from torch import nn
from torch.utils.data import TensorDataset

from viscoin_cli.errors import UserError
from viscoin_cli.interpret.direction_pairs import (
    DirectionConfig,
    DirectionPairs,
    covariance,
    evaluate_direction_pairs,
    fit_decoders,
    fit_direction_pairs,
    load_direction_pairs,
    signal_vectors,
    spherical_kmeans,
    strong,
    unit,
)
from viscoin_cli.runtime import setup_runtime


def planted(k: int = 6, dim: int = 24, n: int = 6000, p: float = 0.15, noise: float = 0.02, seed: int = 0):
    """a = Σ s_k e_k + noise: non-negative, non-orthogonal unit e_k; sparse s_k ≥ 0. Returns (a, E, dual), the
    dual basis (rows of pinv(E)ᵀ) being the true decoding directions."""
    g = torch.Generator().manual_seed(seed)
    encoding = unit(torch.rand(k, dim, generator=g) ** 2)  # positive entries: strongly non-orthogonal
    factors = (torch.rand(n, k, generator=g) < p) * (1 + 2 * torch.rand(n, k, generator=g))
    a = factors @ encoding + noise * torch.randn(n, dim, generator=g)
    return a, encoding, torch.linalg.pinv(encoding).T


def best_match(found: torch.Tensor, truth: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For each true direction, the highest cosine among the found ones and which one it is."""
    cosines = unit(truth) @ unit(found).T
    return cosines.max(1)


class LinearProbe(nn.Module):
    """Stands in for f at its pooled tap: the "images" are activation vectors, the logits W a + b."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor):
        super().__init__()
        self.fc = nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            self.fc.weight.copy_(weight)
            self.fc.bias.copy_(bias)
        self.num_classes = weight.shape[0]

    def forward_taps(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"pooled": x, "logits": self.fc(x)}

    def forward_from(self, layer: str, activation: torch.Tensor) -> torch.Tensor:
        assert layer == "pooled"
        return self.fc(activation)


@pytest.fixture(scope="module")
def rt():
    return setup_runtime(device="cpu")


def test_synthetic_pairs_are_recovered():
    """The paper's synthetic check: both directions of every pair come back (cosine near 1 after matching),
    although the encoding directions are far from orthogonal, so decoding ≠ encoding."""
    a, encoding, dual = planted()
    assert (unit(dual) * encoding).sum(1).max() < 0.8  # the case is one where a prototype is not a filter
    x = a[strong(a, 0.1)]
    centres, labels = spherical_kmeans(x, len(encoding), generator=torch.Generator().manual_seed(0))
    decoding = fit_decoders(x, centres, labels)
    found_encoding = signal_vectors(covariance(a), decoding)
    dec_cos, dec_which = best_match(decoding, dual)
    enc_cos, enc_which = best_match(found_encoding, encoding)
    assert dec_cos.min() > 0.98, dec_cos
    assert enc_cos.min() > 0.98, enc_cos
    assert len(set(dec_which.tolist())) == len(encoding)  # one found direction per true one
    assert dec_which.tolist() == enc_which.tolist()  # and each found pair is a true pair
    # the encoding direction is scaled so that it writes back exactly what the decoding direction reads
    assert torch.allclose((decoding * found_encoding).sum(1), torch.ones(len(encoding)), atol=1e-4)
    # the cluster centres alone are prototypes, not read-outs: far from the dual basis
    assert best_match(centres, dual)[0].min() < 0.9


def test_ura_keeps_the_directions_the_classifier_reads(rt):
    """A linear classifier that reads concepts 0..2 only: URA keeps those three and drops 3..5 (which the
    classifier's weights are blind to), though all six are clear clusters."""
    a, encoding, dual = planted(k=6, dim=24, n=4000, noise=0.0, seed=1)
    used = [0, 1, 2]
    f = LinearProbe(dual[used] * 4, torch.zeros(3))
    data = TensorDataset(a, torch.zeros(len(a), dtype=torch.long))
    config = DirectionConfig(directions=6, samples=4000, kmeans_restarts=2, ura_images=1000)
    pairs = fit_direction_pairs(f, data, config, rt)
    cos = best_match(pairs.encoding, encoding)[0]
    kept = sorted(int(j) for j, c in enumerate(cos) if c > 0.95)
    assert kept == used, (cos, pairs.ura, pairs.ura_random)
    assert pairs.facts["passing_ura"] == 3  # the ignored three score below random directions: dropped


def test_counterfactual_and_faithfulness_numbers(rt):
    """Each image holds one concept k (factor 3) and f predicts class k from it (class 3 is a constant 1):
    removing direction k flips exactly the images of class k to class 3, with a known probability drop, and
    the faithfulness protocol finds that drop for every image while random directions barely move it."""
    _, encoding, dual = planted(k=3, dim=16, seed=2)
    n = 300
    concept = torch.arange(n) % 3
    a = 3 * encoding[concept]
    weight = torch.cat([dual, torch.zeros(1, 16)])
    f = LinearProbe(weight, torch.tensor([0.0, 0.0, 0.0, 1.0]))
    decoding = unit(dual)
    scaled = encoding / (decoding * encoding).sum(1, keepdim=True)  # <d, e> = 1
    pairs = DirectionPairs("pooled", decoding, scaled, torch.ones(3), torch.ones(3), 0.1, [0, 1, 2])
    data = TensorDataset(a, concept)
    config = DirectionConfig(directions=3, samples=300, test_images=n, top_images=4)
    result = evaluate_direction_pairs(f, pairs, data, config, rt, batch_size=64)
    before = torch.softmax(torch.tensor([3.0, 0, 0, 1]), 0)[0]
    after = torch.softmax(torch.tensor([0.0, 0, 0, 1]), 0)[0]
    drop = float(before - after)
    assert result.accuracy == 1.0
    assert torch.allclose(result.flip_rate, torch.full((3,), 1 / 3), atol=1e-6)
    assert torch.allclose(result.probability_drop, torch.full((3,), drop / 3), atol=1e-4)
    # the logits' change per unit of factor is the linear read W e_k: class k up by one unit, nothing else
    # (per unit of the factor read along the unit decoding direction: 1 / <d̂_k, e_k> of the true factor)
    expected = torch.cat([torch.diag(1 / (decoding * encoding).sum(1)), torch.zeros(3, 1)], 1)
    assert torch.allclose(result.logit_effect, expected, atol=1e-4)
    for threshold, values in result.faithfulness.items():
        assert values["median"] == pytest.approx(drop, abs=1e-4), threshold
        assert values["mean_directions_removed"] == pytest.approx(1.0)
        assert values["random_median"] < 0.5 * drop
    # every top image of direction k holds concept k
    assert all((concept[result.top_indices[k]] == k).all() for k in range(3))


def test_forward_from_continues_the_forward_pass(tmp_path):
    """forward_from(tap, forward_taps(x)[tap]) is f(x) at every tap (what the counterfactuals rely on)."""
    from viscoin_cli.nets.classifier import load_classifier

    f, _ = load_classifier(save_tiny_classifier(tmp_path / "f.safetensors"))
    x = torch.rand(3, 3, 16, 16) * 2 - 1
    taps = f.forward_taps(x)
    for layer in ("layer2", "layer3", "layer4_penultimate", "pooled"):
        assert torch.allclose(f.forward_from(layer, taps[layer]), taps["logits"], atol=1e-5), layer
    with pytest.raises(ValueError):
        f.forward_from("layer9", taps["pooled"])


@pytest.fixture(scope="module")
def tiny_f(tmp_path_factory):
    return save_tiny_classifier(tmp_path_factory.mktemp("f") / "f.safetensors")


FAST = ("--samples", 600, "--test-images", 40, "--top-images", 3, "--device", "cpu", "--batch-size", 128)


@pytest.mark.parametrize("layer", ["pooled", "layer3"])
def test_cli_end_to_end(tiny_f, tmp_path, layer):
    out = tmp_path / "out"
    result = run_cli("directions", "classifier", "--classifier", tiny_f, "--layer", layer, "--directions", 3, *FAST,
                     "--out", out, "--json")  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["layer"] == layer and document["directions"] == len(document["per_direction"]) <= 3
    assert document["test"]["images"] == 40
    assert set(document["faithfulness"]) == {"0.1", "0.2", "0.4"}
    assert document["ground_truth"] is None and "no attribute labels" in document["ground_truth_reason"]
    row = document["per_direction"][0]
    assert len(row["logit_effect"]) == 10 and len(row["top_images"]) == 3
    assert 0 <= row["counterfactual"]["flip_rate"] <= 1
    assert json.loads((out / "directions.json").read_text()) == document
    pairs, meta = load_direction_pairs(out / "directions.safetensors")
    assert meta.kind == "directions" and meta.config["method"] == "classifier" and meta.config["layer"] == layer
    assert meta.parents["classifier"]["path"] == str(tiny_f.resolve())
    assert torch.allclose((pairs.decoding * pairs.encoding).sum(1), torch.ones(len(pairs)), atol=1e-3)
    from PIL import Image

    assert Image.open(out / "directions.png").size[1] > 3 * 16 * len(pairs)  # a row per direction
    again = run_cli("directions", "classifier", "--classifier", tiny_f, *FAST, "--out", out)
    assert "not empty" in assert_one_line_error(again)


def test_pairing_with_concepts(tiny_model, tmp_path):
    """Each direction gets the concept whose activation correlates most with its read-out (same f only)."""
    from viscoin_cli.interpret.direction_concepts import best_concepts, pair_with_concepts

    planted_corr = torch.tensor([[0.1, 0.9, -0.2], [0.5, 0.4, 0.7]])
    rows = best_concepts(planted_corr, top=2)
    assert [(r["concept"], r["top"][1]["concept"]) for r in rows] == [(1, 0), (2, 0)]
    f_path = tiny_model.parent.parent / "f.safetensors"
    out = tmp_path / "d"
    result = run_cli("directions", "classifier", "--classifier", f_path, "--directions", 2, *FAST, "--out", out)
    assert result.exit_code == 0, result.output
    document = pair_with_concepts(out / "directions.safetensors", tiny_model, max_images=50)
    json.dumps(document, allow_nan=False)
    assert document["images"] == 50 and len(document["pairs"]) == document_directions(out)
    assert all(-1 <= p["correlation"] <= 1 and 0 <= p["concept"] < 8 for p in document["pairs"])
    other = save_tiny_classifier(tmp_path / "other.safetensors", seed=5)
    result = run_cli(
        "directions", "classifier", "--classifier", other, "--directions", 2, *FAST, "--out", tmp_path / "o"
    )
    assert result.exit_code == 0, result.output
    with pytest.raises(UserError, match="same classifier"):
        pair_with_concepts(tmp_path / "o" / "directions.safetensors", tiny_model)


def document_directions(out) -> int:
    return json.loads((out / "directions.json").read_text())["directions"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--layer", "layer9"), "--layer"),
        (("--directions", 0), "--directions 0"),
        (("--directions", 100000), "--directions 100000"),
        (("--samples", 0), "--samples 0"),
        (("--samples", 10**9), "--samples 1000000000"),
        (("--directions", 64, "--samples", 100), "too few"),
        (("--directions", 40), "only 32 channels"),
        (("--capture-threshold", 0), "--capture-threshold 0"),
    ],
)
def test_one_line_errors(tiny_f, tmp_path, args, message):
    result = run_cli("directions", "classifier", "--classifier", tiny_f, *FAST[2:], *args, "--out", tmp_path / "x")
    assert message in assert_one_line_error(result)


def test_wrong_checkpoint_kind(tmp_path):
    generator = save_tiny_generator(tmp_path / "G.safetensors")
    result = run_cli("directions", "classifier", "--classifier", generator, "--out", tmp_path / "x")
    assert "expected a classifier checkpoint" in assert_one_line_error(result)
    with pytest.raises(UserError, match="expected a directions checkpoint"):
        load_direction_pairs(generator)


# --- ground truth: the concept models' AUC metric with the directions' image scores ---------------------


class Labelled(TensorDataset):
    """Stands in for a dataset with attribute labels (shapes-like: one value index per image)."""

    def __init__(self, attributes: dict[str, torch.Tensor], values: dict[str, list[str]]):
        super().__init__(torch.zeros(len(next(iter(attributes.values()))), 1))
        self.attributes, self.attribute_values = attributes, values


def test_ground_truth_planted_and_random():
    """A direction whose scores are an attribute value's indicator has AUC 1 for it (found among the others);
    random scores give about 0.5. The scores are those of the evaluated subset: labels follow `indices`."""
    from viscoin_cli.interpret.direction_pairs import direction_ground_truth
    from viscoin_cli.metrics.ground_truth import labelled

    g = torch.Generator().manual_seed(0)
    n = 4000
    shape, pattern = torch.randint(4, (n,), generator=g), torch.randint(2, (n,), generator=g)
    data = Labelled({"shape": shape, "pattern": pattern}, {"shape": list("abcd"), "pattern": ["solid", "striped"]})
    indices = torch.arange(1, n, 2)  # every other image evaluated
    scores = torch.rand(len(indices), 3, generator=g)
    scores[:, 2] = (shape[indices] == 2).float()  # direction 2 reads shape "c" exactly
    gt = direction_ground_truth(scores, labelled(data, indices), threshold=0.9)
    c = gt["per_attribute"]["shape"]["values"]["c"]
    assert c == {"concept": 2, "auc": 1.0, "captured": True, "positives": int((shape[indices] == 2).sum())}
    assert gt["captured"] == 1 and gt["targets"] == 6 and gt["concepts"] == 3 and gt["samples"] == len(indices)
    assert gt["render"] is None and gt["probe"] is None
    assert gt["by_direction"][2] == {"direction": 2, "attribute": "shape", "value": "c", "auc": 1.0}
    assert [row["direction"] for row in gt["by_direction"]] == [0, 1, 2]
    noise = torch.rand(len(indices), 1, generator=g)
    random = direction_ground_truth(noise, labelled(data, indices), threshold=0.9)
    aucs = [v["auc"] for a in random["per_attribute"].values() for v in a["values"].values()]
    assert all(abs(auc - 0.5) < 0.05 for auc in aucs), aucs
    assert random["captured"] == 0 and abs(random["mean_auc"] - 0.5) < 0.03
    assert labelled(TensorDataset(torch.zeros(n, 1))) is None
    assert direction_ground_truth(noise, None, threshold=0.9) is None


def test_ground_truth_cli_on_shapes(tmp_path):
    """On shapes (attribute labels) the JSON holds the concept models' ground-truth section for every value;
    the table prints it. (Digits, without labels: null with a reason, checked in test_cli_end_to_end.)"""
    from viscoin_cli.data import load_dataset
    from viscoin_cli.data.shapes import ATTRIBUTES

    facts = load_dataset("shapes", "test", resolution=16).facts()
    f = save_tiny_classifier(tmp_path / "f.safetensors", dataset=facts)
    args = ("directions", "classifier", "--classifier", f, "--dataset", "shapes", "--directions", 4, *FAST)
    result = run_cli(*args, "--test-images", 200, "--capture-threshold", 0.6, "--out", tmp_path / "a", "--json")
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    gt = document["ground_truth"]
    assert "ground_truth_reason" not in document and gt["threshold"] == 0.6 and gt["samples"] == 200
    assert gt["concepts"] == document["directions"] and gt["render"] is None and gt["probe"] is None
    assert {name: list(a["values"]) for name, a in gt["per_attribute"].items()} == {
        name: list(values) for name, values in ATTRIBUTES.items()
    }
    for attribute in gt["per_attribute"].values():
        for entry in attribute["values"].values():
            assert 0 <= entry["concept"] < document["directions"] and 0 <= entry["auc"] <= 1
            assert entry["captured"] == (entry["auc"] >= 0.6)
    assert gt["targets"] == 16 and gt["attributes"] == 6
    table = run_cli(*args, "--out", tmp_path / "b")
    assert table.exit_code == 0, table.output
    for text in ("best direction", "circle", "background", "values captured"):
        assert text in table.stdout, table.stdout
