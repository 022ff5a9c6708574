"""`viscoin visualize` end to end on the tiny digits model: grid layout, pixels, sample choice, --set edits and
errors."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image

from viscoin_cli.data import load_dataset
from viscoin_cli.data.images import load_image_files
from viscoin_cli.interpret.amplify import top_activating
from viscoin_cli.interpret.edit import render_edit
from viscoin_cli.interpret.encode import encode_dataset, encode_images
from viscoin_cli.interpret.relevance import global_relevance, local_relevance
from viscoin_cli.interpret.visualize import column_names, difference_views
from viscoin_cli.io.images import to_uint8
from viscoin_cli.nets.viscoin import load_viscoin
from viscoin_cli.runtime import setup_runtime
from viscoin_cli.shipped import DEFAULT_MODEL

CPU = ("--device", "cpu")
R, PAD = 16, 2  # the tiny model's resolution; save_grid's padding
SCALE = 8  # the default upscaling at 16 px: 8 · 16 = 128 px tiles


def grid_size(rows: int, columns: int, scale: int = 1) -> tuple[int, int]:
    """(width, height) of a bare (--raw) save_grid PNG: each tile is scale·R px plus PAD before it, and PAD after
    the last."""
    return columns * (scale * R + PAD) + PAD, rows * (scale * R + PAD) + PAD


def tile(picture: np.ndarray, row: int, column: int, scale: int = 1) -> np.ndarray:
    """One tile of a grid; a labelled grid's margins (title and headers above, row labels left) are skipped."""
    rows, columns = (picture.shape[0] - PAD) // (scale * R + PAD), (picture.shape[1] - PAD) // (scale * R + PAD)
    width, height = grid_size(rows, columns, scale)
    size = scale * R
    top = picture.shape[0] - height + PAD + row * (size + PAD)
    left = picture.shape[1] - width + PAD + column * (size + PAD)
    return picture[top : top + size, left : left + size].astype(int)


def check_labelled(picture: Image.Image, rows: int, columns: int) -> np.ndarray:
    """A labelled grid is the upscaled grid plus a margin of text above and one left; its pixels."""
    width, height = grid_size(rows, columns, SCALE)
    assert picture.size[0] > width and picture.size[1] > height
    pixels = np.asarray(picture.convert("RGB"))
    top, left = picture.size[1] - height, picture.size[0] - width
    assert (pixels[:top] < 128).any() and (pixels[top:, :left] < 128).any()  # text in both margins
    return pixels


@pytest.fixture(scope="module")
def library(tiny_model):
    """The model, its encoded test split and global relevance, computed directly with the library."""
    model, meta = load_viscoin(tiny_model, "cpu")
    test_set = load_dataset("digits", "test", resolution=meta.dataset["resolution"])
    encoded = encode_dataset(model, test_set, setup_runtime("cpu"))
    weight = model.theta.linear.weight.detach()
    local = local_relevance(encoded.pooled, weight, encoded.predicted)
    relevance = global_relevance(local, encoded.predicted, 10)
    concept = int(relevance.max(0).values.argmax())  # the concept with the most relevant class
    return SimpleNamespace(model=model, test_set=test_set, encoded=encoded, relevance=relevance, concept=concept)


def run_default(tiny_model, library, out, *extra) -> dict:
    """`visualize --concept K --samples 3 --json`: the default λ and the default choice of class and samples."""
    args = ("--concept", library.concept, "--samples", 3, "--out", out, "--json", *extra)
    result = run_cli("visualize", "--model", tiny_model, *args, *CPU)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def default_run(tiny_model, library, tmp_path_factory):
    return run_default(tiny_model, library, tmp_path_factory.mktemp("visualize") / "grid.png")


@pytest.fixture(scope="module")
def raw_run(tiny_model, library, tmp_path_factory):
    return run_default(tiny_model, library, tmp_path_factory.mktemp("visualize") / "raw.png", "--raw")


def test_default_picks_the_most_relevant_class_and_its_most_active_samples(default_run, library):
    k = library.concept
    c = int(library.relevance[:, k].argmax())
    assert default_run["concept"] == k and default_run["class"] == c and default_run["class_name"] == str(c)
    assert default_run["class_relevance"] == pytest.approx(library.relevance[c, k].item(), abs=1e-5)
    expected = top_activating(library.encoded, k, 3, cls=c).tolist()
    assert default_run["indices"] == expected == [s["index"] for s in default_run["samples"]]
    activations = [s["activation"] for s in default_run["samples"]]
    assert activations == pytest.approx(library.encoded.pooled[expected, k].tolist(), abs=1e-5)
    assert activations == sorted(activations, reverse=True)
    assert default_run["lambdas"] == [1.0, 3.0]
    assert default_run["columns"] == ["input", "lambda=1", "lambda=3"]


def test_raw_grid_shows_input_reconstruction_and_amplified(raw_run, library):
    assert raw_run["grid"]["scale"] == 1 and raw_run["grid"]["labelled"] is False
    with Image.open(raw_run["path"]) as picture:
        assert picture.size == grid_size(3, 3) == (raw_run["grid"]["width"], raw_run["grid"]["height"])
        pixels = np.asarray(picture.convert("RGB"))
    indices, k = raw_run["indices"], library.concept
    inputs = torch.stack([library.test_set[i][0] for i in indices])
    maps, support = library.encoded.concept_maps[indices], library.encoded.support[indices]
    with torch.no_grad():
        recon = library.model.render(maps, support).clamp(-1, 1)
        amplified_maps = maps.clone()
        amplified_maps[:, k] *= 3
        amplified = library.model.render(amplified_maps, support).clamp(-1, 1)
    for row in range(3):
        for column, expected in enumerate((inputs, recon, amplified)):
            assert np.abs(tile(pixels, row, column) - to_uint8(expected[row : row + 1])[0]).max() <= 1


def test_default_grid_is_the_raw_grid_upscaled_and_labelled(default_run, raw_run):
    assert default_run["grid"]["scale"] == SCALE and default_run["grid"]["labelled"] is True
    assert {**default_run, "path": None, "grid": None} == {**raw_run, "path": None, "grid": None}
    with Image.open(default_run["path"]) as picture:
        assert picture.size == (default_run["grid"]["width"], default_run["grid"]["height"])
        pixels = check_labelled(picture, 3, 3)
    with Image.open(raw_run["path"]) as picture:
        raw = np.asarray(picture.convert("RGB"))
    for row in range(3):
        for column in range(3):
            expected = tile(raw, row, column).repeat(SCALE, axis=0).repeat(SCALE, axis=1)  # nearest neighbour
            assert (tile(pixels, row, column, SCALE) == expected).all()


def test_lambda_sweep_adds_the_reconstruction(tiny_model, library, tmp_path):
    out = tmp_path / "sweep.png"
    args = ("--concept", library.concept, "--lambdas", "4, 0,2", "--samples", 2, "--out", out, "--json", "--raw")
    result = run_cli("visualize", "--model", tiny_model, *args, *CPU)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["lambdas"] == [0.0, 1.0, 2.0, 4.0]
    assert document["columns"] == ["input", "lambda=0", "lambda=1", "lambda=2", "lambda=4"]
    with Image.open(out) as picture:
        assert picture.size == grid_size(2, 5)


def test_diff_adds_three_views_per_lambda(tiny_model, library, tmp_path):
    out = tmp_path / "diff.png"
    args = ("--concept", library.concept, "--lambda", "2", "--diff", "--samples", 2, "--out", out, "--json")
    result = run_cli("visualize", "--model", tiny_model, *args, *CPU)
    assert result.exit_code == 0, result.output
    columns = json.loads(result.stdout)["columns"]
    assert columns == ["input", "lambda=1", "lambda=2", "added lambda=2", "removed lambda=2", "energy lambda=2"]
    with Image.open(out) as picture:
        pixels = check_labelled(picture, 2, 6)
    energy = tile(pixels, 0, 5, SCALE)
    assert (energy[..., 0] == energy[..., 1]).all() and (energy[..., 1] == energy[..., 2]).all()  # gray


def test_top_pairs_writes_one_grid_per_pair(tiny_model, library, tmp_path):
    out = tmp_path / "pairs"
    args = ("--top-pairs", 3, "--samples", 2, "--lambdas", "0,2", "--out", out, "--json", "--scale", 2)
    result = run_cli("visualize", "--model", tiny_model, *args, *CPU)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["path"] == str(out) and len(document["pairs"]) == 3
    values, flat = library.relevance.flatten().sort(descending=True, stable=True)
    expected = [divmod(int(i), 8) for i in flat[:3]]
    assert [(p["class"], p["concept"]) for p in document["pairs"]] == expected
    assert [p["class_relevance"] for p in document["pairs"]] == pytest.approx(values[:3].tolist(), abs=1e-5)
    names = sorted(p.name for p in out.iterdir())
    assert names == [f"{rank:02d}-class-{c}-concept-{k}.png" for rank, (c, k) in enumerate(expected, 1)]
    for pair in document["pairs"]:
        with Image.open(pair["path"]) as picture:
            assert picture.size[0] > grid_size(2, 4, 2)[0] and picture.size[1] > grid_size(2, 4, 2)[1]
            assert pair["grid"]["scale"] == 2


def test_image_files_replace_test_samples(tiny_model, library, tmp_path):
    paths = []
    for i in (0, 1):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(to_uint8(library.test_set[i][0][None])[0]).save(paths[-1])
    out = tmp_path / "images.png"
    args = ("--concept", 0, "--image", paths[0], "--image", paths[1], "--out", out, "--json")
    result = run_cli("visualize", "--model", tiny_model, *args, *CPU)
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert [s["image"] for s in document["samples"]] == [str(p) for p in paths]
    assert document["class"] is None and document["indices"] is None
    assert document["samples"][0]["predicted"] == int(library.encoded.predicted[0])
    with Image.open(out) as picture:
        check_labelled(picture, 2, 3)


def test_plain_output_names_the_file(tiny_model, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Image.new("L", (8, 8)).save("x.png")
    result = run_cli("visualize", "--model", tiny_model, "--concept", 2, "--image", "x.png", "--quiet", *CPU)
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().endswith("-> concept-2.png") and (tmp_path / "concept-2.png").is_file()


def test_top_pairs_notes_an_unpredicted_class_once(tiny_model, library, tmp_path):
    args = ("--top-pairs", 40, "--samples", 1, "--lambdas", "0", "--out", tmp_path / "pairs", "--json")
    result = run_cli("visualize", "--model", tiny_model, *args, *CPU)
    assert result.exit_code == 0, result.output
    classes = {p["class"] for p in json.loads(result.stdout)["pairs"]}
    unpredicted = {c for c in classes if not (library.encoded.predicted == c).any()}
    notes = [line for line in result.stderr.splitlines() if "no test image is predicted" in line]
    assert sorted(notes) == sorted(
        f"note: no test image is predicted as class {c}: showing images labelled so" for c in unpredicted
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concept", "8"], "--concept 8: out of range (the model has concepts 0..7)"),
        (["--concept", "-1"], "--concept -1: out of range"),
        (["--concept", "1", "--lambda", "nan"], "--lambda 'nan': λ must be a finite number"),
        (["--concept", "1", "--lambda", "-inf"], "--lambda '-inf': λ must be a finite number"),
        (["--concept", "1", "--lambda", "big"], "--lambda 'big': not a number"),
        (["--concept", "1", "--lambdas", "0,,2"], "--lambdas '0,,2': expected comma-separated numbers"),
        (["--concept", "1", "--lambdas", "0;2"], "--lambdas '0;2': not a number"),
        (["--concept", "1", "--lambda", "2", "--lambdas", "0,2"], "pass --lambda or --lambdas, not both"),
        (["--concept", "1", "--samples", "0"], "--samples 0: must be at least 1"),
        (["--top-pairs", "0"], "--top-pairs 0: must be at least 1"),
        ([], "--concept is required"),
        (["--concept", "1", "--class", "eleven"], "--class 'eleven': no such class"),
        (["--concept", "1", "--image", "{bad}"], "bad.png (not a readable image)"),
        (["--concept", "1", "--image", "missing.png"], "missing.png (no such file)"),
        (["--concept", "1", "--image", "{bad}", "--class", "3"], "--image and --class cannot be combined"),
        (["--concept", "1", "--lambda", "50"], "--lambda '50': λ must be within ±10"),
        (["--concept", "1", "--out", "grid.jpg"], "--out grid.jpg: expected a .png file name"),
        (["--concept", "1", "--scale", "0"], "--scale 0: expected a whole number in 1..16"),
        (["--concept", "1", "--scale", "100"], "--scale 100: expected a whole number in 1..16"),
        (["--concept", "1", "--scale", "2", "--raw"], "--scale does not apply to --raw"),
    ],
)
def test_user_errors(tiny_model, tmp_path, args, message):
    (tmp_path / "bad.png").write_text("not an image")
    args = [a.format(bad=tmp_path / "bad.png") for a in args]
    line = assert_one_line_error(run_cli("visualize", "--model", tiny_model, *args, *CPU))
    assert message in line


def test_missing_model_is_one_line(tmp_path):
    line = assert_one_line_error(run_cli("visualize", "--model", tmp_path / "m.safetensors", "--concept", 1, *CPU))
    assert "m.safetensors: no such file" in line


# --- --set: several concepts edited at once ----------------------------------------------------------------


def run_edit(tiny_model, out, *args) -> dict:
    """`visualize --set ... --json` on the tiny model: its document."""
    result = run_cli("visualize", "--model", tiny_model, *args, "--out", out, "--json", *CPU)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def edit_pair(library):
    """Two concepts to edit, the first the one with the most relevant class (it picks the samples)."""
    return library.concept, (library.concept + 1) % 8


@pytest.fixture(scope="module")
def edit_run(tiny_model, edit_pair, tmp_path_factory):
    """`--set K1=0 --set K2=2 --samples 3 --diff`, labelled."""
    first, second = edit_pair
    out = tmp_path_factory.mktemp("edit") / "edit.png"
    return run_edit(tiny_model, out, "--set", f"{first}=0", "--set", f"{second}=2", "--samples", 3, "--diff")


@pytest.fixture(scope="module")
def raw_edit_run(tiny_model, edit_pair, tmp_path_factory):
    first, second = edit_pair
    out = tmp_path_factory.mktemp("edit") / "raw-edit.png"
    return run_edit(tiny_model, out, "--set", f"{first}=0", "--set", f"{second}=2", "--samples", 3, "--raw")


def test_set_writes_a_labelled_grid_with_before_and_after(edit_run, edit_pair, library):
    first, second = edit_pair
    assert edit_run["method"] == "edit" and edit_run["edit"] == {str(first): 0.0, str(second): 2.0}
    assert edit_run["columns"] == ["input", "reconstruction", "edited", "added", "removed", "energy"]
    c = int(library.relevance[:, first].argmax())  # the first concept picks the samples, as --concept does
    assert edit_run["class"] == c and edit_run["indices"] == top_activating(library.encoded, first, 3, cls=c).tolist()
    with Image.open(edit_run["path"]) as picture:
        assert picture.size == (edit_run["grid"]["width"], edit_run["grid"]["height"])
        check_labelled(picture, 3, 6)
    for row in edit_run["samples"]:
        for predictor in ("g", "f"):
            change = row[predictor]
            assert set(change) == {"before", "after", "before_class_after", "flipped"}
            assert set(change["before"]) == set(change["after"]) == {"class", "name", "probability"}
            assert change["flipped"] == (change["before"]["class"] != change["after"]["class"])
        assert row["flipped"] == row["g"]["flipped"]
        assert set(row["activation"]) == set(row["relevance"]) == {str(first), str(second)}


def test_set_json_after_matches_render_edit(raw_edit_run, edit_pair, library):
    first, second = edit_pair
    encoded = library.encoded.subset(torch.tensor(raw_edit_run["indices"]))
    plain = render_edit(library.model, encoded, {})
    edited = render_edit(library.model, encoded, {first: 0.0, second: 2.0})
    for row, sample in enumerate(raw_edit_run["samples"]):
        for predictor, before, after in (
            ("g", plain.g_probabilities[row], edited.g_probabilities[row]),
            ("f", plain.f_probabilities[row], edited.f_probabilities[row]),
        ):
            change = sample[predictor]
            was, now = int(before.argmax()), int(after.argmax())
            assert change["before"]["class"] == was and change["after"]["class"] == now
            assert change["before"]["probability"] == pytest.approx(float(before[was]), abs=1e-4)
            assert change["after"]["probability"] == pytest.approx(float(after[now]), abs=1e-4)
            assert change["before_class_after"] == pytest.approx(float(after[was]), abs=1e-4)


def test_set_raw_grid_shows_input_reconstruction_and_edited(raw_edit_run, edit_pair, library):
    assert raw_edit_run["grid"]["labelled"] is False and raw_edit_run["columns"] == [
        "input",
        "reconstruction",
        "edited",
    ]
    with Image.open(raw_edit_run["path"]) as picture:
        assert picture.size == grid_size(3, 3)
        pixels = np.asarray(picture.convert("RGB"))
    indices = raw_edit_run["indices"]
    encoded = library.encoded.subset(torch.tensor(indices))
    inputs = torch.stack([library.test_set[i][0] for i in indices])
    plain = render_edit(library.model, encoded, {}).images
    edited = render_edit(library.model, encoded, dict(zip(edit_pair, (0.0, 2.0), strict=True))).images
    for row in range(3):
        for column, expected in enumerate((inputs, plain, edited)):
            assert np.abs(tile(pixels, row, column) - to_uint8(expected[row : row + 1])[0]).max() <= 1


def test_set_lambda_one_changes_nothing(tiny_model, library, tmp_path):
    document = run_edit(tiny_model, tmp_path / "same.png", "--set", f"{library.concept}=1", "--samples", 2, "--raw")
    for row in document["samples"]:
        for predictor in ("g", "f"):
            change = row[predictor]
            assert change["after"] == change["before"] and not change["flipped"]
            assert change["before_class_after"] == change["before"]["probability"]
    with Image.open(tmp_path / "same.png") as picture:
        pixels = np.asarray(picture.convert("RGB"))
    for row in range(2):
        assert (tile(pixels, row, 1) == tile(pixels, row, 2)).all()  # edited == reconstruction


def test_set_zeroing_the_most_relevant_concepts_lowers_g(tmp_path):
    """On the shipped digits model: the concepts carrying a sample's class, removed, leave g less sure of it."""
    model, meta = load_viscoin(DEFAULT_MODEL, "cpu")
    test_set = load_dataset("digits", "test", resolution=meta.dataset["resolution"])
    image = tmp_path / "digit.png"
    Image.fromarray(to_uint8(test_set[13][0][None])[0]).save(image)
    encoded = encode_images(model, load_image_files([image], meta.dataset["resolution"]), None, setup_runtime("cpu"))
    local = local_relevance(encoded.pooled, model.theta.linear.weight.detach(), encoded.predicted)
    top = local[0].topk(3).indices.tolist()
    args = [arg for k in top for arg in ("--set", f"{k}=0")]
    result = run_cli("visualize", *args, "--image", image, "--out", tmp_path / "grid.png", "--json", *CPU)
    assert result.exit_code == 0, result.output
    g = json.loads(result.stdout)["samples"][0]["g"]
    assert g["before_class_after"] < g["before"]["probability"] - 0.05


def test_set_plain_output_says_what_changed(tiny_model, library, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run_cli(
        "visualize", "--model", tiny_model, "--set", f"{library.concept}=0", "--samples", 2, "--quiet", *CPU
    )
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 3 and lines[0].endswith(f"-> edit-{library.concept}.png")
    assert all(line.startswith("  test #") and ", f " in line and " -> " in line for line in lines[1:])
    assert (tmp_path / f"edit-{library.concept}.png").is_file()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "1:3"], "--set '1:3': expected CONCEPT=λ"),
        (["--set", "1="], "--set '1=': expected CONCEPT=λ"),
        (["--set", "=3"], "--set '=3': expected CONCEPT=λ"),
        (["--set", "x=1"], "--set 'x=1': 'x' is not a concept index (0..7)"),
        (["--set", "-1=1"], "--set '-1=1': '-1' is not a concept index"),
        (["--set", "8=1"], "--set '8=1': concept 8 out of range (the model has concepts 0..7)"),
        (["--set", "1=0", "--set", "1=2"], "--set '1=2': concept 1 is set twice"),
        (["--set", "1=nan"], "--set '1=nan': λ must be a finite number"),
        (["--set", "1=inf"], "--set '1=inf': λ must be a finite number"),
        (["--set", "1=big"], "--set '1=big': not a number"),
        (["--set", "1=11"], "--set '1=11': λ must be within ±10"),
        (["--set", "1=0", "--concept", "2"], "--set edits the concepts it names: it cannot be combined with --concept"),
        (["--set", "1=0", "--lambda", "2"], "cannot be combined with --lambda"),
        (["--set", "1=0", "--lambdas", "0,2"], "cannot be combined with --lambdas"),
        (["--set", "1=0", "--method", "am"], "cannot be combined with --method am"),
        (["--set", "1=0", "--am-steps", "5"], "cannot be combined with --am-steps"),
        (["--set", "1=0", "--top-pairs", "2"], "cannot be combined with --top-pairs"),
    ],
)
def test_set_user_errors(tiny_model, args, message):
    line = assert_one_line_error(run_cli("visualize", "--model", tiny_model, *args, *CPU))
    assert message in line


# --- the difference views --------------------------------------------------------------------------------


def test_difference_views_by_hand():
    # one sample, one pixel, one channel; λ = 1 renders 0.0, λ = 2 renders 0.5, λ = 0 renders -1.0
    renders = torch.tensor([0.0, 0.5, -1.0]).view(1, 3, 1, 1, 1)
    views = difference_views(renders, [1.0, 2.0, 0.0]).flatten().tolist()
    # the row's largest change is 1.0 (λ = 0); energies 0.25 and 1.0
    assert views == pytest.approx([0.0, -1.0, -0.5, -1.0, 1.0, 1.0])  # added, removed, energy for λ=2 then λ=0
    assert len(column_names([1.0, 2.0, 0.0], diff=True)) == 1 + 3 + 6


def test_difference_views_of_an_unchanged_row_are_black():
    renders = torch.rand(2, 1, 3, 4, 4).expand(2, 3, 3, 4, 4)
    assert (difference_views(renders, [0.0, 1.0, 2.0]) == -1).all()
