"""`viscoin report` on the tiny digits model: the page, its cards and images, its metrics, and that it
really renders (every image decodes) in headless Chromium, also from a copy of the folder."""

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
from viscoin_cli.interpret.report import lambda_strips
from viscoin_cli.nets.viscoin import load_viscoin

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class Page(HTMLParser):
    """The parts of the page the tests look at: cards, image sources, external references."""

    def __init__(self, text: str):
        super().__init__()
        self.cards: list[int] = []
        self.images: list[str] = []
        self.links: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "section" and "card" in (attrs.get("class") or ""):
            self.cards.append(int(attrs["data-concept"]))
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
    assert summary == {
        "index": str(out / "index.html"),
        "cards": 8,
        "images": 16,
        "metrics_json": str(out / "metrics.json"),
    }
    assert page.cards == list(range(8))
    assert len(page.images) == 16
    for src in page.images:
        assert not re.match(r"^[a-z]+:", src) and not src.startswith("/")  # relative: the folder can move
        with Image.open(out / src) as image:
            image.verify()
    strip = Image.open(out / "images" / "concept-000-lambda.png")
    assert strip.size == (5 * 18 + 2, 18 + 2)  # the top sample + λ = 0, 1, 2, 4 at 16 px, 2 px padding
    top = Image.open(out / "images" / "concept-000-top.png")
    assert top.size == (8 * 18 + 2, 18 + 2)


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
    assert Page(text).links == []  # no stylesheet, script or link to fetch
    assert "http://" not in text and "https://" not in text


def test_page_shows_the_metrics_it_computed(report):
    out, _ = report
    text = (out / "index.html").read_text()
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["metrics"]) == ["accuracy", "faithfulness"]
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
    assert page.cards == [5, 2] and len(page.images) == 4
    assert Image.open(out / "images" / "concept-005-lambda.png").size == (3 * 18 + 2, 20)
    assert Image.open(out / "images" / "concept-002-top.png").size == (3 * 18 + 2, 20)
    assert "accuracy.g" in (out / "index.html").read_text()
    assert json.loads((out / "metrics.json").read_text()) == json.loads(evaluated.stdout)

    # the same folder again with fewer concepts: the earlier cards' images are gone
    result = run_cli(
        "report", "--model", tiny_model, "--out", out, "--device", "cpu", "--quiet",
        "--metrics", "none", "--concepts", "1",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (out / "images").iterdir()) == ["concept-001-lambda.png", "concept-001-top.png"]
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
    assert 'data-images="ok"' in body and 'data-images-loaded="16"' in body, body
    assert len(Page(dom).cards) == 8

    (copy / "images" / "concept-003-top.png").unlink()  # a broken copy is reported on the page
    dom = _rendered_dom(copy / "index.html")
    assert 'data-images="broken"' in dom and "1 of 16 images did not load" in dom
