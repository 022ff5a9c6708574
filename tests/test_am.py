"""Activation maximisation (interpret/am.py) on tiny models, `visualize --method am`, and `evaluate
visualization-fid`: AM raises the concept, never touches the model, batches exactly, and the commands run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_cli, save_tiny_classifier
from PIL import Image

from viscoin_cli.data import load_dataset
from viscoin_cli.interpret.am import AMSettings, maximize_concepts, penalties, stage_ends
from viscoin_cli.nets.concept_model import load_concept_model

CPU = ("--device", "cpu")
R, PAD = 16, 2  # the tiny models' resolution; save_grid's padding


def _with_head(path: Path, kind: str, name: str, change) -> Path:
    """A copy of a checkpoint with one tensor changed (its parents' records kept), next to it."""
    from viscoin_cli.io.checkpoint import load_checkpoint, save_checkpoint

    tensors, meta = load_checkpoint(path, kind=kind)
    tensors = {**tensors, name: change(tensors[name])}
    return save_checkpoint(
        path.parent / f"{name}-changed.safetensors", tensors, kind=kind, config=meta.config, dataset=meta.dataset,
        step=meta.step, parents=meta.parents, extra=meta.extra,
    )  # fmt: skip


@pytest.fixture(scope="module")
def tiny_flint(tmp_path_factory) -> Path:
    """A FLINT trained for 4 iterations against a random tiny f (16 px, K = 8), its head made non-negative:
    4 iterations leave every concept counting against the one class predicted, so no pair would be relevant.
    K = 8, not 4: after 4 iterations some concept must be active on each of the AM test's start images."""
    folder = tmp_path_factory.mktemp("am-flint")
    f = save_tiny_classifier(folder / "f.safetensors")
    result = run_cli(
        "train", "--method", "flint", "--classifier", f, "--dataset", "digits", "--resolution", R,
        "--concepts", "8", "--iterations", "4", "--real-batch", "4", "--out", folder / "run", *CPU, "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return _with_head(Path(json.loads(result.stdout)["model"]), "flint", "head.linear.weight", torch.abs)


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    data = load_dataset("digits", "test", resolution=R)
    return torch.stack([data[i][0] for i in range(4)])


def _most_active_concept(model, images: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model.encode(0.5 * images).pooled.min(0).values.argmax())  # active on every start image


def _objective(model, images: torch.Tensor, k: int, settings: AMSettings) -> torch.Tensor:
    """FLINT's objective per image, without the jitter: C·φ̄_k − penalties."""
    with torch.no_grad():
        return settings.activation_weight * model.encode(images).pooled[:, k] - penalties(images, settings)


@pytest.mark.parametrize("which", ["viscoin", "flint"])
def test_am_raises_the_concept_and_leaves_the_model_alone(which, tiny_model, tiny_flint, images):
    """The random tiny models' activations are small (0.01-0.5), so FLINT's total variation weight (80) can
    outweigh them in a few steps: the ascent is checked without the penalties and the jitter (a pure ascent),
    then FLINT's whole objective with them."""
    model, _ = load_concept_model(tiny_model if which == "viscoin" else tiny_flint)
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    flags = [param.requires_grad for param in model.parameters()]
    model.train()  # AM must use eval mode (BatchNorm, dropout) and give the mode back
    k = _most_active_concept(model, images)
    result = maximize_concepts(
        model, images, [k] * len(images), AMSettings(steps=8, tv_weight=0.0, bound_weight=0.0, jitter=0), batch_size=4
    )
    assert (result.activation > result.start_activation).all(), (result.start_activation, result.activation)
    assert torch.equal(result.start, 0.5 * images)  # FLINT's start: the sample scaled by 0.5
    assert result.images.shape == images.shape and result.images.abs().max() <= 1
    flint = AMSettings(steps=8)
    result = maximize_concepts(model, images, [k] * len(images), flint, batch_size=4)
    assert (_objective(model, result.images, k, flint) > _objective(model, result.start, k, flint)).all()
    assert model.training  # mode restored
    assert all(param.grad is None for param in model.parameters())  # no gradient ever reached a parameter
    assert [param.requires_grad for param in model.parameters()] == flags
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())


def test_a_batch_of_several_concepts_is_each_image_on_its_own(tiny_model, images):
    """Penalties are per image and the jitter is seeded: a batch gives what one image at a time gives."""
    model, _ = load_concept_model(tiny_model)
    model.double()  # in fp32, Adam's normalisation magnifies round-off where a gradient is nearly 0
    images = images.double()
    concepts = [0, 3, 5, 3]
    together = maximize_concepts(model, images, concepts, AMSettings(steps=5), seed=7)
    alone = [
        maximize_concepts(model, images[i : i + 1], concepts[i : i + 1], AMSettings(steps=5), seed=7) for i in (0, 1)
    ]
    for i, single in enumerate(alone):
        assert torch.allclose(together.images[i], single.images[0], atol=1e-5)
    assert torch.equal(maximize_concepts(model, images, concepts, AMSettings(steps=5), seed=7).images, together.images)


def test_flint_penalties_and_stages_by_hand():
    x = torch.tensor([[[[0.0, 1.5], [-2.0, 0.5]]]])  # one 1-channel 2x2 image
    tv = (2.0 + 1.0) / 2 + (1.5 + 2.5) / 2  # mean |vertical| + mean |horizontal| differences
    bound = (1.5 + 2.0) / 4  # |x| where x is outside [-1, 1], mean over the image
    l1 = 4.0 / 4
    settings = AMSettings(tv_weight=80.0, bound_weight=20.0, l1_weight=3.0)
    assert penalties(x, settings).item() == pytest.approx(80 * tv + 20 * bound + 3 * l1)
    assert stage_ends(1000, 12)[-1] == 1000 and len(set(stage_ends(1000, 12))) == 12
    assert stage_ends(5, 12)[-1] == 5  # fewer steps than stages: some stages are empty


@pytest.mark.parametrize("which", ["viscoin", "flint"])
def test_visualize_method_am_writes_the_grid(which, tiny_model, tiny_flint, tmp_path):
    out = tmp_path / "am.png"
    model = tiny_model if which == "viscoin" else tiny_flint
    args = ("--concept", 1, "--method", "am", "--am-steps", 3, "--samples", 2, "--diff", "--out", out, "--json")
    result = run_cli("visualize", "--model", model, *args, *CPU)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["method"] == "am" and document["am_steps"] == 3 and document["lambdas"] is None
    assert document["columns"] == ["input", "am start", "am", "added am", "removed am", "energy am"]
    assert all({"am_start_activation", "am_activation"} <= set(row) for row in document["samples"])
    with Image.open(out) as picture:
        assert picture.size == (document["grid"]["width"], document["grid"]["height"])
        assert picture.size[0] > 6 * (8 * R + PAD) + PAD and picture.size[1] > 2 * (8 * R + PAD) + PAD  # 8× + labels


@pytest.mark.parametrize(("which", "method"), [("viscoin", "render"), ("flint", "am"), ("viscoin", "am")])
def test_visualization_fid_is_finite_with_its_keys(which, method, tiny_model, tiny_flint):
    model = tiny_model if which == "viscoin" else tiny_flint
    extra = ["--vis-method", method, "--am-steps", "2"] if which == "viscoin" and method == "am" else []
    args = ["--vis-pairs", "2", "--am-steps", "2"] if which == "flint" else ["--vis-pairs", "2", *extra]
    result = run_cli(
        "evaluate", "visualization-fid", "--model", model, *args, *CPU, "--json",
        "--fail-over", "visualization_fid.fid=1e12",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    vis = document["metrics"]["visualization_fid"]
    assert {"fid", "pairs", "samples", "method", "am_steps", "fid_features"} <= set(vis)
    assert math.isfinite(vis["fid"]) and vis["method"] == method and vis["threshold"] == 0.4
    assert vis["pairs"] == min(2, vis["relevant_pairs"]) >= 1  # the tiny FLINT predicts one class: 1 pair
    assert vis["samples"] == vis["visualizations"] == 3 * vis["pairs"]
    assert vis["am_steps"] == (2 if method == "am" else None) and vis["lambda"] == (None if method == "am" else 4.0)
    assert vis["fid_features"].startswith("classifier f ")
    assert document["checks"][0]["passed"] and document["settings"]["vis_pairs"] == 2


def test_visualization_fid_is_not_in_all_and_has_a_table_row(tiny_model):
    result = run_cli("evaluate", "accuracy,visualization_fid", "--model", tiny_model, "--vis-pairs", "1", *CPU)
    assert result.exit_code == 0, result.output
    assert "visualization_fid.fid" in result.stdout and "accuracy.g" in result.stdout
    from viscoin_cli.cli._evaluation import parse_metric_names

    assert "visualization_fid" not in parse_metric_names("all")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["visualize", "--concept", "0", "--method", "am", "--am-steps", "0"], "--am-steps 0: expected a whole number"),
        (["visualize", "--concept", "0", "--method", "am", "--am-steps", "100001"], "in 1..100000"),
        (
            ["visualize", "--concept", "0", "--method", "am", "--lambdas", "0,1"],
            "--lambdas does not apply to --method am",
        ),
        (["visualize", "--concept", "0", "--method", "am", "--lambda", "2"], "--lambda does not apply to --method am"),
        (["visualize", "--concept", "0", "--am-steps", "5"], "--am-steps applies to --method am"),
        (["visualize", "--concept", "0", "--method", "magic"], "'magic' is not one of 'render', 'am'"),
        (["evaluate", "visualization-fid", "--am-steps", "0"], "--am-steps 0: expected a whole number"),
        (["evaluate", "visualization-fid", "--vis-pairs", "0"], "--vis-pairs 0: must be at least 1"),
        (["evaluate", "visualization-fid", "--am-steps", "5"], "--am-steps applies to --vis-method am"),
        (["evaluate", "visualization-fad"], "unknown metric, expected one of"),
        (["evaluate", "accuracy", "--fail-over", "visualization_fid.fid=3"], "visualization_fid is not computed"),
    ],
)
def test_bad_values_are_one_line_errors(tiny_model, args, message):
    result = run_cli(*args, "--model", tiny_model, *CPU)
    assert message in assert_one_line_error(result)


def test_a_broken_model_gives_null_and_fails_the_gate(tiny_model):
    broken = _with_head(tiny_model, "viscoin", "theta.linear.weight", lambda w: torch.full_like(w, float("nan")))
    result = run_cli(
        "evaluate", "visualization-fid", "--model", broken, *CPU, "--json", "--fail-over", "visualization_fid.fid=1e12"
    )
    assert result.exit_code == 1, result.output
    document = json.loads(result.stdout)
    assert document["metrics"]["visualization_fid"]["fid"] is None
    assert "visualization_fid.fid" in document["non_finite"]["keys"]
