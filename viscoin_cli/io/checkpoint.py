"""The checkpoint format: self-describing safetensors files, written atomically.

This module is the only place that reads or writes model files. A checkpoint's header metadata
holds everything needed to rebuild the model without any other file:

    format, format_version   "viscoin", "1"
    kind                     classifier | generator | discriminator | viscoin | flint | flaem | directions | state
    config                   JSON: the architecture's constructor arguments
    dataset                  JSON: name, class names, resolution, channels (or null)
    step                     training step / epoch the weights come from
    version                  viscoin package version that wrote the file
    parents                  JSON: {role: {"sha256": ..., "path": ...}} of the checkpoints it depends on
    extra                    JSON: anything else the kind needs (e.g. metrics)

`state` files (`latest.state.safetensors`) hold nested training state (optimizer, EMA, counters):
tensors go into the file body, the nesting and plain values into the `state` metadata entry.
Nothing here uses pickle.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

from viscoin_cli import __version__
from viscoin_cli.errors import UserError, one_line

T = TypeVar("T")
FORMAT = "viscoin"
FORMAT_VERSION = "1"
KINDS = ("classifier", "generator", "discriminator", "viscoin", "flint", "flaem", "directions", "state")
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


@dataclass
class CheckpointMeta:
    """What a checkpoint says about itself."""

    path: Path
    kind: str
    config: dict[str, Any]
    dataset: dict[str, Any] | None = None
    step: int = 0
    version: str = ""
    parents: dict[str, dict[str, str]] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)
    created: str = ""


# ---------------------------------------------------------------------------------------------------
# Reading


def _read_header(path: Path) -> dict[str, Any]:
    """Parse and validate the safetensors header, with a one-line error for every way it can be wrong."""
    if not path.exists():
        raise UserError(f"{path}: no such file")
    if path.is_dir():
        raise UserError(f"{path}: is a directory, expected a .safetensors checkpoint")
    size = path.stat().st_size
    with open(path, "rb") as fh:
        prefix = fh.read(8)
        if len(prefix) < 8:
            raise UserError(f"{path}: not a safetensors file (only {size} bytes)")
        header_len = int.from_bytes(prefix, "little")
        first = fh.read(1)
        if header_len > _MAX_HEADER or first != b"{":
            raise UserError(f"{path}: not a safetensors file")
        if 8 + header_len > size:
            raise UserError(f"{path}: truncated checkpoint (the header alone needs {8 + header_len} bytes)")
        raw = first + fh.read(header_len - 1)
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise UserError(f"{path}: not a safetensors file (unreadable header)") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: not a safetensors file (unreadable header)")
    data_end = 0
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            data_end = max(data_end, int(entry["data_offsets"][1]))
        except (KeyError, IndexError, TypeError, ValueError):
            raise UserError(f"{path}: corrupt safetensors header (entry {name!r})") from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise UserError(f"{path}: truncated checkpoint ({size} of {expected} bytes)")
    if size > expected:
        raise UserError(f"{path}: corrupt checkpoint ({size - expected} unexpected trailing bytes)")
    return header


def _json_field(path: Path, metadata: Mapping[str, str], key: str, default: Any) -> Any:
    if key not in metadata:
        return default
    try:
        return json.loads(metadata[key])
    except json.JSONDecodeError:
        raise UserError(f"{path}: corrupt checkpoint metadata ({key!r} is not JSON)") from None


def read_meta(path: str | os.PathLike, kind: str | tuple[str, ...] | None = None) -> CheckpointMeta:
    """Read a checkpoint's metadata (not its tensors); check its kind (or one of several) when given."""
    path = Path(path)
    metadata = _read_header(path).get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise UserError(f"{path}: a safetensors file without viscoin metadata (not written by viscoin)")
    found = metadata.get("kind", "?")
    kinds = (kind,) if isinstance(kind, str) else kind
    if kinds is not None and found not in kinds:
        expected = " or ".join(kinds)
        raise UserError(f"{path}: is a {found} checkpoint, expected a {expected} checkpoint")
    try:
        step = int(metadata.get("step", "0"))
    except ValueError:
        raise UserError(f"{path}: corrupt checkpoint metadata (step)") from None
    return CheckpointMeta(
        path=path,
        kind=found,
        config=_json_field(path, metadata, "config", {}),
        dataset=_json_field(path, metadata, "dataset", None),
        step=step,
        version=metadata.get("version", ""),
        parents=_json_field(path, metadata, "parents", {}),
        extra=_json_field(path, metadata, "extra", {}),
        created=metadata.get("created", ""),
    )


def load_checkpoint(
    path: str | os.PathLike, kind: str | None = None, device: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], CheckpointMeta]:
    """Load tensors and metadata; `kind` makes a checkpoint of another kind a one-line error."""
    meta = read_meta(path, kind)
    try:
        tensors = load_file(str(meta.path), device=str(device))
    except Exception as err:  # header was valid, so this is damage inside the data
        raise UserError(f"{meta.path}: corrupt checkpoint ({err})") from None
    return tensors, meta


def load_into(module: torch.nn.Module, tensors: Mapping[str, torch.Tensor], source: object) -> None:
    """Copy `tensors` into `module` strictly, reporting any mismatch in one line that names `source`."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    wrong = [k for k in own if k in tensors and tuple(own[k].shape) != tuple(tensors[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        for label, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if names:
                parts.append(f"{len(names)} {label} (e.g. {names[0]})")
        raise UserError(f"{source}: weights do not match the network's configuration: {', '.join(parts)}")
    module.load_state_dict(tensors, strict=True)


# Bounds on the sizes a config read from a file may ask for (wherever the key sits in it), checked before
# anything is built: a 70 KB file must not be able to ask for terabytes. Far wider than any published network.
CONFIG_BOUNDS: dict[str, tuple[int, int]] = {
    "z_dim": (0, 1 << 14),
    "w_dim": (1, 1 << 14),
    "c_dim": (0, 1 << 16),
    "img_resolution": (4, 1 << 13),
    "img_channels": (1, 4),
    "num_layers": (0, 64),
    "channel_base": (1, 1 << 22),
    "channel_max": (1, 1 << 14),
    "cmap_dim": (0, 1 << 14),
    "num_fp16_res": (0, 16),
    "mbstd_group_size": (0, 1 << 10),
    "mbstd_num_channels": (0, 1 << 10),
    "width": (1, 1 << 12),
    "num_classes": (2, 1 << 16),
    "num_concepts": (1, 1 << 14),
    "hidden": (1, 1 << 14),
}
# Weights a network built from a file may have (4 GiB as float32); the largest built here, a 1024 px StyleGAN2
# or a ResNet50, has tens of millions.
MAX_PARAMETERS = 1 << 30


def check_config_bounds(config: Any, where: str = "") -> None:
    """Raise ValueError naming the first size in `config` (nested dicts included) outside CONFIG_BOUNDS."""
    if not isinstance(config, Mapping):
        return
    for key, value in config.items():
        name = f"{where}.{key}" if where else str(key)
        if isinstance(value, Mapping):
            check_config_bounds(value, name)
        elif key in CONFIG_BOUNDS and value is not None:
            low, high = CONFIG_BOUNDS[key]
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"{name} = {value!r} is not a whole number")
            if not low <= value <= high:
                raise ValueError(f"{name} = {value} is outside {low}..{high}")


def _broadcast(*shapes: torch.Size) -> torch.Size:
    """`torch.broadcast_shapes`, which imports sympy on first use."""
    out: list[int] = []
    for dims in zip(*(reversed([1] * (max(map(len, shapes)) - len(s)) + list(s)) for s in shapes), strict=True):
        sizes = {d for d in dims if d != 1}
        if len(sizes) > 1:
            raise RuntimeError(f"shapes {', '.join(str(list(s)) for s in shapes)} do not broadcast")
        out.append(sizes.pop() if sizes else 1)
    return torch.Size(reversed(out))


def _empty_like(like: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`torch.empty_like` (whose meta kernel imports sympy), keeping a channels-last layout."""
    last = like.ndim == 4 and not like.is_contiguous() and like.is_contiguous(memory_format=torch.channels_last)
    layout = torch.channels_last if last else torch.contiguous_format
    return torch.empty(like.shape, dtype=dtype, device=like.device, memory_format=layout)


def _elementwise(func: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> Any:
    """`mul`/`div`/`outer` of meta tensors as an uninitialised tensor of the shape and dtype the op gives; the
    op itself where its arguments are anything but the plain ones a constructor passes."""
    division = func in (torch.div, torch.Tensor.div)
    options = {"rounding_mode"} if division and kwargs.get("rounding_mode") in (None, "trunc", "floor") else set()
    if len(args) != 2 or kwargs.keys() - options:
        return func(*args, **kwargs)
    if func in (torch.outer, torch.Tensor.outer):
        a, b = args
        if not (isinstance(b, torch.Tensor) and a.ndim == b.ndim == 1):
            return func(*args, **kwargs)
        return torch.empty(a.numel(), b.numel(), dtype=torch.result_type(a, b), device="meta")
    shape = _broadcast(*(x.shape for x in args if isinstance(x, torch.Tensor)))
    dtype = torch.result_type(*args)
    if division and kwargs.get("rounding_mode") is None and not (dtype.is_floating_point or dtype.is_complex):
        dtype = torch.get_default_dtype()  # true division of integers
    like = next((x for x in args if isinstance(x, torch.Tensor) and x.shape == shape), None)
    out = _empty_like(like, dtype) if like is not None else torch.empty(shape, dtype=dtype, device="meta")
    return out.requires_grad_(torch.is_grad_enabled() and any(getattr(x, "requires_grad", False) for x in args))


class _ShapesOnly(TorchFunctionMode):
    """Inside a meta build: initialisers (`torch.nn.init`, `Tensor.normal_`...) leave a meta tensor as it is,
    `randn`/`rand` on meta become plain allocations and `mul`/`div`/`outer` of meta tensors allocate their
    result without running. A count needs shapes only, and these ops' meta kernels are Python ones whose first
    use imports sympy and torch._dynamo: seconds of CPU, most of a model load. Anything else (a tensor on
    another device included) runs as it is."""

    _RANDOM = ("normal_", "uniform_", "bernoulli_", "exponential_", "log_normal_", "cauchy_", "geometric_", "random_")
    _FILLS = frozenset(
        [getattr(torch.Tensor, name) for name in (*_RANDOM, "erfinv_")]
        + [getattr(torch.nn.init, name) for name in torch.nn.init.__all__ if name.endswith("_")]
    )
    _ELEMENTWISE = (torch.mul, torch.Tensor.mul, torch.div, torch.Tensor.div, torch.outer, torch.Tensor.outer)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in self._FILLS and getattr(args[0] if args else kwargs.get("tensor"), "is_meta", False):
            return args[0] if args else kwargs["tensor"]
        if func in (torch.randn, torch.rand) and torch.device(kwargs.get("device") or "meta").type == "meta":
            return torch.empty(*args, **{k: v for k, v in kwargs.items() if k != "generator"})  # `empty`'s signature
        tensors = [x for x in args if isinstance(x, torch.Tensor)]
        if func in self._ELEMENTWISE and tensors and all(x.is_meta for x in tensors):
            return _elementwise(func, args, kwargs)
        return func(*args, **kwargs)


def _count_parameters(build: Callable[..., T], config: Mapping[str, Any]) -> int | None:
    """The number of weights `build(**config)` would allocate, found by building it on the meta device (no
    memory) without initialising anything (`_ShapesOnly`); None when the network cannot be built there (then
    the bounds above are the guard)."""
    try:
        with torch.device("meta"), _ShapesOnly():
            probe = build(**config)
    except (NotImplementedError, RuntimeError):
        return None
    if not isinstance(probe, torch.nn.Module):
        return None
    return sum(t.numel() for t in probe.parameters()) + sum(t.numel() for t in probe.buffers())


def build_from_config(build: Callable[..., T], config: Any, source: object, what: str) -> T:
    """`build(**config)` for a config read from a file (a checkpoint, an NVIDIA pickle).

    The file decides the arguments, so an unknown or missing key or a bad value is the user's problem,
    not a bug: it becomes one `UserError` line naming `source` and `what` was being built. Sizes are
    checked against CONFIG_BOUNDS and the network's weight count against MAX_PARAMETERS first.
    """
    try:
        if not isinstance(config, Mapping):
            raise TypeError(f"expected a JSON object, got {type(config).__name__}")
        check_config_bounds(config)
        count = _count_parameters(build, config)
        if count is not None and count > MAX_PARAMETERS:
            limit = MAX_PARAMETERS / 1e9
            raise ValueError(f"{count / 1e9:.1f} billion weights, more than the {limit:.1f} billion a network may have")
        return build(**config)
    except (TypeError, ValueError, KeyError, IndexError, AssertionError, UserError, ZeroDivisionError) as err:
        reason = one_line(err)
        if not isinstance(err, UserError) and reason != type(err).__name__:
            reason = f"{type(err).__name__}: {reason}"  # "KeyError: 'num_concepts'" says more than "'num_concepts'"
        raise UserError(f"{source}: {what} config not understood ({reason})") from None


# ---------------------------------------------------------------------------------------------------
# Writing


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: Path, write) -> Path:
    """Write via a temporary file in the same folder and rename, so a crash never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates files 0600; give them the usual permissions
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _cpu_tensors(tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached, contiguous CPU tensors; tensors sharing memory are cloned (safetensors forbids sharing)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, int]] = set()
    for name, tensor in tensors.items():
        tensor = tensor.detach().to("cpu").contiguous()
        key = (tensor.untyped_storage().data_ptr(), tensor.storage_offset())
        if tensor.numel() and key in seen:
            tensor = tensor.clone()
        seen.add(key)
        out[name] = tensor
    return out


def save_checkpoint(
    path: str | os.PathLike,
    tensors: Mapping[str, torch.Tensor],
    *,
    kind: str,
    config: Mapping[str, Any],
    dataset: Mapping[str, Any] | None = None,
    step: int = 0,
    parents: Mapping[str, Mapping[str, str]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write `tensors` (usually a state_dict) with self-describing metadata, atomically."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}")
    metadata = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "kind": kind,
        "config": json.dumps(dict(config), sort_keys=True),
        "dataset": json.dumps(dict(dataset) if dataset is not None else None, sort_keys=True),
        "step": str(int(step)),
        "version": __version__,
        "parents": json.dumps({k: dict(v) for k, v in (parents or {}).items()}, sort_keys=True),
        "extra": json.dumps(dict(extra or {}), sort_keys=True),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    cpu = _cpu_tensors(tensors)
    return atomic_write(Path(path), lambda tmp: save_file(cpu, str(tmp), metadata=metadata))


def copy_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> Path:
    """An atomic byte-for-byte copy (e.g. best.safetensors from latest.safetensors)."""
    return atomic_write(Path(dst), lambda tmp: shutil.copyfile(src, tmp))


# ---------------------------------------------------------------------------------------------------
# Nested training state (optimizer, EMA, counters) in the same format


def _flatten(value: Any, key: str, tensors: dict[str, torch.Tensor]) -> Any:
    """Move tensors out of a nested structure into `tensors`; return a JSON skeleton pointing at them."""
    if isinstance(value, torch.Tensor):
        tensors[key] = value
        return {"__tensor__": key}
    if isinstance(value, Mapping):  # list of pairs keeps non-string keys (optimizer state uses ints)
        return {"__dict__": [[k, _flatten(v, f"{key}.{k}", tensors)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        items = [_flatten(v, f"{key}.{i}", tensors) for i, v in enumerate(value)]
        return {"__tuple__": items} if isinstance(value, tuple) else items
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot store {type(value).__name__} at {key!r} in a state file")


def _unflatten(skeleton: Any, tensors: Mapping[str, torch.Tensor]) -> Any:
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__dict__" in skeleton:
            return {k: _unflatten(v, tensors) for k, v in skeleton["__dict__"]}
        if "__tuple__" in skeleton:
            return tuple(_unflatten(v, tensors) for v in skeleton["__tuple__"])
    if isinstance(skeleton, list):
        return [_unflatten(v, tensors) for v in skeleton]
    return skeleton


def save_state(path: str | os.PathLike, state: Mapping[str, Any], *, step: int) -> Path:
    """Write nested training state (what `--resume` needs) as a `state` checkpoint."""
    tensors: dict[str, torch.Tensor] = {}
    skeleton = _flatten(dict(state), "state", tensors)
    return save_checkpoint(path, tensors, kind="state", config={}, step=step, extra={"state": skeleton})


def load_state(path: str | os.PathLike, device: str | torch.device = "cpu") -> dict[str, Any]:
    """Read back what `save_state` wrote."""
    tensors, meta = load_checkpoint(path, kind="state", device=device)
    if "state" not in meta.extra:
        raise UserError(f"{meta.path}: corrupt state file (no state entry)")
    return _unflatten(meta.extra["state"], tensors)


# ---------------------------------------------------------------------------------------------------
# Provenance


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parent_record(path: str | os.PathLike) -> dict[str, str]:
    """How a checkpoint records one it was derived from: its content hash and where it was."""
    path = Path(path)
    return {"sha256": sha256_file(path), "path": str(path.resolve())}


def non_finite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (a diverged or tampered network)."""
    return [
        name
        for name, tensor in tensors.items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
