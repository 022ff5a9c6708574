"""Guards against drifts that crept in once: duplicated helpers, swallowed arguments, dead options, and user
mistakes that escaped as tracebacks or as click's multi-line usage box."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import TINY_G, assert_one_line_error, run_cli

from viscoin_cli import errors
from viscoin_cli.cli import COMMAND_MODULES, app
from viscoin_cli.errors import UserError, one_line
from viscoin_cli.io.checkpoint import build_from_config, parent_record, save_checkpoint
from viscoin_cli.nets import stylegan2
from viscoin_cli.nets.classifier import Classifier, load_classifier
from viscoin_cli.nets.viscoin import load_viscoin

CLI_DIR = Path(__file__).parents[1] / "viscoin_cli" / "cli"

# --- one helper each ------------------------------------------------------------------------------------


def test_one_line_is_shared():
    from viscoin_cli.io import nvidia_pickle
    from viscoin_cli.nets import ops

    app_module = importlib.import_module("viscoin_cli.cli.app")  # `viscoin_cli.cli.app` the attribute is the app
    assert app_module.one_line is errors.one_line and nvidia_pickle.one_line is errors.one_line
    assert not hasattr(app_module, "_one_line") and not hasattr(nvidia_pickle, "_one_line")
    assert nvidia_pickle.setup_filter is ops.setup_filter and not hasattr(nvidia_pickle, "_filter")


def test_one_line_keeps_the_last_line_of_a_worker_error_and_cuts_long_text():
    worker = ValueError("Caught ValueError in DataLoader worker process 0.\nTraceback ...\nValueError: bad image")
    assert one_line(worker) == "bad image"
    assert one_line(RuntimeError("a\n  b\tc")) == "a b c"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 300), limit=200) == "x" * 200 + "..."
    assert one_line("Invalid value\nfor '--epochs'") == "Invalid value for '--epochs'"


def test_dead_code_is_gone():
    assert not hasattr(stylegan2, "load_discriminator")


def test_generate_has_no_quiet_option():
    line = assert_one_line_error(run_cli("generate", "--quiet"))
    assert "no such option --quiet" in line


# --- a checkpoint's config that cannot be built is one UserError naming the file ----------------------------


def test_build_from_config_turns_every_bad_config_into_one_line():
    for config, expected in [
        ({"arch": "resnet18", "num_classes": 2, "depth": 3}, "depth"),  # unknown key
        ({"arch": "resnet19", "num_classes": 2}, "resnet19"),  # bad value (UserError inside)
        ({"arch": "resnet18", "num_classes": "two"}, "not a whole number"),  # wrong type
        (["resnet18"], "JSON object"),  # not a mapping at all
    ]:
        with pytest.raises(UserError) as err:
            build_from_config(Classifier, config, "f.safetensors", "classifier")
        message = str(err.value)
        assert message.startswith("f.safetensors: classifier config not understood (") and expected in message
        assert "\n" not in message


def test_classifier_checkpoint_with_an_unknown_key(tmp_path):
    f = Classifier("resnet18", 10, width=4, stem="small")
    path = save_checkpoint(tmp_path / "f.safetensors", f.state_dict(), kind="classifier", config={**f.config, "x": 1})
    with pytest.raises(UserError, match=f"^{path}: classifier config not understood .*'x'"):
        load_classifier(path)


@pytest.fixture
def parents(tmp_path) -> dict[str, dict[str, str]]:
    torch.manual_seed(0)
    f = Classifier("resnet18", 10, width=4, stem="small")
    f_path = save_checkpoint(tmp_path / "f.safetensors", f.state_dict(), kind="classifier", config=f.config)
    G = stylegan2.Generator(**TINY_G)
    g_path = save_checkpoint(tmp_path / "G.safetensors", G.state_dict(), kind="generator", config=TINY_G)
    return {"classifier": parent_record(f_path), "generator": parent_record(g_path)}


@pytest.mark.parametrize(
    "config, expected",
    [
        ({"num_concepts": 4, "hidden": 4, "support_ws": None, "concepts": 4}, "'concepts'"),  # unknown key
        ({"hidden": 4}, "KeyError: 'num_concepts'"),  # missing key
        ({"num_concepts": 4, "hidden": 4, "support_ws": [99]}, "support W+ indices"),  # bad value
    ],
)
def test_viscoin_checkpoint_with_a_bad_config(tmp_path, parents, config, expected):
    path = save_checkpoint(
        tmp_path / "m.safetensors", {"x": torch.zeros(1)}, kind="viscoin", config=config, parents=parents
    )
    with pytest.raises(UserError, match=f"^{path}: viscoin config not understood") as err:
        load_viscoin(path)
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_a_bad_checkpoint_config_is_one_line_through_the_cli(tmp_path):
    path = save_checkpoint(tmp_path / "G.safetensors", {}, kind="generator", config={**TINY_G, "w_dims": 3})
    line = assert_one_line_error(run_cli("generate", "--generator", path, "--device", "cpu"))
    assert f"{path}: generator config not understood" in line and "w_dims" in line


# --- user-caused conditions in nets/ are UserErrors ---------------------------------------------------------


def test_nets_raise_user_errors_for_bad_configs_and_inputs():
    from viscoin_cli.nets.resnet import BasicBlock, ResNet

    with pytest.raises(UserError, match="stem"):
        ResNet(BasicBlock, [1, 1, 1, 1], stem="tiny")
    with pytest.raises(UserError, match="architecture"):
        stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, architecture="dense")
    D = stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    with pytest.raises(UserError, match="minibatch-std"):
        D(torch.zeros(6, 3, 16, 16), None)  # group size 4 does not divide 6


# --- commands and click's errors --------------------------------------------------------------------------


def test_commands_come_from_the_explicit_list():
    """Every command module is listed (a forgotten one would silently vanish); helpers (`_*.py`) are not."""
    modules = {p.stem for p in CLI_DIR.glob("*.py") if not p.stem.startswith("_")} - {"app", "options"}
    assert set(COMMAND_MODULES) == modules
    assert all(not name.startswith("_") for name in COMMAND_MODULES)
    registered = {c.name for c in app.registered_commands} | {g.name for g in app.registered_groups}
    assert registered == {name.replace("_", "-") for name in COMMAND_MODULES}


def test_root_help_imports_no_torch():
    code = (
        "import sys; from viscoin_cli.cli import main; sys.argv = ['viscoin', '--help']\n"
        "try: main()\nexcept SystemExit: pass\nprint('torch imported:', 'torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.splitlines()[-1] == "torch imported: False"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["pretrain-classifier", "--epochs", "0"], "'--epochs'"),  # below min=
        (["pretrain-classifier", "--epochs", "x"], "'--epochs'"),  # not an integer
        (["pretrain-classifier", "--epoch", "3"], "no such option --epoch (did you mean --epochs?)"),
        (["generate", "--batch-size", "0"], "'--batch-size'"),
        (["import-gan"], "Missing argument"),
    ],
)
def test_click_parameter_errors_are_one_line(args, expected):
    line = assert_one_line_error(run_cli(*args))
    assert expected in line and "Usage:" not in line


def test_group_errors_are_one_line_and_help_keeps_clicks_output():
    line = assert_one_line_error(run_cli("trian"))
    assert line == "error: no such command 'trian' (did you mean train?)"
    line = assert_one_line_error(run_cli("--verison"))
    assert line == "error: no such option --verison (did you mean --version?)"
    result = run_cli("pretrain-classifier", "--help")
    assert result.exit_code == 0 and "Usage" in result.stdout


# --- help reads as a user expects ----------------------------------------------------------------------------


def _wide_help(*command: str) -> str:
    from typer.testing import CliRunner

    from viscoin_cli.cli import app

    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_help_shows_flags_without_a_value_type():
    text = _wide_help("train")
    assert "--force" in text and "--json" in text and "<bool>" not in text


def test_help_reflows_docstring_paragraphs():
    text = _wide_help("evaluate")
    assert "reconstructions (the FID feature extractor is named in the output)" in text  # one line, no break
    assert "\n accuracy: test accuracy" in text and "\n faithfulness: zero the concepts" in text  # entries keep theirs


def test_reflow_keeps_examples_and_shell_continuations():
    from viscoin_cli.cli.app import _reflow

    tail = "\n\nExample: run --a \\\n--b\n\n  indented\n  block"  # kept as written
    text = "A wrapped\nsentence.\n\nkey: one\nmore\nother: two" + tail
    assert _reflow(text) == "A wrapped sentence.\n\nkey: one more\nother: two" + tail
