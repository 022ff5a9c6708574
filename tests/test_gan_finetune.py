"""`finetune-gan --resume-from` as NVIDIA's resume: the networks the options ask for, every tensor whose name
(and here also shape) matches copied from the checkpoints, the others fresh and reported; and --xflip-strength."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DIGITS_FACTS, TINY_G, assert_one_line_error, run_cli

from viscoin_cli.io.checkpoint import load_checkpoint, save_checkpoint
from viscoin_cli.nets import augment as augment_module
from viscoin_cli.nets.stylegan2 import Discriminator, Generator
from viscoin_cli.training import gan
from viscoin_cli.training.gan import GanConfig, copy_matching, discriminator_kwargs_for

MAP3 = {**TINY_G, "mapping_kwargs": {"num_layers": 3}}  # the checkpoint: a 3-layer mapping, 16 channels
D_CONFIG = {**discriminator_kwargs_for(MAP3), "epilogue_kwargs": {"mbstd_group_size": 4}}
# 16 px digits, batch 8, one minibatch per tick.
RUN = ["--dataset", "digits", "--resolution", "16", "--batch-size", "8", "--tick-kimg", "0.008", "--snap", "1"]
RUN += ["--grid-size", "4", "--device", "cpu"]
FROZEN = ["--glr", "0", "--dlr", "0"]  # nothing learns: latest.* hold the weights the run started from


def generator(config: dict, seed: int) -> Generator:
    torch.manual_seed(seed)
    return Generator(**config)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    folder = tmp_path_factory.mktemp("checkpoints")
    G = generator(MAP3, 0)
    torch.manual_seed(1)
    D = Discriminator(**D_CONFIG)
    facts = {**DIGITS_FACTS, "resolution": 16}
    g_path = save_checkpoint(folder / "G.safetensors", G.state_dict(), kind="generator", config=MAP3, dataset=facts)
    d_path = save_checkpoint(folder / "D.safetensors", D.state_dict(), kind="discriminator", config=D_CONFIG)
    return g_path, d_path


def finetune(checkpoints, out, *args):
    g_path, d_path = checkpoints
    result = run_cli("finetune-gan", *RUN, "--resume-from", g_path, "--discriminator", d_path, *args, "--out", out)
    assert result.exit_code == 0, result.output
    return result


# --- the copy -------------------------------------------------------------------------------------------


def test_copy_matching_copies_tensors_whose_name_and_shape_match():
    source = generator(MAP3, 0).state_dict()
    target = generator({**TINY_G, "mapping_kwargs": {"num_layers": 4}, "synthesis_kwargs": {
        "channel_base": 128, "channel_max": 8}}, 1)  # fmt: skip
    before = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    report = copy_matching(target, source)
    after = target.state_dict()
    assert set(report.copied) | set(report.fresh) == set(after) and not set(report.copied) & set(report.fresh)
    assert set(report.reshaped) < set(report.fresh)
    assert {"mapping.fc0.weight", "mapping.fc2.bias", "mapping.w_avg", "synthesis.b16.torgb.bias"} <= set(report.copied)
    assert set(report.fresh) - set(report.reshaped) == {"mapping.fc3.weight", "mapping.fc3.bias"}  # not in source
    assert {"synthesis.b4.const", "synthesis.b8.conv0.weight"} <= set(report.reshaped)  # 8 channels, not 16
    assert report.dropped == () and not report.complete
    for name in report.copied:
        assert torch.equal(after[name], source[name]), name
    for name in report.fresh:  # kept their initialisation, which is not the checkpoint's
        assert torch.equal(after[name], before[name]), name
        assert name not in source or after[name].shape != source[name].shape, name
    assert report.to_json()["total"] == len(after) and report.to_json()["shape_differs"] == list(report.reshaped)


def test_copy_matching_into_a_shallower_mapping_drops_the_deeper_layers():
    source = generator(MAP3, 0).state_dict()
    target = generator({**TINY_G, "mapping_kwargs": {"num_layers": 2}}, 1)
    report = copy_matching(target, source)
    assert report.dropped == ("mapping.fc2.bias", "mapping.fc2.weight") and report.fresh == ()
    assert all(torch.equal(target.state_dict()[name], source[name]) for name in report.copied)


def test_copy_matching_the_same_architecture_copies_everything():
    source = generator(MAP3, 0).state_dict()
    target = generator(MAP3, 1)
    report = copy_matching(target, source)
    assert report.complete and len(report.copied) == len(source)
    assert all(torch.equal(target.state_dict()[name], tensor) for name, tensor in source.items())


# --- finetune-gan -----------------------------------------------------------------------------------------


def test_a_shallower_mapping_copies_the_matching_layers(checkpoints, tmp_path):
    out = tmp_path / "shallow"
    result = finetune(checkpoints, out, "--map", "2", "--kimg", "0.008", *FROZEN, "--json")
    g_total = len(generator(MAP3, 0).state_dict()) - 2
    assert f"resume: copied all {g_total} generator tensors" in result.stderr
    assert "dropped (not in the network): mapping.fc2.{bias,weight}" in result.stderr
    assert "resume: copied all 28 discriminator tensors" in result.stderr
    record = json.loads(result.stdout)["resume_from"]
    assert record["generator"] == {"copied": g_total, "total": g_total, "fresh": [], "shape_differs": [],
                                   "dropped": ["mapping.fc2.bias", "mapping.fc2.weight"]}  # fmt: skip
    assert record["discriminator"]["dropped"] == [] and record["discriminator"]["fresh"] == []
    options = json.loads((out / "options.json").read_text())
    assert options["map"] == 2 and options["G_kwargs"]["mapping_kwargs"] == {"num_layers": 2}
    assert (options["cbase"], options["cmax"], options["mbstd"], options["z_dim"]) == (128, 16, 4, 16)
    # No learning rate: the run's networks are the ones it started from (G's w_avg tracks the mapping's outputs).
    (g_start, _), (d_start, _) = (load_checkpoint(path) for path in checkpoints)
    g_end, _ = load_checkpoint(out / "latest.safetensors")
    d_end, _ = load_checkpoint(out / "latest.D.safetensors")
    assert set(g_end) == set(g_start) - {"mapping.fc2.weight", "mapping.fc2.bias"}
    assert all(torch.equal(g_end[name], g_start[name]) for name in g_end if name != "mapping.w_avg")
    assert all(torch.equal(d_end[name], d_start[name]) for name in d_start)


@pytest.fixture(scope="module")
def changed_run(checkpoints, tmp_path_factory):
    """A deeper mapping and fewer channels than the checkpoints', with x-flip strength 0.1, 2 ticks."""
    out = tmp_path_factory.mktemp("changed") / "run"
    pipes = []

    class Recorded(augment_module.AugmentPipe):
        def __init__(self, **strengths):
            super().__init__(**strengths)
            pipes.append(self)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(gan, "AugmentPipe", Recorded)
        result = finetune(checkpoints, out, "--map", "4", "--cmax", "8", "--xflip-strength", "0.1", "--kimg", "0.016",
                          "--json")  # fmt: skip
    return out, result, pipes


def test_other_network_options_leave_the_unmatched_tensors_fresh(changed_run, checkpoints):
    out, result, _ = changed_run
    record = json.loads(result.stdout)["resume_from"]
    g, d = record["generator"], record["discriminator"]
    assert {"mapping.fc3.weight", "mapping.fc3.bias", "synthesis.b4.const"} <= set(g["fresh"])
    assert "synthesis.b4.const" in g["shape_differs"] and "mapping.fc3.weight" not in g["shape_differs"]
    assert g["copied"] + len(g["fresh"]) == g["total"] and g["dropped"] == []
    assert "mapping.fc2.weight" not in g["fresh"] and "b4.fc.weight" in d["shape_differs"]  # --cmax: G and D
    assert f"resume: copied {g['copied']} of {g['total']} generator tensors" in result.stderr
    assert "fresh (not in the checkpoint): mapping.fc3.{weight,bias}" in result.stderr
    assert "fresh (shape differs): synthesis.b4.const" in result.stderr
    options = json.loads((out / "options.json").read_text())
    assert (options["map"], options["cmax"], options["cbase"]) == (4, 8, 128)
    assert options["D_kwargs"]["channel_max"] == 8 and options["G_kwargs"]["synthesis_kwargs"]["channel_max"] == 8
    g_start, _ = load_checkpoint(checkpoints[0])
    g_end, _ = load_checkpoint(out / "latest.safetensors")
    assert all(g_end[name].shape != g_start[name].shape for name in g["shape_differs"])


def test_xflip_strength_reaches_the_augment_pipe_and_options_json(changed_run):
    out, _, pipes = changed_run
    assert len(pipes) == 1 and pipes[0].xflip == pytest.approx(0.1)
    assert pipes[0].rotate90 == 1 and pipes[0].saturation == 1  # the rest of 'bgc' as it is
    assert json.loads((out / "options.json").read_text())["xflip_strength"] == 0.1
    assert gan.augment_pipe(GanConfig(xflip_strength=0.25)).xflip == 0.25
    assert gan.augment_pipe(GanConfig()).xflip == 1.0


def test_a_resumed_run_refuses_another_xflip_strength(changed_run):
    out, _, _ = changed_run
    line = assert_one_line_error(run_cli("finetune-gan", "--resume", out, "--xflip-strength", "0.5", "--quiet"))
    assert "--xflip-strength" in line and "resuming" in line and "0.1" in line
    line = assert_one_line_error(run_cli("finetune-gan", "--resume", out, "--map", "2", "--quiet"))
    assert "--map" in line and "resuming" in line


def test_xflip_strength_is_at_least_zero(tmp_path):
    line = assert_one_line_error(run_cli("finetune-gan", *RUN, "--xflip-strength", "-0.1", "--out", tmp_path / "x"))
    assert "Invalid value for '--xflip-strength'" in line  # below min=0 (not: no such option)


def test_resuming_a_finetuning_run_copies_nothing_and_continues_exactly(changed_run, checkpoints, tmp_path):
    straight, straight_result, _ = changed_run
    out = tmp_path / "halves"
    finetune(checkpoints, out, "--map", "4", "--cmax", "8", "--xflip-strength", "0.1", "--kimg", "0.008", "--quiet")
    result = run_cli("finetune-gan", "--resume", out, "--kimg", "0.016", "--json")
    assert result.exit_code == 0, result.output
    assert "resume: copied" not in result.stderr and "resuming" in result.stderr  # the copy is the first start's
    assert json.loads(result.stdout)["resume_from"] == json.loads(straight_result.stdout)["resume_from"]
    for name in ("latest.safetensors", "latest.D.safetensors"):
        expected, _ = load_checkpoint(straight / name)
        continued, _ = load_checkpoint(out / name)
        assert all(torch.equal(tensor, continued[name_]) for name_, tensor in expected.items()), name


def test_quiet_hides_the_copy_report(checkpoints, tmp_path):
    result = finetune(checkpoints, tmp_path / "q", "--map", "2", "--kimg", "0.008", "--quiet")
    assert "resume:" not in result.stderr


def test_a_checkpoint_that_does_not_match_its_own_config_is_still_refused(checkpoints, tmp_path):
    tensors, meta = load_checkpoint(checkpoints[0])
    lying = save_checkpoint(tmp_path / "G.safetensors", tensors, kind="generator",
                            config={**MAP3, "mapping_kwargs": {"num_layers": 2}}, dataset=meta.dataset)  # fmt: skip
    line = assert_one_line_error(run_cli("finetune-gan", *RUN, "--resume-from", lying, "--kimg", "0.008",
                                         "--out", tmp_path / "x"))  # fmt: skip
    assert "G.safetensors" in line and "do not match" in line and "unexpected" in line
