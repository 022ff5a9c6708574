"""The values an option can take when it is a choice, declared once as types.

The CLI declares these options with these types (click then refuses any other value with one line) and
the training configs use them as field types (an `options.json` with another value is refused when it is
read), so no command checks a choice by hand. Members are strings (`DatasetName.digits == "digits"`) and
print as their value, so they go into JSON, file names and messages unchanged. Torch-free: option
declarations import this module.
"""

from __future__ import annotations

from enum import Enum

from viscoin_cli.data import DATASET_NAMES


class Choice(str, Enum):
    """A string enum whose members print as their value (`f"{Precision.fp32}"` is "fp32")."""

    def __str__(self) -> str:
        return str(self.value)

    def __format__(self, spec: str) -> str:
        return format(str(self.value), spec)


def _choice(name: str, values: tuple[str, ...]) -> type[Choice]:
    return Choice(name, [(value, value) for value in values])  # type: ignore[return-value]


DatasetName = _choice("DatasetName", DATASET_NAMES)
Precision = _choice("Precision", ("fp32", "bf16", "fp16"))
Arch = _choice("Arch", ("resnet18", "resnet34", "resnet50"))
Stem = _choice("Stem", ("imagenet", "small"))
Optimizer = _choice("Optimizer", ("adam", "sgd"))
LpipsNet = _choice("LpipsNet", ("alex", "vgg", "none"))
Augment = _choice("Augment", ("ada", "fixed", "noaug"))
FidFeatures = _choice("FidFeatures", ("classifier", "inception"))
Predictor = _choice("Predictor", ("g", "f"))
Split = _choice("Split", ("test", "train"))
Method = _choice("Method", ("viscoin", "flint", "flaem"))  # concept models: trained by `train --method`
NoiseMode = _choice("NoiseMode", ("const", "random", "none"))
ImageFormat = _choice("ImageFormat", ("png", "npy"))
PickledGenerator = _choice("PickledGenerator", ("G_ema", "G"))
