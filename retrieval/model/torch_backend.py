"""The torch backend: open_clip models on torch, any architecture and weights, images and texts.

Vectors come back as L2-normalised float32 numpy arrays. ``[model] precision`` picks the numeric
path (retrieval.model.precision): by default fp16 autocast on CUDA; on a CPU, with all cores, bf16 image
weights where it has AMX or AVX512-BF16, dynamic int8 elsewhere (bf16 is many times slower there), int8 texts.
Texts are encoded at their real token length where that is exact (retrieval.model.text_trim), and the
vectors of recent texts are kept in a small LRU cache (retrieval.model.encoder).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import open_clip  # importable because retrieval/__init__.py ran the torchvision shim first
import torch
from PIL import Image

from retrieval.errors import ClipdexError, first_line
from retrieval.model import hub
from retrieval.model import precision as precisions
from retrieval.model.encoder import Encoder, ModelIdentity
from retrieval.model.no_init import skipped_init
from retrieval.model.source import CONFIG_NAME, check_source, open_clip_name, student_of
from retrieval.model.text_trim import encode_text, text_tower
from retrieval.model.weights import LOCAL_DIR, WEIGHTS_NAME, source_label, weights_file, weights_fingerprint
from retrieval.settings import ModelSettings

__all__ = ["CONFIG_NAME", "LOCAL_DIR", "WEIGHTS_NAME", "ModelIdentity", "TorchEncoder", "image_size_of",
           "open_clip", "pick_device", "quiet_open_clip", "save_model_folder", "student_of"]


def pick_device(preference: str = "auto") -> torch.device:
    if preference == "cuda" and not torch.cuda.is_available():
        raise ClipdexError("model.device = 'cuda' but no CUDA device is available")
    if preference == "cuda" or (preference == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


class TorchEncoder(Encoder):
    """An open_clip image/text encoder pair on torch, with its preprocessing and tokenizer."""

    ingests = True
    casts_images = True
    """Cast the image tower to bf16 at bf16 precision (a subclass running images elsewhere does not)."""

    def __init__(self, model: torch.nn.Module, preprocess: Callable[[Image.Image], torch.Tensor],
                 tokenizer: Callable[..., torch.Tensor], identity: ModelIdentity, device: torch.device,
                 precision: str = "fp32"):
        super().__init__()
        self.precision: str = precisions.resolve(precision, device)
        """The image tower's numeric path (what a collection records): fp32, fp16 (CUDA autocast), int8 or
        bf16 (CPU; bf16 weights)."""
        self.text_precision: str = precisions.resolve_text(precision, device)
        """The text tower's numeric path (``auto`` keeps it at int8 on a CPU even where images run bf16)."""
        self.model = model.eval().to(device)
        if self.text_precision == "bf16":
            self.model.to(torch.bfloat16)  # both towers (bf16 text implies bf16 images: one setting)
        elif self.precision == "bf16" and self.casts_images:
            self.model.visual.to(torch.bfloat16)
        self._image_dtype = torch.bfloat16 if self.precision == "bf16" else torch.float32
        self._unquantized = {t for t, p in (("image", self.precision), ("text", self.text_precision)) if p == "int8"}
        """Towers still to convert to int8: each is converted on its first use (a text search never
        converts the image tower)."""
        self._quantize_lock = threading.Lock()
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.identity = identity
        self.device = device
        self.image_size: int = image_size_of(model)
        self.context_length: int = int(getattr(model, "context_length", 77) or 77)
        self.text_tower = text_tower(self.model)
        """The trimmable text tower, or None: texts then run at the full padded context."""

    @classmethod
    def load(cls, settings: ModelSettings) -> TorchEncoder:
        """Load the model named by ``settings`` (tag, checkpoint file or local folder)."""
        check_source(settings)
        device = pick_device(settings.device)
        if device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        name = open_clip_name(settings)
        schema = name.startswith((LOCAL_DIR, hub.HF_HUB))
        pretrained = None if schema else (settings.pretrained or None)
        try:
            with quiet_open_clip(), skipped_init(loads_weights(settings)):
                model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
            tokenizer = open_clip.get_tokenizer(name)
        except ClipdexError:
            raise
        except Exception as exc:  # open_clip raises many types; one line for the user
            msg = first_line(exc)
            raise ClipdexError(f"could not load model {settings.name}: {msg}") from None
        dim = int(_embed_dim(model))
        source = source_label(settings)
        identity = ModelIdentity(settings.name, source, dim, weights_fingerprint(settings) or "",
                                 student_of=student_of(settings))
        return cls(model, preprocess, tokenizer, identity, device, settings.precision)

    @property
    def engines(self) -> dict[str, str]:
        where = "" if self.device.type == "cpu" else f" on {self.device.type}"
        return dict.fromkeys(("image", "text"), f"torch {self.precision}{where}")

    def _ready(self, tower: str) -> None:
        """Convert ``tower`` ("image" or "text") to int8 on its first use, if the precision says so."""
        if tower in self._unquantized:
            with self._quantize_lock:
                if tower in self._unquantized:
                    from retrieval.model.quantize import quantize_tower

                    quantize_tower(self.model, tower)
                    self._unquantized.discard(tower)

    def _autocast(self) -> contextlib.AbstractContextManager[None]:
        if self.precision == "fp16":
            return torch.autocast("cuda", dtype=torch.float16)
        return contextlib.nullcontext()

    @torch.inference_mode()
    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed batch ``(N, 3, H, W)`` into unit vectors ``(N, dim)``."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        self._ready("image")
        pixels = pixels.to(self.device, dtype=self._image_dtype, non_blocking=True)
        with self._autocast():
            features = self.model.encode_image(pixels)
        return _unit(features)

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed already-decoded PIL images (used for query images)."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.encode_images(torch.stack([self.preprocess(im) for im in images]))

    @torch.inference_mode()
    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        if self.text_precision in ("int8", "bf16") and len(texts) > 1:
            # int8 scales activations per batch (and bf16 rounds differently by batch shape): one text at a
            # time (each at its own real length) keeps a text's vector independent of its batch mates, so
            # cached and fresh vectors always agree
            return np.concatenate([self._encode_texts([text]) for text in texts])
        self._ready("text")
        tokens = self.tokenizer(texts).to(self.device)
        with self._autocast():
            features = encode_text(self.model, self.text_tower, tokens)
        return _unit(features)


def loads_weights(settings: ModelSettings) -> bool:
    """Will open_clip load a checkpoint over the whole model (so its random initialisation is wasted)?"""
    file = weights_file(settings)
    if file is not None:
        return file.is_file()
    return bool(settings.pretrained) and not settings.name.startswith((LOCAL_DIR, hub.HF_HUB))


def _unit(features: torch.Tensor) -> np.ndarray:
    features = torch.nn.functional.normalize(features.float(), dim=-1)
    return features.cpu().numpy().astype(np.float32, copy=False)


def _embed_dim(model: torch.nn.Module) -> int:
    proj = getattr(model, "text_projection", None)
    if isinstance(proj, torch.Tensor | torch.nn.Parameter) and proj.ndim == 2:
        return proj.shape[1]
    with torch.inference_mode():
        return model.encode_text(torch.zeros(1, getattr(model, "context_length", 77), dtype=torch.long)).shape[-1]


def image_size_of(model: torch.nn.Module) -> int:
    """The side of the square images the model's image tower takes (224 where it does not say)."""
    size = getattr(getattr(model, "visual", None), "image_size", 224)
    return int(size[0] if isinstance(size, tuple | list) else size)


@contextlib.contextmanager
def quiet_open_clip():
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(max(level, logging.ERROR))
    try:
        yield
    finally:
        logger.setLevel(level)


def save_model_folder(model: torch.nn.Module, model_cfg: dict, folder: str | os.PathLike[str],
                      preprocess_cfg: dict | None = None, extra: dict | None = None) -> Path:
    """Write ``model`` as a folder ``local-dir:`` can load: safetensors weights + config JSON."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tmp = folder / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp))
    os.replace(tmp, folder / WEIGHTS_NAME)
    config = {"model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg or {}}
    if extra:
        config["clipdex"] = extra
    tmp = folder / (CONFIG_NAME + ".tmp")
    tmp.write_text(json.dumps(config, indent=2))
    os.replace(tmp, folder / CONFIG_NAME)
    return folder
