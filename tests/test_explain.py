"""`viscoin explain`: heatmaps, edits, the counterfactual, cards, folders of images in any mode."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_one_line_error, run_cli
from PIL import Image
from torch import nn

from viscoin_cli.data.images import as_rgb
from viscoin_cli.interpret.heatmaps import concept_heatmaps, heat_overlay
from viscoin_cli.nets.concept_model import ConceptOutput
from viscoin_cli.shipped import DEFAULT_MODEL, SHIPPED_BASELINES

CPU = ("--device", "cpu")


# --- heatmaps --------------------------------------------------------------------------------------------


class QuadrantModel(nn.Module):
    """Two concepts built to fire in one quadrant each: concept 0 reads the top-left quadrant's brightness,
    concept 1 the bottom-right's, each through a 3×3 map (as VisCoIN's) max-pooled for the head."""

    def __init__(self, size: int = 24):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        half = size // 2
        masks = torch.zeros(2, size, size)
        masks[0, :half, :half] = 1
        masks[1, half:, half:] = 1
        self.register_buffer("masks", masks)

    def encode(self, images: torch.Tensor) -> ConceptOutput:
        brightness = F.relu(images.mean(1, keepdim=True) + 1)  # [N, 1, H, W], > 0 on a lit pixel
        maps = F.adaptive_avg_pool2d(brightness * self.masks * self.scale, 3)  # [N, 2, 3, 3]
        pooled = maps.amax(dim=(2, 3))
        empty = pooled.new_zeros(len(images), 0)
        return ConceptOutput(maps, pooled, pooled, empty, pooled)


def quadrant(heat: torch.Tensor) -> tuple[int, int]:
    """(row half, column half) of the heatmap's peak."""
    row, col = divmod(int(heat.flatten().argmax()), heat.shape[-1])
    return row // (heat.shape[-2] // 2), col // (heat.shape[-1] // 2)


def test_heatmaps_peak_in_the_quadrant_the_concept_reads():
    images = torch.rand(3, 3, 24, 24) * 2 - 1
    heat = concept_heatmaps(QuadrantModel(), images, torch.tensor([[0, 1]] * 3))
    for i in range(3):
        assert quadrant(heat.maps[i, 0]) == (0, 0) and quadrant(heat.gradients[i, 0]) == (0, 0)
        assert quadrant(heat.maps[i, 1]) == (1, 1) and quadrant(heat.gradients[i, 1]) == (1, 1)
        # the gradient of a quadrant's concept lives in that quadrant only
        assert heat.gradients[i, 0, :12, :12].sum() / heat.gradients[i, 0].sum() > 0.99


def test_heatmaps_are_normalised_and_leave_the_input_alone():
    images = torch.rand(2, 3, 24, 24) * 2 - 1
    heat = concept_heatmaps(QuadrantModel(), images, torch.tensor([[0], [1]]))
    assert not images.requires_grad
    assert heat.maps.amax(dim=(-2, -1)).allclose(torch.ones(2, 1))
    assert heat.gradients.amax(dim=(-2, -1)).allclose(torch.ones(2, 1))
    overlay = heat_overlay(images, heat.maps[:, 0])
    assert overlay.shape == (2, 3, 24, 24) and overlay.min() >= -1 and overlay.max() <= 1


# --- image modes -----------------------------------------------------------------------------------------


def test_sixteen_bit_gray_is_scaled_not_clipped():
    values = np.array([[0, 257 * 100, 65535]], dtype=np.uint16)
    picture = Image.fromarray(values)
    assert picture.mode.startswith("I;16")
    assert np.asarray(as_rgb(picture))[0, :, 0].tolist() == [0, 100, 255]


def test_alpha_is_composited_over_black():
    picture = Image.new("RGBA", (2, 1), (200, 100, 50, 255))
    picture.putpixel((1, 0), (255, 255, 255, 0))  # transparent white: shows as black
    assert np.asarray(as_rgb(picture)).tolist() == [[[200, 100, 50], [0, 0, 0]]]
    half = Image.new("LA", (1, 1), (200, 128))
    assert np.asarray(as_rgb(half))[0, 0].tolist() == [100, 100, 100]


def test_cmyk_and_float_gray_convert():
    assert np.asarray(as_rgb(Image.new("CMYK", (1, 1), (0, 255, 255, 0))))[0, 0].tolist() == [255, 0, 0]
    assert np.asarray(as_rgb(Image.fromarray(np.array([[0.5]], dtype=np.float32), "F")))[0, 0, 0] == 128


# --- the command -----------------------------------------------------------------------------------------


def json_lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def two_samples(tmp_path_factory):
    """explain --index 0 --index 5 --counterfactual on the shipped digits model: (folder, JSON lines)."""
    out = tmp_path_factory.mktemp("explain")
    result = run_cli(
        "explain", "--index", 0, "--index", 5, "--counterfactual", "--top-k", 4, "--out", out, "--json", *CPU
    )
    assert result.exit_code == 0, result.output
    return out, json_lines(result.stdout)


def test_cards_index_and_json_lines(two_samples):
    out, docs = two_samples
    assert [doc["index"] for doc in docs] == [0, 5]
    assert (out / "index.html").is_file() and json_lines((out / "explanations.jsonl").read_text()) == docs
    for doc in docs:
        assert len(doc["concepts"]) == 4 and doc["card"] == f"test-{doc['index']}.png"
        relevance = [c["relevance"] for c in doc["concepts"]]
        assert relevance == sorted(relevance, reverse=True) and relevance[0] == pytest.approx(1.0)
        with Image.open(out / doc["card"]) as card:  # 6 columns of 128 px tiles, 1 + 4 rows
            assert card.width > 6 * 128 and card.height > 5 * 128
    page = (out / "index.html").read_text()
    assert "test-0.png" in page and "test-5.png" in page and "http" not in page


def test_effects_are_the_renders_predictions(two_samples):
    """The zeroed/doubled probabilities are g's and f's on the render with that one concept edited."""
    from viscoin_cli.data import load_dataset
    from viscoin_cli.interpret.edit import render_edit
    from viscoin_cli.interpret.encode import encode_images
    from viscoin_cli.nets.concept_model import load_concept_model
    from viscoin_cli.runtime import setup_runtime

    _, docs = two_samples
    doc = docs[0]
    model, _ = load_concept_model(DEFAULT_MODEL)
    image = load_dataset("digits", "test", resolution=32)[0][0][None]
    encoded = encode_images(model, image, None, setup_runtime("cpu"))
    c, top = doc["predicted"], doc["concepts"][0]
    zeroed = render_edit(model, encoded, {top["concept"]: 0.0})
    doubled = render_edit(model, encoded, {top["concept"]: 2.0})
    assert top["zeroed"]["g_probability"] == pytest.approx(float(zeroed.g_probabilities[0, c]), abs=1e-5)
    assert top["zeroed"]["f_probability"] == pytest.approx(float(zeroed.f_probabilities[0, c]), abs=1e-5)
    assert top["doubled"]["g_probability"] == pytest.approx(float(doubled.g_probabilities[0, c]), abs=1e-5)


def test_counterfactual_flips_the_prediction(two_samples):
    """Removing the counterfactual's concepts (and rendering) does change g's class, checked independently."""
    from viscoin_cli.data import load_dataset
    from viscoin_cli.interpret.edit import render_edit
    from viscoin_cli.interpret.encode import encode_images
    from viscoin_cli.nets.concept_model import load_concept_model
    from viscoin_cli.runtime import setup_runtime

    _, docs = two_samples
    flipped = [doc for doc in docs if doc["counterfactual"]["flipped"]]
    assert flipped, "the shipped model's test #0 flips once a few concepts are gone"
    model, _ = load_concept_model(DEFAULT_MODEL)
    test_set = load_dataset("digits", "test", resolution=32)
    for doc in flipped:
        found = doc["counterfactual"]
        encoded = encode_images(model, test_set[doc["index"]][0][None], None, setup_runtime("cpu"))
        assert int(render_edit(model, encoded, {}).g_predicted[0]) == found["from"]
        edited = render_edit(model, encoded, dict.fromkeys(found["concepts"], 0.0))
        assert int(edited.g_predicted[0]) == found["to"] != found["from"]
        # greedy and minimal along its path: one concept fewer does not flip it yet
        fewer = render_edit(model, encoded, dict.fromkeys(found["concepts"][:-1], 0.0))
        assert int(fewer.g_predicted[0]) == found["from"]


def save_mode_zoo(folder):
    """One image per mode a user may hand over, a nested one, a corrupt one and a non-image file."""
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (40, 30, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / "rgb.png")
    Image.fromarray(pixels).convert("L").save(folder / "gray.png")
    Image.fromarray(pixels).convert("RGBA").save(folder / "alpha.png")
    Image.fromarray(pixels).convert("CMYK").save(folder / "cmyk.jpg")
    Image.fromarray(pixels).convert("P").save(folder / "palette.gif")
    Image.fromarray((rng.integers(0, 65536, (33, 47))).astype(np.uint16)).save(folder / "sixteen.png")
    (folder / "sub").mkdir()
    Image.fromarray(rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)).save(folder / "sub" / "large.jpg")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    return 7  # readable images


def test_folder_of_mixed_modes_skips_the_corrupt_file(tmp_path):
    (tmp_path / "photos").mkdir()
    readable = save_mode_zoo(tmp_path / "photos")
    out = tmp_path / "out"
    result = run_cli(
        "explain", "--folder", tmp_path / "photos", "--out", out, "--top-k", 2, "--batch-size", 3, "--json", *CPU
    )
    assert result.exit_code == 0, result.output
    lines = json_lines(result.stdout)
    errors = [line for line in lines if "error" in line]
    docs = [line for line in lines if "error" not in line]
    assert [e["image"].rsplit("/", 1)[-1] for e in errors] == ["broken.png"]
    assert errors[0]["error"] == "not a readable image"
    assert len(docs) == readable and all(len(doc["concepts"]) == 2 for doc in docs)
    assert "warning: skipped" in result.stderr and "broken.png" in result.stderr
    cards = sorted(p.name for p in out.glob("*.png"))
    assert "sub__large.jpg.png" in cards and "cmyk.jpg.png" in cards and len(cards) == readable
    page = (out / "index.html").read_text()
    assert "Skipped (1)" in page and "broken.png" in page


def test_image_arguments_and_a_baseline(tmp_path):
    """IMAGE arguments explain files; FLAEM's concepts are numbers (1×1 maps) and still get cards."""
    Image.new("RGB", (50, 64), (255, 255, 255)).save(tmp_path / "white.png")
    flaem = next(m for m in SHIPPED_BASELINES if "flaem" in m.name)
    result = run_cli("explain", tmp_path / "white.png", "--model", flaem, "--out", tmp_path / "o", "--top-k", 3, *CPU)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "o" / "white.png.png").is_file()
    assert "1 explained" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "nothing to explain"),
        (["--index", "0", "--top-k", "0"], "--top-k 0: expected a whole number in 1..32"),
        (["--index", "0", "--top-k", "33"], "--top-k 33: expected a whole number in 1..32"),
        (["--index", "0", "--scale", "0"], "--scale 0: expected a whole number in 1..16"),
        (["--index", "9999"], "--index 9999: out of range"),
        (["--folder", "{tmp}", "--index", "0"], "cannot be combined"),
        (["--folder", "{tmp}/missing"], "no such folder"),
        (["--folder", "{tmp}"], "no image files in it"),
        (["{tmp}/missing.png"], "missing.png (no such file)"),
        (["--index", "0", "--out", "{tmp}/file.txt"], "exists and is not a folder"),
    ],
)
def test_user_errors(tmp_path, args, message):
    (tmp_path / "file.txt").write_text("x")
    args = [a.format(tmp=tmp_path) for a in args]
    line = assert_one_line_error(run_cli("explain", *args, *CPU))
    assert message in line


def test_a_folder_of_only_broken_images_is_an_error(tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    result = run_cli("explain", "--folder", tmp_path, "--out", tmp_path / "out", *CPU)
    assert result.exit_code == 2 and "no image could be explained" in result.stderr
