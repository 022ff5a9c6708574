"""--compile: torch.compile'd training steps match the eager fp32 ones, and both commands run with it.

The networks are the tiny ones of test_gan_cli.py and test_train_cli.py, at the same sizes, so the CLI runs
here reuse the compiled graphs from inductor's cache. Compiling takes tens of seconds on a CPU: slow tests.
Tolerances (fp32, inductor reorders sums): losses and outputs rtol 1e-4 / atol 1e-5, gradients rtol 1e-3 /
atol 1e-5 (relative to each tensor's largest entry).
"""

from __future__ import annotations

import json

import pytest
import torch
from conftest import run_cli, save_tiny_classifier, save_tiny_generator
from test_gan_cli import TINY as GAN_TINY
from test_train_cli import TINY as TRAIN_TINY

from viscoin_cli.runtime import maybe_compile, setup_runtime

OUT = dict(rtol=1e-4, atol=1e-5)


def assert_grads_close(eager: dict[str, torch.Tensor], compiled: dict[str, torch.Tensor]) -> None:
    assert eager.keys() == compiled.keys() and eager
    for name, grad in eager.items():
        scale = grad.abs().max().item() or 1.0
        torch.testing.assert_close(compiled[name] / scale, grad / scale, rtol=1e-3, atol=1e-5, msg=name)


def grads(module: torch.nn.Module, skip: str = "") -> dict[str, torch.Tensor]:
    """The gradients of `module`'s parameters (cloned), those whose name contains `skip` left out."""
    return {
        name: p.grad.clone()
        for name, p in module.named_parameters()
        if p.grad is not None and not (skip and skip in name)
    }


def test_help_describes_compile():
    for command in ("finetune-gan", "train"):
        result = run_cli(command, "--help")
        text = " ".join(result.stdout.split())
        assert "--compile" in text and "Opt-in torch.compile" in text and "first iterations" in text


def test_generator_and_discriminator_compile_without_graph_breaks():
    """Dynamo traces bias_act's autograd Function forward and backward: a data-dependent branch there (the
    CPU's clamp check) must stay out of compiled code, or every layer compiles on its own and hits the
    recompile limit at paper256 sizes."""
    from viscoin_cli.nets.stylegan2 import Discriminator, Generator

    G = Generator(32, 0, 32, 16, 3, mapping_kwargs=dict(num_layers=1), synthesis_kwargs=dict(channel_base=256,
                  channel_max=16, conv_clamp=256)).train()  # fmt: skip
    D = Discriminator(0, 16, 3, channel_base=256, channel_max=16, conv_clamp=256)
    ws = torch.randn(2, G.num_ws, 32)
    for module, args in ((G.synthesis, (ws,)), (D, (torch.randn(2, 3, 16, 16), None))):
        explained = torch._dynamo.explain(module)(*args)
        assert (explained.graph_count, explained.graph_break_count) == (1, 0), explained.break_reasons


@pytest.mark.slow
@pytest.mark.timeout(1800)  # compiling under a loaded CI machine: 15 min seen on 2 busy cores
def test_gan_phases_compiled_match_eager():
    """Gboth (G's synthesis and D compiled), Dmain (D compiled) and Dreg (R1: eager by design) of the
    CLI's tiny digits GAN: same logged losses and gradients. Synthesis noise is random (inductor draws its
    own numbers) but its strengths start at 0, so only their own gradients differ: left out."""
    from viscoin_cli.nets.stylegan2 import Discriminator, Generator
    from viscoin_cli.training.gan import CompiledMainPasses, GanConfig, Phase, prepare_networks
    from viscoin_cli.training.losses import StyleGAN2Loss

    cfg = GanConfig.create({"dataset": "digits", "resolution": 16, "batch_size": 8, "cbase": 256, "cmax": 16, "map": 1})
    cfg = prepare_networks(cfg)
    torch.manual_seed(0)
    G, D = Generator(**cfg.G_kwargs), Discriminator(**cfg.D_kwargs)
    assert all(p.item() == 0 for n, p in G.named_parameters() if "noise_strength" in n)
    reals = torch.randn(8, 3, 16, 16).clamp(-1, 1)
    z = torch.randn(8, G.z_dim)
    compiled = [CompiledMainPasses(G.synthesis), CompiledMainPasses(D)]
    results = {}
    for name, (synthesis, disc) in {"eager": (G.synthesis, D), "compiled": compiled}.items():
        loss = StyleGAN2Loss(G.mapping, synthesis, disc, None, style_mixing_prob=0.0, r1_gamma=1.0, pl_weight=0.0)
        for phase, net in (("Gboth", G), ("Dmain", D), ("Dreg", D)):
            CompiledMainPasses.select(compiled, Phase(phase, opt=None))  # type: ignore[arg-type]
            G.requires_grad_(net is G)
            D.requires_grad_(net is D)
            net.zero_grad(set_to_none=True)
            torch.manual_seed(1)
            logged = loss.accumulate_gradients(phase, reals, z, gain=1.0)
            results[name, phase] = logged, grads(net, skip="noise_strength")
    for phase in ("Gboth", "Dmain", "Dreg"):
        (logged_e, grads_e), (logged_c, grads_c) = results["eager", phase], results["compiled", phase]
        assert logged_e.keys() == logged_c.keys()
        for key in logged_e:
            torch.testing.assert_close(logged_c[key], logged_e[key], **OUT, msg=f"{phase} {key}")
        assert_grads_close(grads_e, grads_c)


@pytest.mark.slow
@pytest.mark.timeout(1800)  # compiling under a loaded CI machine: 15 min seen on 2 busy cores
def test_viscoin_step_compiled_matches_eager(tmp_path):
    """One VisCoIN step of the CLI's tiny digits setup (4 real + 4 synthetic images): the compiled concept
    model and f on x̃ give the eager loss, terms and gradients of Ψ, Θ, Ω."""
    from viscoin_cli.training.viscoin import VisCoINConfig

    f_path, g_path = save_tiny_classifier(tmp_path / "f.safetensors"), save_tiny_generator(tmp_path / "G.safetensors")
    given = {"classifier": str(f_path), "generator": str(g_path), "num_concepts": 8, "hidden": 8}
    given |= {"real_batch": 4, "synthetic_batch": 4}
    rt = setup_runtime("cpu", "fp32", 0)
    recipes = {c: VisCoINConfig.create({**given, "compile": c}).recipe(rt) for c in (False, True)}
    recipes[True].model.load_state_dict(recipes[False].model.state_dict())
    reals = torch.stack([recipes[False].train_set[i][0] for i in range(4)])
    results = {}
    for compile_, recipe in recipes.items():
        net = maybe_compile(recipe.model, compile_)
        rt.reseed(0, 0)
        loss, terms, _, out = recipe.loss(net, reals, torch.zeros(4, dtype=torch.long), rt)
        loss.backward()
        results[compile_] = loss, terms, out.recon, grads(recipe.model)
    (loss_e, terms_e, recon_e, grads_e), (loss_c, terms_c, recon_c, grads_c) = results[False], results[True]
    torch.testing.assert_close(loss_c, loss_e, **OUT)
    for key in terms_e:
        torch.testing.assert_close(terms_c[key], terms_e[key], **OUT, msg=key)
    torch.testing.assert_close(recon_c, recon_e, **OUT)
    assert_grads_close(grads_e, grads_c)


@pytest.mark.slow
def test_finetune_gan_with_compile_end_to_end(tmp_path):
    out = tmp_path / "run"
    result = run_cli("finetune-gan", *GAN_TINY, "--kimg", "0.016", "--compile", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["kimg"] == pytest.approx(0.016)
    assert json.loads((out / "options.json").read_text())["compile"] is True
    record = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(torch.isfinite(torch.tensor(record[k])) for k in ("loss_G", "loss_D_real", "loss_r1"))


@pytest.mark.slow
def test_train_with_compile_end_to_end(tmp_path):
    f_path, g_path = save_tiny_classifier(tmp_path / "f.safetensors"), save_tiny_generator(tmp_path / "G.safetensors")
    out = tmp_path / "run"
    args = ["--classifier", f_path, "--generator", g_path, *TRAIN_TINY, "--iterations", "2", "--compile"]
    result = run_cli("train", *args, "--out", out, "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["iterations"] == 2
    assert json.loads((out / "options.json").read_text())["compile"] is True
    assert torch.isfinite(torch.tensor(json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["loss"]))


def test_compile_off_returns_the_module_itself():
    module = torch.nn.Linear(2, 2)
    assert maybe_compile(module, False) is module
    assert maybe_compile(module, True)._orig_mod is module  # a wrapper sharing its tensors
