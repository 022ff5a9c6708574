"""`viscoin report` on the tiny digits model: the page, its cards and images (heatmaps included), its
metrics, its dictionary health on a model with a planted dead and duplicated concept, and that it really
renders (every image decodes) in headless Chromium, also from a copy of the folder."""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
import torch
from conftest import assert_one_line_error, run_cli
from PIL import Image

from viscoin_cli.interpret.amplify import amplify
from viscoin_cli.interpret.encode import Encoded
from viscoin_cli.interpret.heatmaps import concept_heatmaps, heat_overlay
from viscoin_cli.interpret.report import heatmap_tiles, lambda_strips
from viscoin_cli.io.checkpoint import load_checkpoint, save_checkpoint
from viscoin_cli.nets.viscoin import load_viscoin

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """The parts of the page the tests look at: cards, image sources, external references."""

    def __init__(self, text: str):
        super().__init__()
        self.cards: list[int] = []
        self.samples: dict[int, list[int]] = {}  # per card, its data-samples
        self.hooks: dict[int, list[int]] = {}  # per card, its sample indices (linked or not)
        self.explained: dict[int, dict[int, str]] = {}  # per card, sample -> the explain card it links to
        self.images: list[str] = []
        self.links: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "card" in (attrs.get("class") or ""):
            self.cards.append(int(attrs["data-concept"]))
            self.samples[self.cards[-1]] = [int(i) for i in attrs["data-samples"].split(",")]
        if tag in ("span", "a") and attrs.get("class") == "sample":
            concept, sample = int(attrs["data-concept"]), int(attrs["data-sample"])
            self.hooks.setdefault(concept, []).append(sample)
            if tag == "a":
                self.explained.setdefault(concept, {})[sample] = attrs["href"]
        if tag == "img":
            self.images.append(attrs["src"])
        for name in ("href", "src"):
            if name in attrs and tag != "img":
                self.links.append(attrs[name])


@pytest.fixture(scope="module")
def report(tiny_model, tmp_path_factory):
    """One full report (every concept, two metrics) shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("report") / "site"
    result = run_cli(
        "report", "--model", tiny_model, "--out", out, "--device", "cpu", "--samples", "10",
        "--metrics", "accuracy,faithfulness", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_page_has_a_card_per_concept_with_its_images(report):
    out, summary = report
    page = Page((out / "index.html").read_text())
    health = json.loads((out / "metrics.json").read_text())["metrics"]["health"]
    assert summary == {
        "index": str(out / "index.html"),
        "cards": 8,
        "images": 24,
        "explain_cards": len(list((out / "explain").glob("*.png"))),
        "metrics_json": str(out / "metrics.json"),
        "health": {"dead": health["dead"]["count"], "duplicates": health["duplicates"]["count"]},
    }
    assert page.cards == list(range(8))
    assert len(page.images) == 24
    for src in page.images:
        assert not re.match(r"^[a-z]+:", src) and not src.startswith("/")  # relative: the folder can move
        with Image.open(out / src) as image:
            image.verify()
    strip = Image.open(out / "images" / "concept-000-lambda.png")
    assert strip.size == (5 * 18 + 2, 18 + 2)  # the top sample + λ = 0, 1, 2, 4 at 16 px, 2 px padding
    top = Image.open(out / "images" / "concept-000-top.png")
    assert top.size == (8 * 18 + 2, 18 + 2)


def test_every_card_has_its_heatmaps_under_its_top_samples(report):
    out, _ = report
    for concept in range(8):
        heatmaps = Image.open(out / "images" / f"concept-{concept:03d}-heatmaps.png")
        assert heatmaps.size == (8 * 18 + 2, 2 * 18 + 2)  # the 8 top samples' columns, map row then gradient row
        assert heatmaps.mode == "RGB"
    assert "images/concept-003-heatmaps.png" in Page((out / "index.html").read_text()).images


def test_each_card_names_its_top_samples_for_explain_links(report):
    out, _ = report
    page = Page((out / "index.html").read_text())
    for concept in page.cards:
        assert len(page.samples[concept]) == 8 and len(set(page.samples[concept])) == 8
        assert page.hooks[concept] == page.samples[concept]  # one hook per sample, in the card's order


def test_each_card_links_its_top_sample_to_an_explain_card(report):
    """--explain 1 (the default): every card's most activating sample opens its explain card, which exists;
    a sample explained for another card is linked wherever it appears."""
    out, summary = report
    page = Page((out / "index.html").read_text())
    written = {f"explain/{p.name}" for p in (out / "explain").glob("*.png")}
    assert summary["explain_cards"] == len(written) == len({page.samples[c][0] for c in page.cards})
    for concept in page.cards:
        top = page.samples[concept][0]
        assert page.explained[concept][top] == f"explain/test-{top}.png"
        assert set(page.explained[concept].values()) <= written
    with Image.open(out / page.explained[0][page.samples[0][0]]) as card:
        assert card.width > 6 * 16 * 8  # six columns of 128 px tiles (16 px images upscaled 8 times)


def test_explain_zero_writes_no_explain_cards(tiny_model, tmp_path):
    out = tmp_path / "site"
    result = run_cli(
        "report",
        "--model",
        tiny_model,
        "--out",
        out,
        "--device",
        "cpu",
        "--metrics",
        "none",
        "--concepts",
        "0-1",
        "--explain",
        "0",
    )
    assert result.exit_code == 0, result.output
    assert not list(out.glob("explain/*.png")) and "<a class='sample'" not in (out / "index.html").read_text()


def test_heatmap_tiles_match_one_concept_at_a_time(tiny_model):
    """The report batches heatmaps across concepts (a concept per row); each tile is what `concept_heatmaps`
    gives for that image and concept alone."""
    model, _ = load_viscoin(tiny_model)
    torch.manual_seed(0)
    images = torch.rand(5, 3, 16, 16) * 2 - 1
    concepts = [1, 4, 1, 7, 0]
    tiles = heatmap_tiles(model, images, concepts, 2)
    assert tiles.shape == (5, 2, 3, 16, 16)
    for row, concept in enumerate(concepts):
        alone = concept_heatmaps(model, images[row : row + 1], torch.tensor([[concept]]))
        assert torch.allclose(tiles[row, 0], heat_overlay(images[row : row + 1], alone.maps[:, 0])[0], atol=1e-5)
        assert torch.allclose(tiles[row, 1], heat_overlay(images[row : row + 1], alone.gradients[:, 0])[0], atol=1e-5)


def test_lambda_strips_match_amplify(tiny_model):
    """The report renders its λ strips batched across concepts; each row is what `amplify` gives."""
    model, _ = load_viscoin(tiny_model)
    torch.manual_seed(0)
    with torch.no_grad():
        out = model.encode(torch.rand(3, 3, 16, 16) * 2 - 1)
    encoded = Encoded(out.concept_maps, out.support, out.pooled, out.logits, out.f_logits, torch.zeros(3))
    lambdas = [0.0, 1.0, 3.0]
    strips = lambda_strips(model, encoded, [2, 0, 2], [1, 4, 7], lambdas, 4, contextlib.nullcontext)
    assert strips.shape == (3, 3, 3, 16, 16)
    for row, (sample, concept) in enumerate([(2, 1), (0, 4), (2, 7)]):
        expected = amplify(
            model, out.concept_maps[sample : sample + 1], out.support[sample : sample + 1], concept, lambdas
        )
        assert torch.allclose(strips[row], expected[0], atol=1e-5)


def test_page_needs_nothing_from_outside(report):
    out, _ = report
    text = (out / "index.html").read_text()
    page = Page(text)
    anchors = [link for link in page.links if link.startswith("#")]
    cards = [link for link in page.links if not link.startswith("#")]
    assert all(re.fullmatch(r"#concept-\d+", link) for link in anchors)  # no stylesheet, script or page to fetch
    assert {int(link.split("-")[1]) for link in anchors} <= set(page.cards)  # every anchor is on the page
    assert all(re.fullmatch(r"explain/test-\d+\.png", link) and (out / link).is_file() for link in cards)
    assert "http://" not in text and "https://" not in text


def test_page_shows_the_metrics_it_computed(report):
    out, _ = report
    text = (out / "index.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["metrics"]) == ["accuracy", "faithfulness", "health"]  # health: always, for its section
    assert "accuracy.g" in text and "faithfulness.0.2.median" in text and "reconstruction.mse" not in text
    assert f"{metrics['metrics']['accuracy']['g']:.4f}" in text


def test_metrics_from_an_evaluate_json_and_a_concept_subset(tiny_model, tmp_path):
    evaluated = run_cli("evaluate", "accuracy", "--model", tiny_model, "--device", "cpu", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    (tmp_path / "metrics.json").write_text(evaluated.stdout)
    out = tmp_path / "site"
    result = run_cli(
        "report", "--model", tiny_model, "--out", out, "--device", "cpu", "--quiet",
        "--metrics-json", tmp_path / "metrics.json", "--concepts", "5,2", "--lambdas", "0,3", "--top", "3",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("report: ")
    page = Page((out / "index.html").read_text())
    assert page.cards == [5, 2] and len(page.images) == 6
    assert Image.open(out / "images" / "concept-005-lambda.png").size == (3 * 18 + 2, 20)
    assert Image.open(out / "images" / "concept-002-top.png").size == (3 * 18 + 2, 20)
    assert Image.open(out / "images" / "concept-002-heatmaps.png").size == (3 * 18 + 2, 2 * 18 + 2)
    assert "accuracy.g" in (out / "index.html").read_text()
    assert json.loads((out / "metrics.json").read_text()) == json.loads(evaluated.stdout)

    # the same folder again with fewer concepts: the earlier cards' images are gone
    result = run_cli(
        "report", "--model", tiny_model, "--out", out, "--device", "cpu", "--quiet",
        "--metrics", "none", "--concepts", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == [
        "concept-001-heatmaps.png",
        "concept-001-lambda.png",
        "concept-001-top.png",
    ]
    assert "No metrics on this page" in (out / "index.html").read_text()


def test_metrics_json_of_another_model_is_refused(tiny_model, tmp_path):
    (tmp_path / "m.json").write_text(json.dumps({"model": {"sha256": "0123456789abcdef"}, "metrics": {}}))
    result = run_cli("report", "--model", tiny_model, "--out", tmp_path / "s", "--metrics-json", tmp_path / "m.json")
    assert "computed for another model" in assert_one_line_error(result)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics", "accuracy", "--metrics-json", "m.json"], "not both"),
        (["--metrics", "speed"], "unknown metric"),
        (["--metrics", "accuracy,visualization-fid"], "not computed by report"),
        (["--duplicate-threshold", "2"], "must be a correlation in [-1, 1]"),
        (["--compare", "other.safetensors", "--metrics", "health"], "--compare needs metrics"),  # health: no row
        (["--concepts", "8"], "concept index out of range"),
        (["--lambdas", "0,x"], "not a number"),
        (["--top", "0"], "at least 1"),
        (["--split", "val"], "'val' is not one of 'test', 'train'"),
        (["--metrics-json", "missing.json"], "no such file"),
    ],
)
def test_bad_options_are_one_line_errors(tiny_model, tmp_path, args, message):
    result = run_cli("report", "--model", tiny_model, "--out", tmp_path / "site", "--device", "cpu", *args)
    assert message in assert_one_line_error(result)


def _rendered_dom(index) -> str:
    """The page's DOM after load in headless Chromium; the page's own script marks <body data-images>."""
    result = subprocess.run(
        [
            CHROMIUM, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run",
            f"--user-data-dir={index.parent.parent / 'chromium-profile'}", "--virtual-time-budget=5000",
            "--dump-dom", index.as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (apt-get install chromium)")
def test_page_renders_in_a_browser_from_a_copied_folder(report, tmp_path):
    out, _ = report
    copy = shutil.copytree(out, tmp_path / "moved" / "site")
    dom = _rendered_dom(copy / "index.html")
    body = re.search(r"<body[^>]*>", dom)[0]
    assert 'data-images="ok"' in body and 'data-images-loaded="24"' in body, body
    assert len(Page(dom).cards) == 8

    (copy / "images" / "concept-003-top.png").unlink()  # a broken copy is reported on the page
    dom = _rendered_dom(copy / "index.html")
    assert 'data-images="broken"' in dom and "1 of 24 images did not load" in dom


# ---------------------------------------------------------------------------------------------------
# Dictionary health, on the tiny model with concept 2 killed and concept 5 planted as 2 × concept 3


@pytest.fixture(scope="module")
def planted(tiny_model, tmp_path_factory):
    """The tiny model with every concept kept active (bias + 0.5), concept 2 dead (zero weights, bias −1)
    and concept 5 = 2 · concept 3 (ReLU(2x) = 2 ReLU(x): correlation 1): its health is known exactly."""
    tensors, meta = load_checkpoint(tiny_model)
    weight, bias = tensors["psi.concept_conv.weight"], tensors["psi.concept_conv.bias"]
    bias += 0.5
    weight[2], bias[2] = 0.0, -1.0
    weight[5], bias[5] = 2 * weight[3], 2 * bias[3]
    folder = tmp_path_factory.mktemp("planted")
    fields = {"config": meta.config, "dataset": meta.dataset, "parents": meta.parents}
    model = save_checkpoint(folder / "model.safetensors", tensors, kind=meta.kind, step=meta.step, **fields)
    out = folder / "site"
    result = run_cli(
        "report", "--model", model, "--out", out, "--device", "cpu", "--metrics", "none", "--top", "3", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    return model, out, json.loads(result.stdout)


def _card(out, concept: int) -> str:
    text = (out / "index.html").read_text()
    return text[text.index(f'id="concept-{concept}"') :].split("</section>")[0]


def test_health_section_counts_the_planted_dead_and_duplicate(planted):
    _, out, summary = planted
    text = (out / "index.html").read_text()
    assert summary["health"] == {"dead": 1, "duplicates": 1}
    assert "<h2>Dictionary health</h2>" in text and "data-dead='1' data-duplicates='1'" in text
    assert "1 of 8</td>" in text and "<a href='#concept-2'>concept 2</a>" in text  # the dead list links its card
    assert "<a href='#concept-3'>concept 3</a> ~ <a href='#concept-5'>concept 5</a> (corr 1.000)" in text
    assert not (out / "metrics.json").exists()  # --metrics none: health is on the page, no metrics document


def test_a_dead_concept_card_carries_the_dead_badge(planted):
    _, out, _ = planted
    assert "dead: never active on the test split" in _card(out, 2)
    assert "active on 0.0% of test images" in _card(out, 2)
    assert "dead" in re.search(r'data-search="([^"]*)"', _card(out, 2))[1]  # the filter finds it
    assert all("badge dead" not in _card(out, k) for k in range(8) if k != 2)


def test_a_near_duplicate_card_links_its_partner(planted):
    _, out, _ = planted
    assert "duplicate of <a href='#concept-5'>concept 5</a> (corr 1.00)" in _card(out, 3)
    assert "duplicate of <a href='#concept-3'>concept 3</a> (corr 1.00)" in _card(out, 5)
    assert all("badge" not in _card(out, k) for k in (0, 1, 4, 6, 7))


def test_health_from_a_metrics_json_is_the_one_shown(planted, tmp_path):
    """With --metrics-json, the page shows the document's health (here at another threshold), not its own."""
    model, _, _ = planted
    evaluated = run_cli(
        "evaluate", "health", "--model", model, "--device", "cpu", "--json", "--duplicate-threshold", "1.0"
    )
    assert evaluated.exit_code == 0, evaluated.output
    (tmp_path / "health.json").write_text(evaluated.stdout)
    out = tmp_path / "site"
    result = run_cli(
        "report", "--model", model, "--out", out, "--device", "cpu", "--concepts", "2,3", "--top", "2",
        "--metrics-json", tmp_path / "health.json", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["health"] == {"dead": 1, "duplicates": 0}  # r = 1 is not above 1
    text = (out / "index.html").read_text()
    assert "from --metrics-json" in text and "health.dead.count" not in text  # its own section, not metric rows
    assert "badge duplicate" not in text and "badge dead" in text
