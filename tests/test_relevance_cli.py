"""`viscoin relevance` end to end on the tiny digits model, checked against the library's own computation."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image

from viscoin_cli.data import load_dataset
from viscoin_cli.data.images import load_image_files
from viscoin_cli.errors import UserError
from viscoin_cli.interpret.encode import encode_dataset
from viscoin_cli.interpret.relevance import global_relevance, local_relevance, top_concepts
from viscoin_cli.io.images import to_uint8
from viscoin_cli.nets.viscoin import load_viscoin
from viscoin_cli.runtime import setup_runtime

CPU = ("--device", "cpu")


@pytest.fixture(scope="module")
def library(tiny_model):
    """The model, its encoded test split and both relevances, computed directly with the library."""
    rt = setup_runtime("cpu")
    model, meta = load_viscoin(tiny_model, "cpu")
    test_set = load_dataset("digits", "test", resolution=meta.dataset["resolution"])
    encoded = encode_dataset(model, test_set, rt)
    weight = model.theta.linear.weight.detach()
    local = local_relevance(encoded.pooled, weight, encoded.predicted)
    return SimpleNamespace(
        rt=rt,
        model=model,
        weight=weight,
        test_set=test_set,
        encoded=encoded,
        local=local,
        relevance=global_relevance(local, encoded.predicted, 10),
        busiest=int(torch.bincount(encoded.predicted, minlength=10).argmax()),  # a class with predictions
    )


@pytest.fixture(scope="module")
def json_run(tiny_model, library, tmp_path_factory):
    """One --json --csv call with local (--index) and global (--class) subjects, shared by several tests."""
    csv_path = tmp_path_factory.mktemp("relevance") / "out" / "relevance.csv"
    unpredicted = next(c for c in range(10) if not (library.encoded.predicted == c).any())
    classes = [library.busiest, unpredicted]
    args = ["--index", 0, "--index", 7, *(a for c in classes for a in ("--class", c)), "--top-k", 3]
    result = run_cli("relevance", "--model", tiny_model, *args, "--json", "--csv", csv_path, *CPU)
    assert result.exit_code == 0, result.output
    return SimpleNamespace(document=json.loads(result.stdout), csv_path=csv_path, classes=classes)


def test_json_local_relevance_matches_the_library(json_run, library):
    document = json_run.document
    assert document["num_concepts"] == 8 and document["top_k"] == 3 and document["dataset"] == "digits"
    assert [doc["index"] for doc in document["local"]] == [0, 7]
    for doc in document["local"]:
        i = doc["index"]
        predicted = int(library.encoded.predicted[i])
        assert doc["label"] == library.test_set.labels[i] and doc["label_name"] == str(doc["label"])
        assert doc["predicted"] == predicted and doc["predicted_name"] == str(predicted)
        assert doc["probability"] == pytest.approx(library.encoded.logits[i].softmax(0)[predicted].item(), abs=1e-5)
        values, concepts = top_concepts(library.local[i], 3)
        assert [c["rank"] for c in doc["concepts"]] == [1, 2, 3]
        assert [c["concept"] for c in doc["concepts"]] == concepts.tolist()
        assert [c["relevance"] for c in doc["concepts"]] == pytest.approx(values.tolist(), abs=1e-5)
        activations = library.encoded.pooled[i, concepts].tolist()
        assert [c["activation"] for c in doc["concepts"]] == pytest.approx(activations, abs=1e-5)
        assert doc["concepts"][0]["relevance"] == pytest.approx(1.0)  # normalised by the largest contribution


def test_json_global_relevance_matches_the_library(json_run, library):
    busiest, unpredicted = json_run.classes
    docs = json_run.document["global"]
    assert [doc["class"] for doc in docs] == [busiest, unpredicted]
    assert json_run.document["split"] == {"name": "test", "size": len(library.test_set)}
    predicted_as = library.encoded.predicted == busiest
    assert docs[0]["samples"] == int(predicted_as.sum())
    values, concepts = top_concepts(library.relevance[busiest], 3)
    assert [c["concept"] for c in docs[0]["concepts"]] == concepts.tolist()
    assert [c["relevance"] for c in docs[0]["concepts"]] == pytest.approx(values.tolist(), abs=1e-5)
    mean_activation = library.encoded.pooled[predicted_as][:, concepts].mean(0)
    assert [c["activation"] for c in docs[0]["concepts"]] == pytest.approx(mean_activation.tolist(), abs=1e-5)
    assert docs[1]["samples"] == 0 and docs[1]["concepts"] == []  # nothing to rank: no image predicted so


def test_csv_has_one_row_per_listed_concept(json_run):
    with open(json_run.csv_path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["kind", "subject", "class", "class_name", "rank", "concept", "relevance", "activation"]
    expected = []
    for doc in json_run.document["local"]:
        expected += [("index", str(doc["index"]), str(doc["predicted"]), c) for c in doc["concepts"]]
    for doc in json_run.document["global"]:
        expected += [("class", str(doc["class"]), str(doc["class"]), c) for c in doc["concepts"]]
    assert len(rows) == len(expected) == 2 * 3 + 3
    for row, (kind, subject, cls, concept) in zip(rows, expected, strict=True):
        assert (row["kind"], row["subject"], row["class"]) == (kind, subject, cls)
        assert (int(row["rank"]), int(row["concept"])) == (concept["rank"], concept["concept"])
        assert float(row["relevance"]) == pytest.approx(concept["relevance"])
        assert float(row["activation"]) == pytest.approx(concept["activation"])


def test_default_table_lists_every_class(tiny_model, library):
    result = run_cli("relevance", "--model", tiny_model, "--top-k", 2, *CPU)
    assert result.exit_code == 0, result.output
    assert "global relevance" in result.stdout
    rows = [line for line in result.stdout.splitlines() if line.startswith("│")]
    assert len(rows) == 10  # one per class
    busiest = next(row for row in rows if row.split("│")[1].strip() == str(library.busiest))
    values, concepts = top_concepts(library.relevance[library.busiest], 2)
    for value, concept in zip(values.tolist(), concepts.tolist(), strict=True):
        assert f"{concept} ({value:+.2f})" in busiest


def test_image_file_is_explained_like_the_library_does(tiny_model, library, tmp_path):
    """A 32 px grayscale PNG (another size and channel count than the model's) is resized and explained."""
    image = library.test_set[3][0]
    big = torch.nn.functional.interpolate(image[None], size=(32, 32), mode="nearest")
    path = tmp_path / "digit.png"
    Image.fromarray(to_uint8(big)[0, :, :, 0]).save(path)  # one channel
    result = run_cli("relevance", "--model", tiny_model, "--image", path, "--top-k", 8, "--json", *CPU)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    (doc,) = document["local"]
    assert doc["image"] == str(path) and "label" not in doc
    assert document["global"] == []  # --image alone: no global part
    pixels = load_image_files([path], 16)
    out = library.model.encode(pixels)
    predicted = out.logits.argmax(1)
    local = local_relevance(out.pooled, library.weight, predicted)[0]
    assert doc["predicted"] == int(predicted)
    by_concept = {c["concept"]: c["relevance"] for c in doc["concepts"]}
    assert sorted(by_concept) == list(range(8))  # --top-k 8 = every concept
    assert [by_concept[k] for k in range(8)] == pytest.approx(local.tolist(), abs=1e-5)


def test_local_table(tiny_model, library):
    result = run_cli("relevance", "--model", tiny_model, "--index", 4, "--top-k", 2, *CPU)
    assert result.exit_code == 0, result.output
    predicted = int(library.encoded.predicted[4])
    assert f"test image 4 (label {library.test_set.labels[4]}): predicted {predicted}" in result.stdout
    _, concepts = top_concepts(library.local[4], 2)
    rows = [line.split("│")[1:3] for line in result.stdout.splitlines() if line.startswith("│")]
    assert [(rank.strip(), concept.strip()) for rank, concept in rows] == [
        ("1", str(concepts[0].item())),
        ("2", str(concepts[1].item())),
    ]
    assert "global relevance" not in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--top-k", "0"], "--top-k 0: must be at least 1"),
        (["--index", "360"], "--index 360: out of range"),
        (["--index", "-1"], "--index -1: out of range"),
        (["--class", "seven"], "--class 'seven': no such class"),
        (["--class", "10"], "--class 10: class index out of range"),
        (["--image", "missing.png"], "missing.png (no such file)"),
        (["--image", "{corrupt}"], "not a readable image"),
    ],
)
def test_user_errors(tiny_model, tmp_path, args, message):
    Image.new("RGBA", (16, 16)).save(tmp_path / "rgba.png")
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    args = [a.format(rgba=tmp_path / "rgba.png", corrupt=tmp_path / "corrupt.png") for a in args]
    line = assert_one_line_error(run_cli("relevance", "--model", tiny_model, *args, *CPU))
    assert message in line


def test_missing_model_is_one_line(tmp_path):
    line = assert_one_line_error(run_cli("relevance", "--model", tmp_path / "nope.safetensors", *CPU))
    assert "nope.safetensors: no such file" in line


def test_missing_shipped_model_says_what_to_do(tmp_path, monkeypatch):
    from viscoin_cli.cli import _interpret

    monkeypatch.setattr(_interpret, "DEFAULT_MODEL", tmp_path / "viscoin.safetensors")
    with pytest.raises(UserError, match="shipped digits model .* is missing: train one"):
        _interpret.read_model(tmp_path / "viscoin.safetensors")


# --- the helpers behind the command ---------------------------------------------------------------------


def test_top_concepts_breaks_ties_by_concept_index():
    values, concepts = top_concepts(torch.tensor([[0.0, 0.5, 0.0, 0.5, -1.0]]), 4)
    assert concepts.tolist() == [[1, 3, 0, 2]] and values.tolist() == [[0.5, 0.5, 0.0, 0.0]]


def test_class_is_a_name_or_an_index():
    from viscoin_cli.cli._interpret import parse_class

    names = ["10", "Cat", "dog"]
    assert parse_class("10", names) == 0  # a name wins over the index it also spells
    assert parse_class("cat", names) == 1 and parse_class("2", names) == 2
    with pytest.raises(UserError, match="out of range"):
        parse_class("3", names)


def test_image_files_are_resized_and_grayscale_is_replicated(tmp_path):
    Image.new("L", (40, 20), 255).save(tmp_path / "wide.png")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(tmp_path / "red.jpg")
    images = load_image_files([tmp_path / "wide.png", tmp_path / "red.jpg"], 16)
    assert images.shape == (2, 3, 16, 16) and images.min() >= -1 and images.max() <= 1
    assert torch.allclose(images[0], torch.ones(3, 16, 16))
    assert images[1, 0].mean() > 0.9 and images[1, 1:].mean() < -0.9


def test_unreadable_image_files_are_all_named(tmp_path):
    (tmp_path / "a.png").write_text("not an image")
    with pytest.raises(UserError, match=r"cannot read 2 images: .*a\.png \(not a readable image\), .*b\.png \(no such"):
        load_image_files([tmp_path / "a.png", tmp_path / "b.png"], 16)
