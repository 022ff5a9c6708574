"""Read NVIDIA's StyleGAN2(-ADA) network pickles without running any code from them.

NVIDIA's pickles are not plain data: stylegan2-ada-pytorch and stylegan3 store each network as a
`torch_utils.persistence` object whose unpickling would `exec` the Python source embedded in the file,
and the TensorFlow pickles `exec` the source of their build function. Loading one with `pickle.load`
therefore runs whatever the file says. Here a restricted unpickler resolves only an allow-list of names,
each to a harmless stand-in that records data (the module's state, the TF network's variables); the
embedded source is dropped unread. Tensors are rebuilt from their bytes with `torch.load(weights_only=True)`
on the CPU. What comes out is plain data: constructor kwargs in stylegan2-ada-pytorch's form and a
state_dict with NVIDIA's PyTorch names, which our own `nets.stylegan2` networks load.

Supported: stylegan2-ada-pytorch pickles, the stylegan3 repository's StyleGAN2 pickles (kwargs normalised to
the stylegan2-ada-pytorch form) and the TensorFlow StyleGAN2 / StyleGAN2-ADA pickles (converted with the
same rules as NVIDIA's `legacy.py`; the configurations it cannot convert are refused).
"""

from __future__ import annotations

import collections
import io
import os
import pickle
import re
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from viscoin_cli.errors import UserError, one_line
from viscoin_cli.nets.ops import setup_filter

__all__ = ["NetworkData", "NvidiaPickle", "read_nvidia_pickle"]


@dataclass
class NetworkData:
    """One network of the pickle, as data: how to construct it and the weights to load into it."""

    class_name: str
    init_kwargs: dict
    state_dict: dict[str, torch.Tensor]


@dataclass
class NvidiaPickle:
    """What an NVIDIA pickle holds that we use: the networks (G, D, G_ema) and ADA's augmentation probability."""

    source: str  # "pytorch" | "tensorflow"
    networks: dict[str, NetworkData]
    augment_p: float | None


_QUOTED = 200  # at most this much of an error's text from a foreign file goes into our message


class _Refused(Exception):
    """Raised while unpickling; becomes a UserError naming the file."""


# ---------------------------------------------------------------------------------------------------
# Stand-ins that the allow-listed names resolve to. None of them runs code taken from the file.


class _Persistent:
    """A `torch_utils.persistence` object: its class name and its `__dict__` (source code discarded)."""

    def __init__(self, class_name: str, state: dict):
        self.class_name = class_name
        self.state = state


def _reconstruct_persistent(meta: Any) -> _Persistent:
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("state"), dict):
        raise _Refused("a persistent object with an unknown layout")
    return _Persistent(str(meta.get("class_name")), meta["state"])


class _PlainModule:
    """A plain torch.nn container pickled inside a network; BUILD hands us its `__dict__`."""

    class_name = "Module"

    def __new__(cls, *_args: Any) -> _PlainModule:
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        self.state = state if isinstance(state, dict) else {}


_PLAIN_MODULES = {
    name: type(f"_Plain{name}", (_PlainModule,), {"class_name": f"torch.nn.{name}"})
    for name in ("Sequential", "ModuleList", "ModuleDict", "ParameterList", "ParameterDict", "Identity")
}


class _EasyDict(dict):
    """`dnnlib.EasyDict` without its attribute magic: only the items matter."""


class _TFNetwork:
    """`dnnlib.tflib.network.Network`: keeps the pickled state; `build_module_src` is never looked at."""

    def __new__(cls, *_args: Any) -> _TFNetwork:
        obj = super().__new__(cls)
        obj.state = {}
        return obj

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise _Refused("a TensorFlow network with an unknown layout")
        self.state = state


def _load_storage(data: Any) -> torch.storage.TypedStorage:
    """Safe replacement for `torch.storage._load_from_bytes`, which would run a full unrestricted unpickle."""
    if not isinstance(data, bytes | bytearray):
        raise _Refused("a tensor storage that is not bytes")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            storage = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise _Refused(f"a tensor storage that torch.load(weights_only=True) rejects ({reason})") from None
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused("a tensor storage that holds something else")
    return storage


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_ignored: Any) -> torch.Tensor:
    """View `storage` as a tensor; requires_grad, backward hooks and metadata are dropped on purpose."""
    if not isinstance(storage, torch.storage.TypedStorage):
        raise _Refused("a tensor without a storage")
    if not (isinstance(offset, int) and all(isinstance(v, int) for v in (*size, *stride))):
        raise _Refused("a tensor with a malformed shape")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.empty(0, dtype=storage.dtype).set_(storage.untyped(), offset, tuple(size), tuple(stride))


def _rebuild_parameter(data: Any, *_ignored: Any) -> torch.Tensor:
    if not isinstance(data, torch.Tensor):
        raise _Refused("a parameter without a tensor")
    return data


class _NdarrayMark:
    """Stands for `numpy.ndarray` where a pickle passes the class as an argument; it cannot be called."""


def _np_dtype(spec: Any, *_flags: Any) -> np.dtype:
    dtype = np.dtype(spec)
    if dtype.hasobject:
        raise _Refused("a numpy array of Python objects")
    return dtype


def _np_reconstruct(subtype: Any, _shape: Any, _typecode: Any) -> np.ndarray:
    if subtype is not _NdarrayMark:
        raise _Refused("a numpy array of another class")
    return np.ndarray.__new__(np.ndarray, (0,), np.int8)  # BUILD then fills it via ndarray.__setstate__


def _np_frombuffer(buf: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    if not isinstance(dtype, np.dtype) or dtype.hasobject:
        raise _Refused("a numpy array of Python objects")
    return np.frombuffer(buf, dtype=dtype).reshape(shape, order=order).copy()


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(data, bytes):
        raise _Refused("a numpy scalar of Python objects")
    return np.frombuffer(data, dtype=dtype)[0]


def _latin1_encode(text: Any, encoding: Any = "latin1") -> bytes:
    """Protocol-2 pickles spell bytes as `_codecs.encode(str, 'latin1')`."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise _Refused("_codecs.encode with unexpected arguments")
    return text.encode("latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): _load_storage,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("dnnlib", "EasyDict"): _EasyDict,
    ("dnnlib.tflib.network", "Network"): _TFNetwork,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("__builtin__", "set"): set,
    ("__builtin__", "frozenset"): frozenset,
    ("_codecs", "encode"): _latin1_encode,
    ("numpy", "ndarray"): _NdarrayMark,
    ("numpy", "dtype"): _np_dtype,
    **{(f"numpy.{core}.multiarray", "_reconstruct"): _np_reconstruct for core in ("core", "_core")},
    **{(f"numpy.{core}.multiarray", "scalar"): _np_scalar for core in ("core", "_core")},
    **{(f"numpy.{core}.numeric", "_frombuffer"): _np_frombuffer for core in ("core", "_core")},
    **{("torch.nn.modules.container", n): c for n, c in _PLAIN_MODULES.items() if n != "Identity"},
    ("torch.nn.modules.linear", "Identity"): _PLAIN_MODULES["Identity"],
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED`; everything else, and every persistent id, is refused."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise _Refused(f"the pickle asks for {module}.{name}, which is not part of a network checkpoint") from None

    def persistent_load(self, _pid: Any) -> Any:
        raise _Refused("the pickle uses persistent ids, which NVIDIA network pickles never do")


# ---------------------------------------------------------------------------------------------------
# Reading the file


def read_nvidia_pickle(path: str | os.PathLike) -> NvidiaPickle:
    """Read an NVIDIA StyleGAN2(-ADA) pickle (PyTorch or TensorFlow) into plain kwargs and state_dicts.

    Nothing from the file is executed. Every problem with the file raises a one-line `UserError` naming it.
    """
    where = os.fspath(path)
    data = _unpickle(where)
    try:
        return _interpret(data, where)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError, RecursionError) as err:  # a malformed file
        raise UserError(
            f"{where}: unexpected content, not an NVIDIA network pickle ({one_line(err, _QUOTED)})"
        ) from None


def _interpret(data: Any, where: str) -> NvidiaPickle:
    if isinstance(data, tuple) and len(data) == 3 and all(isinstance(n, _TFNetwork) for n in data):
        tf_g, tf_d, tf_gs = data
        networks = {
            "G": _convert_tf_generator(tf_g, where, "G"),
            "D": _convert_tf_discriminator(tf_d, where),
            "G_ema": _convert_tf_generator(tf_gs, where, "Gs"),
        }
        return NvidiaPickle(source="tensorflow", networks=networks, augment_p=None)
    if isinstance(data, dict) and any(isinstance(data.get(k), _Persistent) for k in ("G", "G_ema")):
        return _read_pytorch(data, where)
    raise UserError(f"{where}: not a StyleGAN2 network pickle (expected NVIDIA's dict of G, D, G_ema or TF tuple)")


def _unpickle(where: str) -> Any:
    if not os.path.exists(where):
        raise UserError(f"{where}: no such file")
    if os.path.isdir(where):
        raise UserError(f"{where}: is a directory, expected an NVIDIA .pkl file")
    with open(where, "rb") as fh:
        head = fh.read(4)
        if not head:
            raise UserError(f"{where}: the file is empty")
        if head.startswith(b"PK\x03\x04"):
            raise UserError(f"{where}: is a zip archive (a torch.save checkpoint?), not an NVIDIA network pickle")
        if head[0] != pickle.PROTO[0]:
            raise UserError(f"{where}: not a pickle file")
        fh.seek(0)
        try:
            return _RestrictedUnpickler(fh).load()
        except _Refused as err:
            raise UserError(f"{where}: refusing to load: {err}") from None
        except (EOFError, pickle.UnpicklingError) as err:
            raise UserError(f"{where}: truncated or corrupt pickle ({one_line(err, _QUOTED)})") from None
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RuntimeError, OverflowError,
                MemoryError, RecursionError, UnicodeDecodeError) as err:  # fmt: skip
            raise UserError(f"{where}: corrupt pickle ({type(err).__name__}: {one_line(err, _QUOTED)})") from None


# ---------------------------------------------------------------------------------------------------
# PyTorch pickles (stylegan2-ada-pytorch and stylegan3's networks_stylegan2)

_G_TOP = ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels", "mapping_kwargs")
# Keys of stylegan3's flattened Generator kwargs that stylegan2-ada-pytorch's SynthesisNetwork understands.
_SYNTHESIS_KEYS = {"channel_base", "channel_max", "num_fp16_res", "architecture", "resample_filter", "conv_clamp",
                   "fp16_channels_last", "kernel_size", "use_noise", "activation"}  # fmt: skip
_SYNTHESIS_DROP = {"fused_modconv_default"}  # a speed switch of stylegan3's code; ours has no counterpart
# stylegan3's networks_stylegan2 changed these defaults, so absent values must be written out explicitly.
_SG3_SYNTHESIS_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256}
_SG3_MAPPING_DEFAULTS = {"w_avg_beta": 0.998}
_SG3_D_DEFAULTS = {"num_fp16_res": 4, "conv_clamp": 256}


def _read_pytorch(data: dict, where: str) -> NvidiaPickle:
    networks: dict[str, NetworkData] = {}
    for key in ("G", "D", "G_ema"):
        obj = data.get(key)
        if obj is None:
            continue
        if not isinstance(obj, _Persistent):
            raise UserError(f"{where}: {key} is not a persistent network object (unknown layout)")
        networks[key] = NetworkData(obj.class_name, _init_kwargs(obj, where, key), _state_dict(obj, where, key))
    for key, net in networks.items():
        expected = ("b4.out.weight",) if key == "D" else ("synthesis.b4.const", "mapping.fc0.weight")
        if not all(name in net.state_dict for name in expected):
            what = "discriminator" if key == "D" else "generator"
            raise UserError(f"{where}: {key} ({net.class_name}) is not a StyleGAN2 {what} (StyleGAN3 is not supported)")
    flattened = [k for k in ("G", "G_ema") if k in networks and _is_flattened(networks[k].init_kwargs)]
    if flattened:  # stylegan3 repository: rewrite to stylegan2-ada-pytorch's form
        for key, net in networks.items():
            net.init_kwargs = _normalise_sg3_d(net.init_kwargs) if key == "D" else _normalise_sg3_g(net, where, key)
    return NvidiaPickle(source="pytorch", networks=networks, augment_p=_augment_p(data.get("augment_pipe"), where))


def _init_kwargs(obj: _Persistent, where: str, key: str) -> dict:
    args, kwargs = obj.state.get("_init_args", ()), obj.state.get("_init_kwargs")
    if args or not isinstance(kwargs, dict):
        raise UserError(f"{where}: {key} has no constructor keyword arguments (unknown layout)")
    return _plain(kwargs)


def _plain(value: Any) -> Any:
    """EasyDict/OrderedDict → dict and numpy scalars → Python numbers, recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    return value


def _state_dict(obj: _Persistent | _PlainModule, where: str, key: str) -> dict[str, torch.Tensor]:
    """Parameters and persistent buffers with torch's dotted state_dict names, walking `_modules`."""
    out: dict[str, torch.Tensor] = {}

    def walk(state: Any, prefix: str) -> None:
        if not isinstance(state, dict):
            raise UserError(f"{where}: {(key + '.' + prefix).rstrip('.')} is not a torch module (unknown layout)")
        skip = state.get("_non_persistent_buffers_set") or set()
        tensors = [*(state.get("_parameters") or {}).items()]
        tensors += [(n, t) for n, t in (state.get("_buffers") or {}).items() if n not in skip]
        for name, tensor in tensors:
            if tensor is None:
                continue
            if not isinstance(tensor, torch.Tensor):
                raise UserError(f"{where}: {key}.{prefix}{name} is not a tensor (unknown layout)")
            out[prefix + name] = tensor.detach()
        for name, child in (state.get("_modules") or {}).items():
            if child is None:
                continue
            if not isinstance(child, _Persistent | _PlainModule):
                raise UserError(f"{where}: {key}.{prefix}{name} is not a network module (unknown layout)")
            walk(getattr(child, "state", None), f"{prefix}{name}.")

    walk(obj.state, "")
    return out


def _is_flattened(kwargs: dict) -> bool:
    return "synthesis_kwargs" not in kwargs and any(k not in _G_TOP for k in kwargs)


def _normalise_sg3_g(net: NetworkData, where: str, key: str) -> dict:
    kwargs = dict(net.init_kwargs)
    synthesis = {k: kwargs.pop(k) for k in list(kwargs) if k not in _G_TOP}
    unknown = sorted(set(synthesis) - _SYNTHESIS_KEYS - _SYNTHESIS_DROP)
    if unknown:
        raise UserError(f"{where}: {key} has a setting StyleGAN2 does not know: {unknown[0]!r} (unsupported network)")
    synthesis = {k: v for k, v in synthesis.items() if k in _SYNTHESIS_KEYS}
    kwargs["mapping_kwargs"] = _with_defaults(kwargs.get("mapping_kwargs", {}), _SG3_MAPPING_DEFAULTS)
    kwargs["synthesis_kwargs"] = _with_defaults(synthesis, _SG3_SYNTHESIS_DEFAULTS)
    return kwargs


def _normalise_sg3_d(kwargs: dict) -> dict:
    return _with_defaults(kwargs, _SG3_D_DEFAULTS)


def _with_defaults(kwargs: dict, defaults: dict) -> dict:
    return {**kwargs, **{k: v for k, v in defaults.items() if k not in kwargs}}


def _augment_p(pipe: Any, where: str) -> float | None:
    if pipe is None:
        return None
    p = (pipe.state.get("_buffers") or {}).get("p") if isinstance(pipe, _Persistent) else None
    if not isinstance(p, torch.Tensor) or p.numel() != 1:
        raise UserError(f"{where}: augment_pipe has no probability buffer p (unknown layout)")
    return float(p)


# ---------------------------------------------------------------------------------------------------
# TensorFlow pickles: the same kwarg mapping and weight layout changes as NVIDIA's legacy.py.

# Kwargs legacy.py accepts and ignores (sampling-time or training-time settings, no effect on the weights).
_TF_G_IGNORED = {"truncation_psi", "truncation_cutoff", "style_mixing_prob", "structure", "conditioning",
                 "fused_modconv"}  # fmt: skip
_TF_D_IGNORED = {"structure", "conditioning"}
_DEFAULT_FILTER = [1, 3, 3, 1]


class _TFKwargs:
    """Looks up TF static kwargs and remembers which were consumed, so that unknown ones can be refused."""

    def __init__(self, net: _TFNetwork, ignored: set[str]):
        self.values = _plain(net.state.get("static_kwargs") or {})
        self.known = set(ignored)

    def __call__(self, name: str, default: Any = None) -> Any:
        self.known.add(name)
        return self.values.get(name, default)

    def unknown(self) -> list[str]:
        return sorted(set(self.values) - self.known)


def _tf_variables(net: _TFNetwork, where: str, prefix: str = "") -> dict[str, np.ndarray]:
    """All variables of a TF network and its components, named like 'synthesis/4x4/Conv/weight'."""
    out = {}
    for name, value in net.state.get("variables") or []:
        if not isinstance(value, np.ndarray):
            value = np.asarray(value, dtype=np.float32)
        out[prefix + str(name)] = value
    for name, comp in (net.state.get("components") or {}).items():
        if not isinstance(comp, _TFNetwork):
            raise UserError(f"{where}: TensorFlow component {prefix}{name} is not a network (unknown layout)")
        out.update(_tf_variables(comp, where, f"{prefix}{name}/"))
    return out


def _check_tf_version(net: _TFNetwork, where: str, role: str) -> None:
    version = net.state.get("version")
    if not isinstance(version, int) or version < 4:
        raise UserError(f"{where}: TensorFlow {role} has pickle version {version}; only StyleGAN2 (4+) is supported")


def _default(value: Any, fallback: int) -> int:
    return fallback if value is None else value


def _channels(base: int, cmax: int, res: int) -> int:
    return min(base // res, cmax)


class _Converter:
    """Fills a state_dict from TF variables, checking each tensor's shape against the PyTorch layout."""

    def __init__(self, tf: dict[str, np.ndarray], where: str, role: str):
        self.tf, self.where, self.role, self.out = tf, where, role, {}

    def get(self, name: str) -> np.ndarray:
        if name not in self.tf:
            raise UserError(f"{self.where}: TensorFlow {self.role} has no variable {name!r} (unsupported config)")
        return self.tf[name]

    def put(self, name: str, value: np.ndarray | torch.Tensor, shape: tuple[int, ...]) -> None:
        if isinstance(value, np.ndarray):
            value = torch.from_numpy(np.array(value, dtype=np.float32, order="C"))  # a copy, 0-d kept 0-d
        if tuple(value.shape) != tuple(shape):
            raise UserError(
                f"{self.where}: TensorFlow {self.role} tensor for {name} has shape {list(value.shape)}, "
                f"expected {list(shape)} (unsupported config)"
            )
        self.out[name] = value.clone()

    def buffer(self, name: str, tensor: torch.Tensor) -> None:
        """A buffer NVIDIA's constructor computes (a resample filter), not stored in the TF pickle."""
        self.out[name] = tensor.clone()

    def dense(self, name: str, tf_name: str, out_f: int, in_f: int, style: bool = False) -> None:
        """A fully connected layer; `style`: a modulation affine (TF adds 1 after its bias, PyTorch folds it in)."""
        weight, bias = ("mod_weight", "mod_bias") if style else ("weight", "bias")
        self.put(f"{name}.weight", self.get(f"{tf_name}/{weight}").T, (out_f, in_f))
        self.put(f"{name}.bias", self.get(f"{tf_name}/{bias}") + (1.0 if style else 0.0), (out_f,))

    def conv(self, name: str, tf_name: str, out_c: int, in_c: int, k: int, flip: bool = False, bias: bool = True):
        w = self.get(f"{tf_name}/weight")  # TF: [kh, kw, in, out]
        w = w[::-1, ::-1] if flip else w  # TF's transposed convolution sees the kernel rotated by 180 degrees
        self.put(f"{name}.weight", w.transpose(3, 2, 0, 1), (out_c, in_c, k, k))
        if bias:
            self.put(f"{name}.bias", self.get(f"{tf_name}/bias"), (out_c,))


def _convert_tf_generator(net: _TFNetwork, where: str, role: str) -> NetworkData:
    _check_tf_version(net, where, role)
    kw = _TFKwargs(net, _TF_G_IGNORED)
    w_avg_beta = kw("w_avg_beta", 0.995)
    mapping = dict(
        num_layers=kw("mapping_layers", 8), embed_features=kw("label_fmaps"), layer_features=kw("mapping_fmaps"),
        activation=kw("mapping_nonlinearity", "lrelu"), lr_multiplier=kw("mapping_lrmul", 0.01),
        w_avg_beta=1 if w_avg_beta is None else w_avg_beta,
    )  # fmt: skip
    synthesis = dict(
        channel_base=kw("fmap_base", 16384) * 2, channel_max=kw("fmap_max", 512), num_fp16_res=kw("num_fp16_res", 0),
        conv_clamp=kw("conv_clamp"), architecture=kw("architecture", "skip"),
        resample_filter=kw("resample_kernel", _DEFAULT_FILTER), use_noise=kw("use_noise", True),
        activation=kw("nonlinearity", "lrelu"),
    )  # fmt: skip
    kwargs = dict(
        z_dim=kw("latent_size", 512), c_dim=kw("label_size", 0), w_dim=kw("dlatent_size", 512),
        img_resolution=kw("resolution", 1024), img_channels=kw("num_channels", 3),
        mapping_kwargs=mapping, synthesis_kwargs=synthesis,
    )  # fmt: skip
    if kw.unknown():
        raise UserError(f"{where}: TensorFlow {role} has the unsupported setting {kw.unknown()[0]!r} (only StyleGAN2 "
                        f"config E/F and StyleGAN2-ADA generators can be converted)")  # fmt: skip
    tf = _tf_variables(net, where)
    if any(re.fullmatch(r"ToRGB_lod\d+/.*", name) for name in tf):
        raise UserError(f"{where}: TensorFlow {role} uses the progressive-growing layout (ToRGB_lod), not supported")
    arch = synthesis["architecture"]
    if arch not in ("orig", "skip", "resnet"):
        raise UserError(f"{where}: TensorFlow {role} has the unknown architecture {arch!r}")
    res_max, w_dim, img_c = kwargs["img_resolution"], kwargs["w_dim"], kwargs["img_channels"]
    if res_max < 4 or res_max & (res_max - 1):
        raise UserError(f"{where}: TensorFlow {role} has resolution {res_max}, expected a power of two")
    cv = _Converter(tf, where, role)
    rf = setup_filter(synthesis["resample_filter"])
    rf_default = setup_filter(_DEFAULT_FILTER)

    def layer(name: str, tf_name: str, in_c: int, out_c: int, res: int, noise: int, up: bool) -> None:
        cv.conv(name, tf_name, out_c, in_c, 3, flip=up, bias=False)
        if synthesis["use_noise"]:
            cv.put(f"{name}.noise_strength", cv.get(f"{tf_name}/noise_strength"), ())
        cv.put(f"{name}.bias", cv.get(f"{tf_name}/bias"), (out_c,))
        cv.buffer(f"{name}.resample_filter", rf if up else rf_default)
        if synthesis["use_noise"]:
            cv.put(f"{name}.noise_const", cv.get(f"synthesis/noise{noise}")[0, 0], (res, res))
        cv.dense(f"{name}.affine", tf_name, in_c, w_dim, style=True)

    log2 = res_max.bit_length() - 1
    for log_res in range(2, log2 + 1):
        res = 2**log_res
        out_c = _channels(synthesis["channel_base"], synthesis["channel_max"], res)
        in_c = _channels(synthesis["channel_base"], synthesis["channel_max"], res // 2) if res > 4 else 0
        p, tfp = f"synthesis.b{res}", f"synthesis/{res}x{res}"
        if res == 4:
            cv.put(f"{p}.const", cv.get(f"{tfp}/Const/const")[0], (out_c, 4, 4))
        cv.buffer(f"{p}.resample_filter", rf)
        if res > 4:
            layer(f"{p}.conv0", f"{tfp}/Conv0_up", in_c, out_c, res, 2 * log_res - 5, up=True)
        layer(f"{p}.conv1", f"{tfp}/Conv" if res == 4 else f"{tfp}/Conv1", out_c, out_c, res, 2 * log_res - 4, up=False)
        if res == res_max or arch == "skip":
            cv.conv(f"{p}.torgb", f"{tfp}/ToRGB", img_c, out_c, 1)
            cv.dense(f"{p}.torgb.affine", f"{tfp}/ToRGB", out_c, w_dim, style=True)
        if res > 4 and arch == "resnet":
            cv.conv(f"{p}.skip", f"{tfp}/Skip", out_c, in_c, 1, flip=True, bias=False)
            cv.buffer(f"{p}.skip.resample_filter", rf)

    cv.put("mapping.w_avg", cv.get("dlatent_avg"), (w_dim,))
    c_dim, z_dim = kwargs["c_dim"], kwargs["z_dim"]
    embed = 0 if c_dim == 0 else _default(mapping["embed_features"], w_dim)
    hidden = _default(mapping["layer_features"], w_dim)
    features = [z_dim + embed] + [hidden] * (mapping["num_layers"] - 1) + [w_dim]
    if c_dim > 0:
        cv.dense("mapping.embed", "mapping/LabelEmbed", embed, c_dim)
    for i in range(mapping["num_layers"]):
        cv.dense(f"mapping.fc{i}", f"mapping/Dense{i}", features[i + 1], features[i])
    return NetworkData("Generator", kwargs, cv.out)


def _convert_tf_discriminator(net: _TFNetwork, where: str) -> NetworkData:
    _check_tf_version(net, where, "D")
    kw = _TFKwargs(net, _TF_D_IGNORED)
    act = kw("nonlinearity", "lrelu")
    kwargs = dict(
        c_dim=kw("label_size", 0), img_resolution=kw("resolution", 1024), img_channels=kw("num_channels", 3),
        architecture=kw("architecture", "resnet"), channel_base=kw("fmap_base", 16384) * 2,
        channel_max=kw("fmap_max", 512), num_fp16_res=kw("num_fp16_res", 0), conv_clamp=kw("conv_clamp"),
        cmap_dim=kw("mapping_fmaps"),
        block_kwargs=dict(activation=act, resample_filter=kw("resample_kernel", _DEFAULT_FILTER),
                          freeze_layers=kw("freeze_layers", 0)),
        mapping_kwargs=dict(num_layers=kw("mapping_layers", 0), embed_features=kw("mapping_fmaps"),
                            layer_features=kw("mapping_fmaps"), activation=act, lr_multiplier=kw("mapping_lrmul", 0.1)),
        epilogue_kwargs=dict(mbstd_group_size=kw("mbstd_group_size"), mbstd_num_channels=kw("mbstd_num_features", 1),
                             activation=act),
    )  # fmt: skip
    if kw.unknown():
        raise UserError(f"{where}: TensorFlow D has the unsupported setting {kw.unknown()[0]!r} (only StyleGAN2 "
                        f"config E/F and StyleGAN2-ADA discriminators can be converted)")  # fmt: skip
    tf = _tf_variables(net, where)
    res_max, img_c, c_dim = kwargs["img_resolution"], kwargs["img_channels"], kwargs["c_dim"]
    if res_max < 4 or res_max & (res_max - 1):
        raise UserError(f"{where}: TensorFlow D has resolution {res_max}, expected a power of two")
    for name, value in list(tf.items()):  # progressive-growing names: rename, and the architecture is 'orig'
        match = re.fullmatch(r"FromRGB_lod(\d+)/(.*)", name)
        if match:
            res = res_max // 2 ** int(match.group(1))
            tf[f"{res}x{res}/FromRGB/{match.group(2)}"] = value
            kwargs["architecture"] = "orig"
    arch = kwargs["architecture"]
    if arch not in ("orig", "skip", "resnet"):
        raise UserError(f"{where}: TensorFlow D has the unknown architecture {arch!r}")
    cv = _Converter(tf, where, "D")
    rf = setup_filter(kwargs["block_kwargs"]["resample_filter"])
    rf_default = setup_filter(_DEFAULT_FILTER)

    def ch(res: int) -> int:
        return _channels(kwargs["channel_base"], kwargs["channel_max"], res)

    def conv(name: str, tf_name: str, out_c: int, in_c: int, k: int, f: torch.Tensor, bias: bool = True) -> None:
        cv.conv(name, tf_name, out_c, in_c, k, bias=bias)
        cv.buffer(f"{name}.resample_filter", f)

    res = res_max
    while res > 4:
        tmp_c, out_c, tfp = ch(res), ch(res // 2), f"{res}x{res}"
        cv.buffer(f"b{res}.resample_filter", rf)
        if res == res_max or arch == "skip":
            conv(f"b{res}.fromrgb", f"{tfp}/FromRGB", tmp_c, img_c, 1, rf_default)
        conv(f"b{res}.conv0", f"{tfp}/Conv0", tmp_c, tmp_c, 3, rf_default)
        conv(f"b{res}.conv1", f"{tfp}/Conv1_down", out_c, tmp_c, 3, rf)
        if arch == "resnet":
            conv(f"b{res}.skip", f"{tfp}/Skip", out_c, tmp_c, 1, rf, bias=False)
        res //= 2

    c4 = ch(4)
    cmap_dim = 0 if c_dim == 0 else _default(kwargs["cmap_dim"], c4)
    if c_dim > 0:
        mk = kwargs["mapping_kwargs"]
        embed, hidden = _default(mk["embed_features"], cmap_dim), _default(mk["layer_features"], cmap_dim)
        features = [embed] + [hidden] * (mk["num_layers"] - 1) + [cmap_dim]
        cv.dense("mapping.embed", "LabelEmbed", embed, c_dim)
        for i in range(mk["num_layers"]):
            cv.dense(f"mapping.fc{i}", f"Mapping{i}", features[i + 1], features[i])
    if arch == "skip":
        conv("b4.fromrgb", "4x4/FromRGB", c4, img_c, 1, rf_default)
    mbstd = kwargs["epilogue_kwargs"]["mbstd_num_channels"]
    conv("b4.conv", "4x4/Conv", c4, c4 + mbstd, 3, rf_default)
    cv.dense("b4.fc", "4x4/Dense0", c4, c4 * 16)
    cv.dense("b4.out", "Output", 1 if cmap_dim == 0 else cmap_dim, c4)
    return NetworkData("Discriminator", kwargs, cv.out)
