"""The shipped shapes checkpoints: f, G, VisCoIN and the two baselines load, belong together, are the defaults
of `--dataset shapes`, and f and VisCoIN are as accurate as checkpoints/README.md says."""

from __future__ import annotations

import json

import pytest
import torch

from viscoin_cli import pipeline as pl
from viscoin_cli.data import load_dataset
from viscoin_cli.data.shapes import CLASS_NAMES
from viscoin_cli.io.checkpoint import sha256_file
from viscoin_cli.nets.classifier import load_classifier
from viscoin_cli.nets.concept_model import load_concept_model
from viscoin_cli.nets.stylegan2 import load_generator
from viscoin_cli.shipped import CHECKOUT_ROOT, shipped_dir, shipped_file
from viscoin_cli.training.concepts import ConceptTrainConfig
from viscoin_cli.training.viscoin import VisCoINConfig

SHAPES_DIR = shipped_dir("shapes")
CLASSIFIER = SHAPES_DIR / "classifier.safetensors"
GENERATOR = SHAPES_DIR / "generator.safetensors"


def test_the_classifier_is_a_shapes_classifier():
    f, meta = load_classifier(CLASSIFIER)
    assert meta.dataset["name"] == "shapes" and meta.dataset["class_names"] == list(CLASS_NAMES)
    assert f.num_classes == 8 and meta.dataset["resolution"] == 32


def test_the_generator_is_a_shapes_generator():
    G, meta = load_generator(GENERATOR)
    assert meta.kind == "generator" and G.img_resolution == 32 and G.img_channels == 3


@pytest.mark.parametrize("method", ["viscoin", "flint", "flaem"])
def test_the_shipped_concept_models_explain_the_shipped_classifier(method):
    path = shipped_file("shapes", method)
    model, meta = load_concept_model(path)  # verifies f's sha256
    assert meta.kind == method and meta.parents["classifier"]["sha256"] == sha256_file(CLASSIFIER)
    assert meta.dataset["name"] == "shapes" and model.num_concepts == 64
    if method == "viscoin":  # rendered by the shipped generator
        assert meta.parents["generator"]["sha256"] == sha256_file(GENERATOR)


@torch.no_grad()
def test_viscoin_renders_with_the_shipped_generator_from_a_fresh_clone():
    """Its generator was trained as a GAN snapshot of another name: found as generator.safetensors beside it."""
    model, _ = load_concept_model(shipped_file("shapes", "viscoin"))
    images = torch.stack([load_dataset("shapes", "test")[i][0] for i in range(2)])
    encoded = model.encode(images)
    rendered = model.render(encoded.concept_maps, encoded.support)
    assert rendered.shape == (2, 3, 32, 32) and rendered.isfinite().all()


@torch.no_grad()
def test_the_classifier_reaches_its_recorded_test_accuracy():
    f, _ = load_classifier(CLASSIFIER)
    test = load_dataset("shapes", "test")
    images = torch.stack([test[i][0] for i in range(len(test))])
    predicted = torch.cat([f(batch).argmax(1) for batch in images.split(250)])
    assert (predicted == torch.tensor(test.labels)).float().mean() >= 0.99  # recorded: 100%


@torch.no_grad()
def test_viscoin_reaches_its_recorded_test_accuracy():
    recorded = json.loads((SHAPES_DIR / "metrics.json").read_text())["metrics"]["accuracy"]
    model, _ = load_concept_model(shipped_file("shapes", "viscoin"))
    test = load_dataset("shapes", "test")
    images = torch.stack([test[i][0] for i in range(len(test))])
    predicted = torch.cat([model.encode(batch).logits.argmax(1) for batch in images.split(250)])
    accuracy = (predicted == torch.tensor(test.labels)).float().mean().item()
    assert accuracy == pytest.approx(recorded["g"], abs=1e-6)


def test_shapes_training_defaults_to_the_shipped_classifier_and_generator():
    values = ConceptTrainConfig.resolve({"dataset": "shapes"}, {})
    assert values["classifier"] == str(CLASSIFIER)
    assert VisCoINConfig.resolve({"dataset": "shapes"}, {})["generator"] == str(GENERATOR)


def test_the_pipeline_reuses_the_shipped_classifier_and_generator(tmp_path):
    stages = {stage.name: stage for stage in pl.stages(tmp_path, pl.Plan(dataset="shapes"))}
    assert stages["classifier"].source == "shipped" and stages["classifier"].output == CLASSIFIER
    assert stages["gan"].source == "shipped" and stages["gan"].output == GENERATOR


def test_everything_shipped_stays_small():
    folders = [CHECKOUT_ROOT / "digits", CHECKOUT_ROOT / "shapes"]  # not checkpoints/runs, a pipeline's default
    total = sum(path.stat().st_size for folder in folders for path in folder.rglob("*") if path.is_file())
    assert total < 40 * 10**6  # digits and shapes together, the repository's bar
