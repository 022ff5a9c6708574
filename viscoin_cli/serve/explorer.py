"""The model side of the explorer: sources encoded once, their explanation, and the render of a slider state.

A source is an image the explorer was shown: a test-split sample or an upload. The server only ever names
one by the opaque id issued here (`test-17`, `upload-<16 hex>`), never by a path, so no request can make
the explorer read a file. Each source is encoded once (Φ, γ and both predictions) and kept in a bounded
LRU; a slider move then only renders x̃' = decoder(λ·Φ, γ) and predicts on it (interpret/edit.py), which
is what keeps it interactive. Every torch call holds one lock: the server answers requests in threads.
"""

from __future__ import annotations

import base64
import io
import math
import re
import secrets
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image

from viscoin_cli.interpret.edit import render_scaled_maps
from viscoin_cli.interpret.encode import Encoded, encode_images
from viscoin_cli.interpret.explain import ranked
from viscoin_cli.interpret.heatmaps import concept_heatmaps, heat_overlay
from viscoin_cli.interpret.relevance import relevance_tables
from viscoin_cli.io.images import to_uint8

LAMBDA_MIN, LAMBDA_MAX, LAMBDA_STEP = 0.0, 4.0, 0.1
TOP_CLASSES = 3  # predictions listed per predictor
MAX_UPLOADS = 16  # uploads kept (least recently used dropped first)
MAX_TEST_SOURCES = 64  # encoded test samples kept (re-encoded on demand when dropped)
MAX_UPLOAD_PIXELS = 40_000_000  # decoding more would take hundreds of MB for a 32-256 px model
# Formats Pillow may try on an upload: plain raster formats only (EPS, for one, would run Ghostscript).
UPLOAD_FORMATS = ("PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF", "PPM")
SOURCE_ID = re.compile(r"test-(0|[1-9][0-9]{0,8})|upload-([0-9a-f]{16})")


class RequestError(Exception):
    """A request the explorer refuses: an HTTP status (4xx) and a one-line reason."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Source:
    """An image the explorer can explain and edit, encoded once."""

    id: str
    caption: str
    image: torch.Tensor  # [C, H, W] in [-1, 1], as the model sees it
    encoded: Encoded  # one sample
    label: int | None = None


def png_data_url(image: torch.Tensor) -> str:
    """[C, H, W] in [-1, 1] -> a `data:image/png` URL (the page upscales it with pixelated rendering)."""
    pixels = to_uint8(image[None])[0]
    picture = Image.fromarray(pixels[:, :, 0] if pixels.shape[2] == 1 else pixels)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", compress_level=1)  # speed over bytes: a slider sends many
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def decode_upload(data: bytes, resolution: int, channels: int = 3) -> tuple[torch.Tensor, str]:
    """Upload bytes -> ([channels, R, R] in [-1, 1], a caption), resized and centre-cropped like a test split.

    Any mode goes through `as_rgb`, as dataset images do. Refuses (RequestError) what is not one of
    UPLOAD_FORMATS, a decompression bomb and a broken file.
    """
    from viscoin_cli.data.images import as_rgb, image_transform

    if not data:
        raise RequestError(400, "empty upload: send the image file's bytes as the request body")
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as picture:
            width, height = picture.size
            kind = picture.format
            if width * height > MAX_UPLOAD_PIXELS:
                raise RequestError(413, f"image too large: {width}×{height} is above {MAX_UPLOAD_PIXELS // 10**6} Mpx")
            picture.load()
            rgb = as_rgb(picture)  # alpha over black, 16-bit scaled, CMYK converted: as the datasets read them
    except RequestError:
        raise
    except Image.DecompressionBombError:
        raise RequestError(413, f"image too large: above Pillow's limit of {Image.MAX_IMAGE_PIXELS} px") from None
    except Image.UnidentifiedImageError:
        formats = ", ".join(UPLOAD_FORMATS)
        raise RequestError(415, f"not an image in a supported format ({formats})") from None
    except Exception:  # Pillow raises many types for damaged files
        raise RequestError(400, "the image cannot be decoded (damaged or truncated file)") from None
    image = image_transform(resolution, augment=False)(rgb)
    return (image[:1] if channels == 1 else image), f"upload, {kind} {width}×{height}"


def parse_lambdas(raw: Any, num_concepts: int) -> dict[int, float]:
    """The `lambdas` of a render request, `{"12": 2.5}`, checked: concepts 0..K-1, finite λ in [0, 4]."""
    if not isinstance(raw, dict):
        raise RequestError(400, 'lambdas: expected an object {"<concept>": <λ>, ...}')
    if len(raw) > num_concepts:
        raise RequestError(400, f"lambdas: {len(raw)} entries, but the model has only {num_concepts} concepts")
    lambdas: dict[int, float] = {}
    for key, value in raw.items():
        if not re.fullmatch(r"0|[1-9][0-9]{0,5}", key):
            raise RequestError(400, f"lambdas: {key[:40]!r} is not a concept number")
        concept = int(key)
        if concept >= num_concepts:
            raise RequestError(404, f"lambdas: no concept {concept} (the model has concepts 0..{num_concepts - 1})")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise RequestError(400, f"lambdas: concept {concept}: λ must be a number")
        if not math.isfinite(value):
            raise RequestError(400, f"lambdas: concept {concept}: λ must be finite, got {value}")
        if not LAMBDA_MIN <= value <= LAMBDA_MAX:
            raise RequestError(
                400, f"lambdas: concept {concept}: λ = {value:g} is outside [{LAMBDA_MIN:g}, {LAMBDA_MAX:g}]"
            )
        lambdas[concept] = float(value)
    return lambdas


class Explorer:
    """A concept model on its runtime, with its test split (or none), serving explanations and renders."""

    def __init__(
        self,
        model: Any,
        rt: Any,
        class_names: list[str],
        test_set: Any | None,
        top_k: int,
        *,
        resolution: int,
        channels: int = 3,
        model_name: str = "",
        dataset_name: str = "",
    ):
        self.model, self.rt, self.class_names, self.test_set = model, rt, list(class_names), test_set
        self.resolution, self.channels = resolution, channels
        self.model_name, self.dataset_name = model_name, dataset_name
        self.num_concepts = int(model.head_weight().shape[1])
        self.top_k = min(top_k, self.num_concepts)
        self.lock = threading.Lock()  # one model, many request threads
        self._tests: OrderedDict[str, Source] = OrderedDict()
        self._uploads: OrderedDict[str, Source] = OrderedDict()
        self._sources_lock = threading.Lock()

    @property
    def test_size(self) -> int:
        return len(self.test_set) if self.test_set is not None else 0

    def info(self) -> dict[str, Any]:
        """What the page needs to lay itself out."""
        return {
            "model": self.model_name,
            "dataset": self.dataset_name,
            "classes": self.class_names,
            "num_concepts": self.num_concepts,
            "top_k": self.top_k,
            "resolution": self.resolution,
            "test_size": self.test_size,
            "lambda": {"min": LAMBDA_MIN, "max": LAMBDA_MAX, "step": LAMBDA_STEP, "default": 1.0},
        }

    # --- sources -------------------------------------------------------------------------------------

    def _encode(self, image: torch.Tensor, label: int | None) -> Encoded:
        labels = torch.tensor([label if label is not None else -1])
        with self.lock:
            return encode_images(self.model, image[None], labels, self.rt)

    def test_source(self, index: int) -> Source:
        """Test sample `index`, encoded (from the cache when it is there)."""
        if not 0 <= index < self.test_size:
            if self.test_size == 0:
                raise RequestError(404, "no test split is loaded: upload an image instead")
            raise RequestError(404, f"index {index}: out of range (the test split has images 0..{self.test_size - 1})")
        source_id = f"test-{index}"
        with self._sources_lock:
            source = self._tests.get(source_id)
            if source is not None:
                self._tests.move_to_end(source_id)
                return source
        image, label = self.test_set[index]
        label = int(label)
        caption = f"test image {index}, label {self.class_names[label]}"
        source = Source(source_id, caption, image, self._encode(image, label), label)
        with self._sources_lock:
            self._tests[source_id] = source
            while len(self._tests) > MAX_TEST_SOURCES:
                self._tests.popitem(last=False)
        return source

    def add_upload(self, data: bytes) -> Source:
        """An uploaded image file, decoded, encoded and kept under a new id."""
        image, caption = decode_upload(data, self.resolution, self.channels)
        source = Source(f"upload-{secrets.token_hex(8)}", caption, image, self._encode(image, None))
        with self._sources_lock:
            self._uploads[source.id] = source
            while len(self._uploads) > MAX_UPLOADS:
                self._uploads.popitem(last=False)
        return source

    def source(self, source_id: Any) -> Source:
        """The source an id names. A path, or anything else the explorer did not issue, is refused."""
        if not isinstance(source_id, str):
            raise RequestError(400, "source: expected the id string of a test image or an upload")
        match = SOURCE_ID.fullmatch(source_id)
        if match is None:
            if any(mark in source_id for mark in ("/", "\\", "..", "~", ":")):
                raise RequestError(400, "source: a path is not a source; use an id from /api/sample or /api/upload")
            raise RequestError(400, f"source: {source_id[:40]!r} is not a source id (test-<index> or upload-<id>)")
        if match.group(1) is not None:
            return self.test_source(int(match.group(1)))
        with self._sources_lock:
            source = self._uploads.get(source_id)
            if source is None:
                raise RequestError(404, f"source: no upload {source_id} (uploads are kept in memory: upload it again)")
            self._uploads.move_to_end(source_id)
            return source

    # --- explanations and renders ---------------------------------------------------------------------

    def top_classes(self, probabilities: torch.Tensor) -> list[dict[str, Any]]:
        values, classes = probabilities.sort(descending=True, stable=True)
        return [
            {"class": int(c), "name": self.class_names[int(c)], "probability": float(p)}
            for p, c in zip(values[:TOP_CLASSES].tolist(), classes[:TOP_CLASSES].tolist(), strict=True)
        ]

    def explain(self, source: Source) -> dict[str, Any]:
        """The source's image, predictions, top concepts by local relevance with their heatmaps, and the
        plain render (every λ = 1)."""
        encoded = source.encoded
        with self.lock:
            local, _ = relevance_tables(self.model, encoded)
            concepts = ranked(local[0], encoded.pooled[0], self.top_k)
            chosen = torch.tensor([[c["concept"] for c in concepts]])
            heat = concept_heatmaps(self.model, source.image[None], chosen)
            plain = render_scaled_maps(
                self.model, encoded.concept_maps, encoded.support, torch.ones(1, self.num_concepts)
            )
        images = source.image[None].expand(len(concepts), *source.image.shape)
        maps = heat_overlay(images, heat.maps[0])
        gradients = heat_overlay(images, heat.gradients[0])
        for j, concept in enumerate(concepts):
            concept["map"] = png_data_url(maps[j])
            concept["gradient"] = png_data_url(gradients[j])
        document = {
            "source": source.id,
            "caption": source.caption,
            "image": png_data_url(source.image),
            "g": self.top_classes(encoded.logits[0].softmax(0)),
            "f": self.top_classes(encoded.f_logits[0].softmax(0)),
            "concepts": concepts,
            "render": self._render_document(source, {}, plain),
        }
        if source.label is not None:
            document |= {"label": source.label, "label_name": self.class_names[source.label]}
        return document

    def sample(self, index: int) -> dict[str, Any]:
        return self.explain(self.test_source(index))

    def upload(self, data: bytes) -> dict[str, Any]:
        return self.explain(self.add_upload(data))

    def render(self, source_id: Any, raw_lambdas: Any) -> dict[str, Any]:
        """The source rendered with its concept maps scaled by `raw_lambdas` (unlisted concepts keep λ = 1),
        and g's and f's predictions on that render."""
        source = self.source(source_id)
        lambdas = parse_lambdas(raw_lambdas, self.num_concepts)
        scales = torch.ones(1, self.num_concepts)
        for concept, lam in lambdas.items():
            scales[0, concept] = lam
        with self.lock:
            rendered = render_scaled_maps(self.model, source.encoded.concept_maps, source.encoded.support, scales)
        return self._render_document(source, lambdas, rendered)

    def _render_document(self, source: Source, lambdas: Mapping[int, float], rendered: Any) -> dict[str, Any]:
        return {
            "source": source.id,
            "lambdas": {str(c): lam for c, lam in lambdas.items()},
            "image": png_data_url(rendered.images[0]),
            "g": self.top_classes(rendered.g_probabilities[0]),
            "f": self.top_classes(rendered.f_probabilities[0]),
        }
