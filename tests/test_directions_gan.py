"""`viscoin directions gan`: the method recovers planted directions, the command's run folder and resume, its
one-line errors, and the pairing of concepts with directions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import assert_one_line_error, run_cli, save_tiny_classifier, save_tiny_generator
from PIL import Image
from safetensors.torch import load_file
from torch import nn

from viscoin_cli.errors import UserError
from viscoin_cli.interpret.direction_pairing import direction_effects, pair_concepts, pair_directions_with_concepts
from viscoin_cli.io.checkpoint import read_meta, sha256_file
from viscoin_cli.nets.latent_directions import GanDirections, LatentDirections, Reconstructor, load_gan_directions
from viscoin_cli.runtime import setup_runtime
from viscoin_cli.training.directions import (
    ReconstructorLoss,
    ShiftSampler,
    evaluate,
    measure_w_scale,
    train_steps,
)


class PlantedGenerator(nn.Module):
    """A generator with our Generator's interface whose image depends on w only through two planted unit
    directions: (w·u1)² sets the brightness, (w·u2)² the horizontal position of a vertical bar (squashed by
    tanh); the third dimension of W changes nothing.

    The factors are even in w·u, so an image does not show the sign of w·u: a shift along a mix of u1 and u2 looks
    exactly like a shift along its mirror image (the sign of one component flipped) from the mirrored latent.
    Two directions are then told apart only as far as each is from the other's mirror images, which is best
    when they lie along u1 and u2: the planted directions are the reconstructor's unique best choice.
    """

    z_dim = w_dim = 3
    num_ws, img_resolution, img_channels = 2, 8, 3

    def __init__(self) -> None:
        super().__init__()
        q, _ = torch.linalg.qr(torch.randn(3, 3, generator=torch.Generator().manual_seed(1)))
        self.register_buffer("planted", q[:, :2].T.contiguous())  # [2, w_dim], orthonormal, not on the axes

    def mapping(self, z: torch.Tensor, c: None) -> torch.Tensor:  # noqa: ARG002 - unconditional
        return z[:, None].expand(-1, self.num_ws, -1)

    def factors(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(brightness, position), each in [0, 1)."""
        return torch.tanh(0.3 * (ws.mean(1) @ self.planted.T) ** 2).unbind(1)

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "const") -> torch.Tensor:  # noqa: ARG002
        brightness, position = self.factors(ws)
        x = torch.linspace(-1, 1, self.img_resolution)
        bar = torch.exp(-((x - (1.4 * position[:, None] - 0.7)) ** 2) / (2 * 0.25**2))
        image = brightness[:, None, None] - 0.5 + 0.8 * bar[:, None, :]
        return image[:, None].expand(-1, self.img_channels, self.img_resolution, -1)


class MonotonePlantedGenerator(PlantedGenerator):
    """The same picture with factors that grow with w·u1 and w·u2: moving along +u_i raises its factor for every
    latent (the even factors above rise for half the latents and fall for the other half, so the mean change
    along ±u_i is zero)."""

    def factors(self, ws: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sigmoid(ws.mean(1) @ self.planted.T).unbind(1)


def test_the_method_recovers_planted_directions():
    """Three orthonormal directions in the planted generator's 3-d W: two must turn to u1 and u2 (the third
    then changes nothing, which R tells apart as well); from a random start, as the method trains them."""
    rt = setup_runtime("cpu", seed=0)
    G = PlantedGenerator()
    directions = LatentDirections(3, G.w_dim, orthonormal=True, scale=measure_w_scale(G, 0, rt.device))
    model = GanDirections(directions, Reconstructor(3, G.img_channels, width=1, resolution=G.img_resolution))
    optimizers = [
        torch.optim.Adam(directions.parameters(), lr=3e-2),
        torch.optim.Adam(model.reconstructor.parameters(), lr=3e-3),
    ]
    sampler = ShiftSampler(3, scale=3.0, minimum=0.5)
    start = (directions.matrix() @ G.planted.T).abs().detach()
    train_steps(G, model, optimizers, sampler, ReconstructorLoss(0.25), steps=200, batch=32, rt=rt)
    held_out = evaluate(G, model, sampler, samples=512, batch=256, seed=0, rt=rt)
    cosines = (directions.matrix() @ G.planted.T).abs().detach()  # [learned, planted]
    assert held_out["accuracy"] > 0.9, held_out  # chance: 1/3
    assert start.max(0).values.min() < 0.9, start  # the random start was not aligned
    assert cosines.max(0).values.min() > 0.98, cosines  # each planted direction found ...
    assert cosines.argmax(0).unique().numel() == 2, cosines  # ... by a different learned one


def test_directions_keep_their_constraint_and_shift_every_w_plus_vector():
    torch.manual_seed(0)
    for orthonormal in (False, True):
        directions = LatentDirections(5, 8, orthonormal=orthonormal, scale=2.0)
        optimizer = torch.optim.Adam(directions.parameters(), lr=0.1)
        for _ in range(3):
            optimizer.zero_grad()
            (directions.matrix() * torch.randn(5, 8)).sum().backward()
            optimizer.step()
        matrix = directions.matrix().detach()
        assert torch.allclose(matrix.norm(dim=1), torch.ones(5), atol=1e-5)
        gram = matrix @ matrix.T
        off_diagonal = (gram - torch.eye(5)).abs().max()
        assert (off_diagonal < 1e-5) == orthonormal  # unit-norm directions are not orthogonal by chance
    ws = torch.randn(4, 3, 8)
    k, eps = torch.tensor([0, 4, 2, 2]), torch.tensor([1.0, -0.5, 0.0, 3.0])
    moved = directions.shift(ws, k, eps)
    expected = ws + 2.0 * eps[:, None, None] * matrix[k][:, None, :]
    assert torch.allclose(moved, expected, atol=1e-6)
    with pytest.raises(ValueError, match="do not fit"):
        LatentDirections(9, 8, orthonormal=True)


def test_shifts_follow_the_papers_distribution():
    torch.manual_seed(0)
    k, eps = ShiftSampler(7, scale=6.0, minimum=0.5)(20_000, torch.device("cpu"))
    assert k.min() == 0 and k.max() == 6
    assert eps.abs().min() >= 0.5 and eps.abs().max() <= 6.0
    assert abs(float((eps > 0).float().mean()) - 0.5) < 0.02
    assert abs(float((eps.abs() == 0.5).float().mean()) - 0.5 / 6) < 0.01  # |ε| < 0.5 raised to 0.5


# --- the command ----------------------------------------------------------------------------------------------

ARGS = ("--directions", "3", "--batch-size", "4", "--log-every", "2", "--eval-samples", "16", "--device", "cpu")


@pytest.fixture(scope="module")
def tiny_g(tmp_path_factory) -> Path:
    return save_tiny_generator(tmp_path_factory.mktemp("dirs-g") / "G.safetensors")


@pytest.fixture(scope="module")
def gan_run(tiny_g) -> tuple[Path, dict]:
    out = tiny_g.parent / "run"
    result = run_cli("directions", "gan", "--generator", tiny_g, *ARGS, "--iterations", "4", "--json", "--out", out)
    assert result.exit_code == 0, result.output
    return out, json.loads(result.stdout)


def test_the_command_writes_a_complete_run(gan_run, tiny_g):
    out, summary = gan_run
    assert {p.name for p in out.iterdir()} >= {
        "options.json",
        "metrics.jsonl",
        "latest.safetensors",
        "latest.state.safetensors",
        "strips.png",
        "summary.json",
    }
    assert json.loads((out / "summary.json").read_text())["reconstructor"] == summary["reconstructor"]
    assert summary["iterations"] == 4 and summary["num_directions"] == 3
    assert 0 <= summary["reconstructor"]["accuracy"] <= 1 and summary["reconstructor"]["shift_mae"] > 0
    assert len(summary["reconstructor"]["accuracy_per_direction"]) == 3
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [2, 4]
    options = json.loads((out / "options.json").read_text())
    assert options["num_directions"] == 3 and options["generator"] == str(tiny_g)
    assert options["lr"] == 3e-3 and options["batch_size"] == 4  # digits' preset, and the typed batch
    meta = read_meta(out / "latest.safetensors", kind="directions")
    assert meta.config["method"] == "gan" and meta.config["directions"]["num_directions"] == 3
    assert meta.parents["generator"]["sha256"] == sha256_file(tiny_g)
    assert meta.extra["held_out"]["accuracy"] == summary["reconstructor"]["accuracy"]
    loaded = load_gan_directions(out / "latest.safetensors")
    assert float(loaded.model.directions.scale) == pytest.approx(summary["w_scale"])
    assert loaded.model.directions.matrix().shape == (3, 16)
    strips = Image.open(out / "strips.png")
    assert strips.height > 3 * 64 and strips.width > 15 * 64  # 3 rows of 15 tiles (16 px upscaled 4x) + labels


def test_resume_continues_exactly(gan_run, tiny_g, tmp_path):
    out, _ = gan_run
    half = tmp_path / "half"
    first = run_cli("directions", "gan", "--generator", tiny_g, *ARGS, "--iterations", "2", "--quiet", "--out", half)
    assert first.exit_code == 0, first.output
    again = run_cli("directions", "gan", "--resume", half, "--iterations", "4", "--json", "--quiet")
    assert again.exit_code == 0, again.output
    whole, resumed = load_file(out / "latest.safetensors"), load_file(half / "latest.safetensors")
    assert whole.keys() == resumed.keys()
    for name in whole:
        assert torch.equal(whole[name], resumed[name]), name

    def records(folder: Path) -> list[dict]:
        lines = (folder / "metrics.jsonl").read_text().splitlines()
        return [{k: v for k, v in json.loads(line).items() if k != "seconds_per_iteration"} for line in lines]

    assert records(half) == records(out)
    changed = run_cli("directions", "gan", "--resume", half, "--directions", "5")
    assert "--directions cannot change when resuming" in assert_one_line_error(changed)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--directions", "1"), "--directions"),
        (("--directions", "100000"), "--directions"),
        (("--iterations", "0"), "--iterations"),
        (("--batch-size", "1"), "--batch-size"),
        (("--shift-scale", "0"), "--shift-scale 0"),
        (("--min-shift", "7"), "--min-shift 7"),
        (("--lr", "0"), "--lr 0"),
        (("--orthonormal", "--directions", "17"), "W has only 16 dimensions"),
        (("--workers", "2"), "no such option --workers"),  # G draws the images: no loader to give workers
    ],
)
def test_bad_option_values_are_one_line(args, expected, tiny_g, tmp_path):
    result = run_cli("directions", "gan", "--generator", tiny_g, "--out", tmp_path / "run", "--device", "cpu", *args)
    assert expected in assert_one_line_error(result)


def test_a_wrong_checkpoint_kind_as_generator_is_one_line(tmp_path):
    f_path = save_tiny_classifier(tmp_path / "f.safetensors")
    result = run_cli("directions", "gan", "--generator", f_path, "--out", tmp_path / "run")
    assert "is a classifier checkpoint, expected a generator checkpoint" in assert_one_line_error(result)
    missing = run_cli("directions", "gan", "--generator", tmp_path / "none.safetensors", "--out", tmp_path / "run")
    assert "no such file" in assert_one_line_error(missing)


def test_an_existing_run_is_not_overwritten(gan_run, tiny_g):
    out, _ = gan_run
    result = run_cli("directions", "gan", "--generator", tiny_g, "--out", out, "--iterations", "1")
    assert "is not empty" in assert_one_line_error(result)


# --- pairing concepts with directions ---------------------------------------------------------------------------


def test_pairing_finds_the_direction_that_moves_each_planted_concept():
    G = MonotonePlantedGenerator()
    directions = LatentDirections(3, G.w_dim)
    with torch.no_grad():  # 0: orthogonal to both planted directions (changes nothing); 1: the bar; 2: brightness
        null = torch.linalg.svd(G.planted, full_matrices=True).Vh[-1]
        directions.raw.copy_(torch.stack([null, G.planted[1], G.planted[0]]))

    def encode(images: torch.Tensor) -> torch.Tensor:
        """Concepts: the image's brightness, where its bar is, and one that never changes."""
        column = images[:, 0].mean(1)  # [N, W]
        where = (column.softmax(1) * torch.linspace(-1, 1, images.shape[-1])).sum(1)
        return torch.stack([images.mean((1, 2, 3)), where, torch.ones(len(images))], 1)

    effect, spread = direction_effects(encode, G, directions, shift=1.0, samples=64, batch_size=32)
    assert effect.shape == (3, 3) and spread.shape == (3,)
    paired = pair_concepts(effect, spread)
    assert paired["dead_concepts"] == [2]
    assert {p["concept"]: p["direction"] for p in paired["pairs"]} == {0: 2, 1: 1}
    assert all(p["score"] > 0.5 and p["share"] > 0.7 for p in paired["pairs"]), paired["pairs"]
    assert abs(paired["effect"][0][0]) < 1e-4 and abs(paired["effect"][0][1]) < 1e-4  # the null direction
    json.dumps(paired)


def test_pairing_a_viscoin_model_with_directions_in_its_generator(tiny_model, tmp_path):
    g_path = tiny_model.parent.parent / "G.safetensors"  # the generator the tiny model was trained with
    own = run_cli(
        "directions", "gan", "--generator", g_path, *ARGS, "--iterations", "2", "--quiet", "--out", tmp_path / "own"
    )
    assert own.exit_code == 0, own.output
    result = pair_directions_with_concepts(tiny_model, tmp_path / "own" / "latest.safetensors", samples=8)
    assert result["num_directions"] == 3 and result["num_concepts"] == 8
    assert len(result["effect"]) == 3 and all(len(row) == 8 for row in result["effect"])
    assert len(result["pairs"]) + len(result["dead_concepts"]) == 8
    assert all(0 <= p["direction"] < 3 and 0 <= p["share"] <= 1 for p in result["pairs"])
    json.dumps(result, allow_nan=False)

    other_g = save_tiny_generator(tmp_path / "other-G.safetensors", seed=1)
    other = run_cli(
        "directions", "gan", "--generator", other_g, *ARGS, "--iterations", "1", "--quiet", "--out", tmp_path / "other"
    )
    assert other.exit_code == 0, other.output
    with pytest.raises(UserError, match="another generator"):
        pair_directions_with_concepts(tiny_model, tmp_path / "other" / "latest.safetensors", samples=8)


def test_resume_refuses_a_changed_generator(tmp_path):
    g_path = save_tiny_generator(tmp_path / "G.safetensors")
    first = run_cli(
        "directions", "gan", "--generator", g_path, *ARGS, "--iterations", "1", "--quiet", "--out", tmp_path / "r"
    )
    assert first.exit_code == 0, first.output
    save_tiny_generator(g_path, seed=1)  # the same file name, other weights
    again = run_cli("directions", "gan", "--resume", tmp_path / "r", "--iterations", "2")
    assert "is not the generator the run in" in assert_one_line_error(again)


def test_the_embedded_generators_get_the_small_preset_and_others_the_papers_values(tmp_path):
    from viscoin_cli.training.directions import DirectionsConfig

    digits = DirectionsConfig.create({"generator": str(save_tiny_generator(tmp_path / "d.safetensors"))})
    assert (digits.lr, digits.num_directions, digits.batch_size, digits.iterations) == (3e-3, 16, 16, 2500)
    facts = {"name": "folder", "class_names": ["a", "b"], "num_classes": 2, "channels": 3}
    other = DirectionsConfig.create({"generator": str(save_tiny_generator(tmp_path / "o.safetensors", dataset=facts))})
    assert (other.lr, other.num_directions, other.batch_size, other.iterations) == (1e-4, 32, 32, 2000)
