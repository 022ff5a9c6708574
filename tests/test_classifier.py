"""The classifier f: feature taps, [-1, 1] input convention, initial weights and checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import save_checkpoint
from viscoin_cli.nets.classifier import Classifier, load_classifier, load_initial_weights


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


@torch.no_grad()
def test_resnet50_taps_at_256():
    model = Classifier("resnet50", num_classes=200).eval()
    taps = model.forward_taps(torch.zeros(1, 3, 256, 256))
    assert taps["layer2"].shape == (1, 512, 32, 32)
    assert taps["layer3"].shape == (1, 1024, 16, 16)
    assert taps["layer4_penultimate"].shape == (1, 2048, 8, 8)
    assert taps["logits"].shape == (1, 200)


@torch.no_grad()
def test_small_digits_variant_taps_match_declared_channels_and_strides():
    model = Classifier("resnet18", num_classes=10, width=16, stem="small").eval()
    taps = model.forward_taps(torch.zeros(2, 3, 32, 32))
    for name, channels in model.tap_channels().items():
        stride = model.tap_strides()[name]
        assert taps[name].shape == (2, channels, 32 // stride, 32 // stride)
    assert taps["logits"].shape == (2, 10)


@torch.no_grad()
def test_forward_is_logits_of_forward_taps():
    model = Classifier("resnet18", num_classes=3, width=8, stem="small").eval()
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(model(x), model.forward_taps(x)["logits"])


@torch.no_grad()
def test_input_is_minus_one_to_one_with_imagenet_normalisation_inside():
    model = Classifier("resnet18", num_classes=5).eval()
    reference = torchvision.models.resnet18(num_classes=5).eval()
    reference.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 64, 64) * 2 - 1
    normalised = torchvision.transforms.functional.normalize((x + 1) / 2, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
    assert torch.allclose(model(x), reference(normalised), atol=1e-5)


def test_imagenet_weights_missing_says_which_file_where(hub):
    model = Classifier("resnet18", num_classes=10)
    with pytest.raises(UserError) as err:
        load_initial_weights(model, "imagenet")
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(hub) in message and "\n" not in message


def test_imagenet_weights_from_hub_cache_keep_a_fresh_head(hub):
    source = torchvision.models.resnet18()  # stands in for the ImageNet file: same names and shapes
    torch.save(source.state_dict(), hub / "resnet18-f37072fd.pth")
    model = Classifier("resnet18", num_classes=10)
    used = load_initial_weights(model, "imagenet")
    assert used.endswith("resnet18-f37072fd.pth")
    assert torch.equal(model.conv1.weight, source.conv1.weight)
    assert model.fc.weight.shape == (10, 512)


def test_weights_of_another_architecture_are_refused(tmp_path):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(UserError, match="not weights for this resnet34"):
        load_initial_weights(Classifier("resnet34", num_classes=10), tmp_path / "r18.pth")


def test_missing_weights_path(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        load_initial_weights(Classifier("resnet18", num_classes=10), tmp_path / "nope.pth")


def test_pretrained_weights_need_the_standard_width():
    with pytest.raises(UserError, match="standard resnet18"):
        load_initial_weights(Classifier("resnet18", num_classes=10, width=16), "imagenet")


def test_own_checkpoint_as_initial_weights(tmp_path):
    source = Classifier("resnet18", num_classes=10, width=8, stem="small")
    path = save_checkpoint(tmp_path / "f.safetensors", source.state_dict(), kind="classifier", config=source.config)
    model = Classifier("resnet18", num_classes=10, width=8, stem="small")
    load_initial_weights(model, path)
    assert torch.equal(model.fc.weight, source.fc.weight)


def test_checkpoint_round_trip(tmp_path):
    model = Classifier("resnet18", num_classes=4, width=8, stem="small")
    path = save_checkpoint(tmp_path / "f.safetensors", model.state_dict(), kind="classifier", config=model.config)
    loaded, meta = load_classifier(path)
    assert meta.config == model.config and not loaded.training
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(x), model.eval()(x))


def test_unknown_architecture():
    with pytest.raises(UserError, match="unknown classifier architecture"):
        Classifier("vgg16")
