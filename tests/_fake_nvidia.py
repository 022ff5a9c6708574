"""Writers of pickles laid out like NVIDIA's, for tests of `viscoin_cli.io.nvidia_pickle`.

NVIDIA's own code is not used (it embeds and executes its source). Instead, `fake_modules()` installs
stand-in modules under NVIDIA's names (`torch_utils.persistence`, `dnnlib.util`, `dnnlib.tflib.network`)
so that `pickle` writes the same global names and state layout: a persistent network reduces to
`torch_utils.persistence._reconstruct_persistent_obj(meta)` with the module's `__dict__` as `meta["state"]`,
and a TF network is a `dnnlib.tflib.network.Network` whose state holds `static_kwargs`, `components` and
`variables`. The embedded source is code that creates a marker file, so running it would show.
"""

from __future__ import annotations

import contextlib
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import torch


def marker_source(marker: Path) -> str:
    """Python source that leaves a file behind if anyone executes it."""
    return f"import pathlib\npathlib.Path({str(marker)!r}).write_text('executed')\n"


class EasyDict(dict):
    """Pickled as dnnlib.util.EasyDict once `fake_modules()` is active."""


def _reconstruct_persistent_obj(_meta):  # only pickled by reference, never called
    raise AssertionError("the reader must not call the real persistence hook")


class Persistent(torch.nn.Module):
    """A torch module that pickles itself like a `@persistence.persistent_class` instance."""

    module_src = ""

    def __init__(self, class_name: str = "Node", **init_kwargs):
        super().__init__()
        self._class_name = class_name
        self._init_args = ()
        self._init_kwargs = EasyDict(init_kwargs)

    def __reduce__(self):
        meta = dict(type="class", version=6, module_src=self.module_src, class_name=self._class_name,
                    state=dict(self.__dict__))  # fmt: skip
        return _reconstruct_persistent_obj, (meta,)


class Network:
    """Pickles like `dnnlib.tflib.network.Network` (version 5, as StyleGAN2-ADA's TF code writes it)."""

    build_module_src = ""
    version = 5

    def __init__(self, name: str, static_kwargs: dict, variables: dict, components: dict | None = None):
        self.name, self.static_kwargs, self.variables = name, static_kwargs, variables
        self.components = components or {}

    def __getstate__(self):
        return dict(version=self.version, name=self.name, static_kwargs=dict(self.static_kwargs),
                    components=dict(self.components), build_module_src=self.build_module_src,
                    build_func_name=f"{self.name}_main", variables=list(self.variables.items()),
                    input_shapes=[[None, 8]], output_shapes=[[None, 3, 8, 8]], input_names=["latents_in"],
                    output_names=["images_out"])  # fmt: skip


@contextlib.contextmanager
def fake_modules(source: str = ""):
    """Make NVIDIA's module names resolve to the stand-ins above while pickling; `source` is the embedded code."""
    names = {
        "torch_utils": {},
        "torch_utils.persistence": {"_reconstruct_persistent_obj": _reconstruct_persistent_obj},
        "dnnlib": {"EasyDict": EasyDict},
        "dnnlib.util": {"EasyDict": EasyDict},
        "dnnlib.tflib": {},
        "dnnlib.tflib.network": {"Network": Network},
    }
    saved = {name: sys.modules.get(name) for name in names}
    moved = [(_reconstruct_persistent_obj, "torch_utils.persistence"), (EasyDict, "dnnlib.util"),
             (Network, "dnnlib.tflib.network")]  # fmt: skip
    old_modules = [obj.__module__ for obj, _ in moved]
    Persistent.module_src = Network.build_module_src = source
    try:
        for name, attrs in names.items():
            module = types.ModuleType(name)
            module.__dict__.update(attrs)
            sys.modules[name] = module
        for obj, module in moved:
            obj.__module__ = module
        yield
    finally:
        Persistent.module_src = Network.build_module_src = ""
        for (obj, _), module in zip(moved, old_modules, strict=True):
            obj.__module__ = module
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def dump(obj, path: Path, protocol: int = 4, source: str = "") -> Path:
    with fake_modules(source):
        path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


# ---------------------------------------------------------------------------------------------------
# Tiny networks with NVIDIA's state_dict names


def node(class_name: str = "Node", params=None, buffers=None, children=None, **init_kwargs) -> Persistent:
    mod = Persistent(class_name, **init_kwargs)
    for name, value in (params or {}).items():
        mod.register_parameter(name, None if value is None else torch.nn.Parameter(value))
    for name, value in (buffers or {}).items():
        mod.register_buffer(name, value)
    for name, child in (children or {}).items():
        mod.add_module(name, child)
    return mod


def as_persistent(module: torch.nn.Module, class_name: str, init_kwargs: dict | None = None):
    """Mirror a module tree as NVIDIA-style persistent objects with the same parameter/buffer names."""
    children = {name: as_persistent(child, type(child).__name__) for name, child in module.named_children()}
    params = {name: p.detach().clone() for name, p in module.named_parameters(recurse=False)}
    buffers = {
        name: b.detach().clone()
        for name, b in module.named_buffers(recurse=False)
        if name not in module._non_persistent_buffers_set
    }
    return node(class_name, params, buffers, children, **(init_kwargs or {}))


def tiny_generator(init_kwargs: dict, seed: int = 0) -> Persistent:
    """A generator-shaped module tree: 4 px block, 2-layer mapping; also a non-persistent buffer and a ModuleList."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g)

    def fc(n_out, n_in):
        return node("FullyConnectedLayer", {"weight": r(n_out, n_in), "bias": r(n_out)})

    conv1 = node("SynthesisLayer", {"weight": r(4, 4, 3, 3), "noise_strength": r(()), "bias": r(4)},
                 {"resample_filter": r(4, 4), "noise_const": r(4, 4)}, {"affine": fc(4, 8)})  # fmt: skip
    conv1.register_buffer("scratch", r(2), persistent=False)
    torgb = node("ToRGBLayer", {"weight": r(3, 4, 1, 1), "bias": r(3)}, children={"affine": fc(4, 8)})
    b4 = node("SynthesisBlock", {"const": r(4, 4, 4)}, {"resample_filter": r(4, 4)},
              {"conv1": conv1, "torgb": torgb})  # fmt: skip
    synthesis = node("SynthesisNetwork", children={"b4": b4})
    mapping = node("MappingNetwork", buffers={"w_avg": r(8)}, children={"fc0": fc(8, 8), "fc1": fc(8, 8)})
    mapping.extra = torch.nn.ModuleList([node("FullyConnectedLayer", {"weight": r(2, 2), "bias": None})])
    return node("Generator", children={"synthesis": synthesis, "mapping": mapping}, **init_kwargs)


def tiny_discriminator(init_kwargs: dict, seed: int = 1) -> Persistent:
    g = torch.Generator().manual_seed(seed)
    out = node("FullyConnectedLayer", {"weight": torch.randn(1, 4, generator=g), "bias": torch.zeros(1)})
    b4 = node("DiscriminatorEpilogue", children={"out": out, "mbstd": node("MinibatchStdLayer")})
    return node("Discriminator", children={"b4": b4}, **init_kwargs)


def augment_pipe(p: float) -> Persistent:
    return node("AugmentPipe", buffers={"p": torch.tensor(p), "Hz_geom": torch.ones(12)}, xflip=1.0)


def expected_state_dict(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


# ---------------------------------------------------------------------------------------------------
# TensorFlow variables of StyleGAN2's G_main / G_mapping / G_synthesis and D_main, for a tiny config


def tf_generator(kwargs: dict, rng: np.random.Generator) -> Network:
    """`kwargs` are the TF static kwargs; fmap_base counts like TF (channels = fmap_base * 2 // res)."""
    res_max, fmax, base = kwargs["resolution"], kwargs.get("fmap_max", 512), kwargs["fmap_base"] * 2
    w_dim, z_dim, c_dim = kwargs.get("dlatent_size", 512), kwargs.get("latent_size", 512), kwargs.get("label_size", 0)
    arch, n_map, img_c = kwargs.get("architecture", "skip"), kwargs.get("mapping_layers", 8), kwargs["num_channels"]

    def ch(res):
        return min(base // res, fmax)

    def a(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    syn, log2 = {}, res_max.bit_length() - 1
    for i in range(2 * log2 - 3):
        res = 2 ** ((i + 5) // 2)
        syn[f"noise{i}"] = a(1, 1, res, res)

    def layer(prefix, c_in, c_out, k=3):
        syn.update({f"{prefix}/weight": a(k, k, c_in, c_out), f"{prefix}/bias": a(c_out),
                    f"{prefix}/mod_weight": a(w_dim, c_in), f"{prefix}/mod_bias": a(c_in)})  # fmt: skip
        if k == 3:
            syn[f"{prefix}/noise_strength"] = a()

    for log_res in range(2, log2 + 1):
        res = 2**log_res
        p = f"{res}x{res}"
        if res == 4:
            syn[f"{p}/Const/const"] = a(1, ch(4), 4, 4)
            layer(f"{p}/Conv", ch(4), ch(4))
        else:
            layer(f"{p}/Conv0_up", ch(res // 2), ch(res))
            layer(f"{p}/Conv1", ch(res), ch(res))
            if arch == "resnet":
                syn[f"{p}/Skip/weight"] = a(1, 1, ch(res // 2), ch(res))
        if arch == "skip" or res == res_max:
            layer(f"{p}/ToRGB", ch(res), img_c, k=1)
    mapping = {}
    embed = kwargs.get("label_fmaps") or w_dim
    if c_dim:
        mapping.update({"LabelEmbed/weight": a(c_dim, embed), "LabelEmbed/bias": a(embed)})
    features = [z_dim + (embed if c_dim else 0)] + [kwargs.get("mapping_fmaps") or w_dim] * (n_map - 1) + [w_dim]
    for i in range(n_map):
        mapping.update({f"Dense{i}/weight": a(features[i], features[i + 1]), f"Dense{i}/bias": a(features[i + 1])})
    components = {"mapping": Network("G_mapping", {}, mapping), "synthesis": Network("G_synthesis", {}, syn)}
    return Network("G", kwargs, {"dlatent_avg": a(w_dim), "lod": np.float32(0)}, components)


def tf_discriminator(kwargs: dict, rng: np.random.Generator) -> Network:
    res_max, fmax, base = kwargs["resolution"], kwargs.get("fmap_max", 512), kwargs["fmap_base"] * 2
    arch, img_c, c_dim = kwargs.get("architecture", "resnet"), kwargs["num_channels"], kwargs.get("label_size", 0)

    def ch(res):
        return min(base // res, fmax)

    def a(*shape):
        return rng.standard_normal(shape).astype(np.float32)

    v, res = {}, res_max
    while res > 4:
        p = f"{res}x{res}"
        if res == res_max or arch == "skip":
            v.update({f"{p}/FromRGB/weight": a(1, 1, img_c, ch(res)), f"{p}/FromRGB/bias": a(ch(res))})
        v.update({f"{p}/Conv0/weight": a(3, 3, ch(res), ch(res)), f"{p}/Conv0/bias": a(ch(res))})
        v.update({f"{p}/Conv1_down/weight": a(3, 3, ch(res), ch(res // 2)), f"{p}/Conv1_down/bias": a(ch(res // 2))})
        if arch == "resnet":
            v[f"{p}/Skip/weight"] = a(1, 1, ch(res), ch(res // 2))
        res //= 2
    c4, cmap = ch(4), (kwargs.get("mapping_fmaps") or ch(4)) if c_dim else 0
    if c_dim:
        v.update({"LabelEmbed/weight": a(c_dim, cmap), "LabelEmbed/bias": a(cmap)})
        for i in range(kwargs.get("mapping_layers", 0)):
            v.update({f"Mapping{i}/weight": a(cmap, cmap), f"Mapping{i}/bias": a(cmap)})
    if arch == "skip":
        v.update({"4x4/FromRGB/weight": a(1, 1, img_c, c4), "4x4/FromRGB/bias": a(c4)})
    v.update({"4x4/Conv/weight": a(3, 3, c4 + 1, c4), "4x4/Conv/bias": a(c4)})
    v.update({"4x4/Dense0/weight": a(c4 * 16, c4), "4x4/Dense0/bias": a(c4)})
    v.update({"Output/weight": a(c4, cmap or 1), "Output/bias": a(cmap or 1)})
    return Network("D", kwargs, v)
