"""The classifier f: feature taps, [-1, 1] input convention, initial weights and checkpoints."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
import torchvision
from torchvision.models.resnet import BasicBlock as TorchvisionBasicBlock

from viscoin_cli.errors import UserError
from viscoin_cli.io.checkpoint import save_checkpoint
from viscoin_cli.nets.classifier import ARCHS, Classifier, load_classifier, load_initial_weights
from viscoin_cli.nets.resnet import ResNet


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


# --- our ResNet against torchvision's ---------------------------------------------------------------------

ARCH_NAMES = ("resnet18", "resnet34", "resnet50")


def _imagenet_normalise(x: torch.Tensor) -> torch.Tensor:
    return torchvision.transforms.functional.normalize((x + 1) / 2, [0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


def _randomised(model: torch.nn.Module) -> torch.nn.Module:
    """`model` with every float parameter and BatchNorm statistic redrawn, so that eval-mode BN is not trivial."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point():
                noise = torch.rand(tensor.shape, generator=generator)
                tensor.copy_(noise + 0.5 if name.endswith("running_var") else tensor + 0.1 * (noise - 0.5))
    return model


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_state_dict_names_and_shapes_are_torchvisions(arch):
    reference = getattr(torchvision.models, arch)(num_classes=10).state_dict()
    ours = Classifier(arch, num_classes=10).state_dict()
    assert [(k, tuple(v.shape), v.dtype) for k, v in ours.items()] == [
        (k, tuple(v.shape), v.dtype) for k, v in reference.items()
    ]


@pytest.mark.parametrize("arch", ARCH_NAMES)
def test_seeded_initialisation_is_torchvisions(arch):
    torch.manual_seed(3)
    reference = getattr(torchvision.models, arch)(num_classes=10).state_dict()
    torch.manual_seed(3)
    ours = Classifier(arch, num_classes=10).state_dict()
    for name, tensor in reference.items():
        assert torch.equal(ours[name], tensor), name


@pytest.mark.parametrize("arch", ARCH_NAMES)
@torch.no_grad()
def test_torchvision_weights_give_torchvisions_logits(arch):
    reference = _randomised(getattr(torchvision.models, arch)(num_classes=10)).eval()
    model = Classifier(arch, num_classes=10)
    model.load_state_dict(reference.state_dict(), strict=True)
    model.eval()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(model(x), reference(_imagenet_normalise(x)))
    plain = ResNet(*ARCHS[arch], num_classes=10)  # the bare net: no normalisation inside
    plain.load_state_dict(reference.state_dict(), strict=True)
    torch.testing.assert_close(plain.eval()(x), reference(x))


def _old_small_resnet18(width: int, num_classes: int) -> torchvision.models.ResNet:
    """The classifier as the torchvision-based class built it for width != 64 or the small stem."""
    model = torchvision.models.resnet18(num_classes=num_classes)
    model.inplanes = width
    model.conv1 = torch.nn.Conv2d(3, width, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    model.bn1 = torch.nn.BatchNorm2d(width)
    model.layer1 = model._make_layer(TorchvisionBasicBlock, width, 2)
    model.layer2 = model._make_layer(TorchvisionBasicBlock, width * 2, 2, stride=2)
    model.layer3 = model._make_layer(TorchvisionBasicBlock, width * 4, 2, stride=2)
    model.layer4 = model._make_layer(TorchvisionBasicBlock, width * 8, 2, stride=2)
    model.fc = torch.nn.Linear(width * 8, num_classes)
    return model


@torch.no_grad()
def test_checkpoints_of_the_torchvision_based_classifier_still_load(tmp_path):
    old = _randomised(_old_small_resnet18(8, 10)).eval()
    config = {"arch": "resnet18", "num_classes": 10, "width": 8, "stem": "small"}
    path = save_checkpoint(tmp_path / "f.safetensors", old.state_dict(), kind="classifier", config=config)
    model, _ = load_classifier(path)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    torch.testing.assert_close(model(x), old(_imagenet_normalise(x)))


def test_classifier_and_datasets_do_not_import_torchvision():
    code = (
        "import sys\n"
        "from viscoin_cli.nets.classifier import Classifier\n"
        "from viscoin_cli.data import load_dataset\n"
        "Classifier('resnet18', 10, width=8, stem='small')\n"
        "load_dataset('digits', 'test')[0]\n"
        "import viscoin_cli.data.images\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'torchvision'))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"
