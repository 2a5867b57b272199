"""Export an open_clip model's two towers to ONNX (fp32, plus int8 where its drift is within bounds).

``torch.onnx.export`` (opset 18, the TorchScript exporter, attention fast path off) writes each tower with a
dynamic batch; a text tower that :mod:`retrieval.model.text_trim` can cut after the pooled token gets a
dynamic sequence length too, so queries still run at their real token length. Every graph is checked
against torch before it is kept (cosine >= :data:`EXACT_COSINE`), the torch-free tokenizer and
preprocessing against open_clip's, and the int8 variant (ONNX Runtime dynamic quantization, QInt8
weights per channel) against the fp32 graph (:data:`INT8_MIN_COSINE`). A model that fails any of this is
recorded as unexportable, with why, and keeps the torch path. Needs torch; the search that reads the
export later does not.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import warnings
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw
from torch import nn

from retrieval import hints
from retrieval.errors import first_line
from retrieval.model.onnx_files import (
    EXPORT_VERSION,
    MANIFEST,
    OPSET,
    Export,
    ExportProblem,
    Unexportable,
    export_key,
    folders,
    writable,
    write_atomic,
)
from retrieval.model.quantize import swap_attention
from retrieval.model.source import folder_config, open_clip_name
from retrieval.model.text_trim import TextTower
from retrieval.model.torch_backend import TorchEncoder, open_clip
from retrieval.settings import ModelSettings

EXACT_COSINE = 0.9999
"""An exported fp32 graph must give every probe this cosine (or more) to torch's vector."""
INT8_MIN_COSINE = 0.99
"""The int8 graph is kept where every probe vector has this cosine (or more) to the fp32 graph's (the bound
that lets int8 and fp32 vectors share a collection, retrieval.model.precision.MIXABLE)."""
PREPROCESS_TOLERANCE = 1e-2
"""Largest pixel difference (after normalisation) between the torch-free preprocessing and open_clip's."""
PROBE_TEXTS = ["a photo of a dog on a beach", "x", "", "Ünïcödé café 🐶🏖️ &amp; <b>html</b>",
               "a very long caption " + "with many many words " * 30, "red"]


def export_model(settings: ModelSettings, *, log: Callable[[str], None] | None = None) -> Export:
    """Export ``settings``'s model (or record why it cannot be) and return the export.

    Raises :class:`ExportProblem` (one line) where no export folder is writable or the model does not load.
    """
    key = export_key(settings)  # Unexportable for random weights, before anything loads
    folder = _folder(settings, key) if key is not None else None  # a read-only cache: said before torch loads
    if log is not None:
        log(f"exporting model {settings.name} to ONNX Runtime for fast searches (once; "
            f"{hints.command('model export')} does it ahead of time)")
    encoder = TorchEncoder.load(settings.model_copy(update={"precision": "fp32", "device": "cpu"}))
    if key is None:  # a hub model: known once downloaded
        key = export_key(settings)
        if key is None:
            raise Unexportable("its weights file was not found after loading")
        folder = _folder(settings, key)
    assert folder is not None
    (folder / MANIFEST).unlink(missing_ok=True)  # the old export's, if any: its files are replaced below
    manifest: dict[str, Any] = {"version": EXPORT_VERSION, "key": key, "opset": OPSET, "model": settings.name,
                                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                                "torch": torch.__version__, "onnxruntime": _ort().__version__}
    try:
        manifest.update(_export(encoder, settings, folder))
        manifest["unexportable"] = ""
    except Unexportable as exc:
        manifest.update(unexportable=str(exc), towers={})
    write_atomic(folder / MANIFEST, json.dumps(manifest, indent=2).encode())
    return Export(folder, manifest)


def _folder(settings: ModelSettings, key: str) -> Path:
    """The first writable place for the export (raises :class:`ExportProblem` where there is none)."""
    places = folders(settings, key)
    folder = next((f for f in places if writable(f)), None)
    if folder is None:
        raise ExportProblem("cannot write the ONNX export: " + " and ".join(str(f) for f in places)
                            + " are not writable (set CLIPDEX_CACHE to a writable folder)")
    return folder


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def _export(encoder: TorchEncoder, settings: ModelSettings, folder: Path) -> dict[str, Any]:
    from retrieval.model.preprocess import Preprocess
    from retrieval.model.tokenizer import load_tokenizer

    model, name = encoder.model, open_clip_name(settings)
    model_cfg = folder_config(settings).get("model_cfg") or open_clip.get_model_config(name) or {}
    preprocess_cfg = _plain(dict(getattr(model.visual, "preprocess_cfg", None) or {}))
    tokenizer = load_tokenizer(name, model_cfg or None, encoder.context_length)
    if tokenizer is None:
        raise Unexportable("its tokenizer is not open_clip's CLIP tokenizer (a Hugging Face or SigLIP tokenizer)")
    want = encoder.tokenizer(PROBE_TEXTS).numpy()
    if not np.array_equal(tokenizer(PROBE_TEXTS), want):
        raise Unexportable("the torch-free tokenizer does not give open_clip's token ids for it")
    preprocess = Preprocess.from_config(preprocess_cfg)
    images = probe_images()
    pixels = np.stack([preprocess(im) for im in images])
    diff = float(np.abs(pixels - torch.stack([encoder.preprocess(im) for im in images]).numpy()).max())
    if diff > PREPROCESS_TOLERANCE:
        raise Unexportable(f"the torch-free preprocessing differs from open_clip's by {diff:.3g}")
    tower = encoder.text_tower
    text = _TrimmedText(tower) if tower is not None else _FullText(model)
    towers = {"visual": _export_tower(_Visual(model), "pixels", torch.from_numpy(pixels), False, folder),
              "textual": _export_tower(text, "tokens", torch.from_numpy(_cut(tower, want)), tower is not None,
                                       folder)}
    return {"dim": encoder.dim, "image_size": encoder.image_size, "context_length": encoder.context_length,
            "open_clip_name": name, "model_cfg": model_cfg, "preprocess_cfg": preprocess_cfg,
            "text": {"trim": tower is not None, "pool": tower.pool_type if tower else "",
                     "eos_id": tower.eos_id if tower else None},
            "towers": towers}


def _plain(value: Any) -> Any:
    """Tuples to lists (JSON), recursively."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return [_plain(v) for v in value] if isinstance(value, tuple | list) else value


def probe_images() -> list[Image.Image]:
    """A few deterministic pictures of several sizes and shapes (gradients, shapes, noise)."""
    rng = np.random.default_rng(0)
    out = []
    for i, (w, h) in enumerate([(320, 240), (200, 300), (64, 64)]):
        grid = np.linspace(0, 255, w, dtype=np.float32)[None, :, None] * np.ones((h, 1, 3), np.float32)
        noise = rng.normal(0, 20, (h, w, 3)).astype(np.float32)
        im = Image.fromarray(np.clip(grid * (0.3 + 0.3 * i) + noise + 40 * i, 0, 255).astype(np.uint8))
        ImageDraw.Draw(im).ellipse((w // 4, h // 4, w // 2 + 10 * i, h // 2 + 5 * i), fill=(200, 40 * i, 90))
        out.append(im)
    return out


def _cut(tower: TextTower | None, tokens: np.ndarray) -> np.ndarray:
    if tower is None:
        return tokens
    length = int(tower.pooled_positions(torch.from_numpy(tokens)).max()) + 1
    return tokens[:, :length]


class _Visual(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(pixels)


class _FullText(nn.Module):
    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(tokens)


class _TrimmedText(nn.Module):
    def __init__(self, tower: TextTower):
        super().__init__()
        self.owner = tower.owner  # registered, so its weights are the graph's
        self.tower = tower

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tower.encode_prefix(tokens)


@contextlib.contextmanager
def _exporting() -> Iterator[None]:
    """Attention fast path off (its fused kernel does not export), tracer warnings and ORT's logs quiet."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)
        root.setLevel(level)


def session(data: bytes | str) -> Any:
    """A CPU ONNX Runtime session over a graph (bytes or a path), quiet."""
    ort = _ort()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def _run(sess: Any, array: np.ndarray) -> np.ndarray:
    return sess.run(None, {sess.get_inputs()[0].name: array})[0]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


def _probes(tokens: bool, example: torch.Tensor, dynamic_length: bool) -> list[np.ndarray]:
    """Inputs to compare torch and ONNX on: each row alone, all together, and (text) shorter lengths."""
    rows = example.numpy()
    probes = [rows[i : i + 1] for i in range(len(rows))] + [rows]
    if tokens and dynamic_length:  # a short text at its own length, and the padded full context
        probes.append(rows[1:2, :3])
    return probes


def _export_tower(module: nn.Module, input_name: str, example: torch.Tensor, dynamic_length: bool,
                  folder: Path) -> dict[str, Any]:
    """Export one tower (fp32, then int8 where it stays close); returns its manifest entry."""
    tower = "textual" if input_name == "tokens" else "visual"
    axes = {0: "batch", 1: "length"} if dynamic_length else {0: "batch"}
    probes = _probes(input_name == "tokens", example, dynamic_length)
    with torch.no_grad():  # torch's vectors, before anything is rewritten for the exporter
        want = [_unit(module(torch.from_numpy(p)).float().numpy()) for p in probes]
    if dynamic_length:  # nn.MultiheadAttention bakes the traced length into its reshapes: plain Linear + SDPA
        swap_attention(module)
    buffer = io.BytesIO()
    try:
        with _exporting(), torch.inference_mode(False), torch.no_grad():
            torch.onnx.export(module.eval(), (example,), buffer, opset_version=OPSET, dynamo=False,
                              input_names=[input_name], output_names=["features"],
                              dynamic_axes={input_name: axes, "features": {0: "batch"}}, do_constant_folding=True)
    except Exception as exc:  # the exporter raises many types: one line, the model keeps torch
        raise Unexportable(f"torch.onnx.export of its {tower} tower failed: {first_line(exc)[:200]}") from None
    fp32 = buffer.getvalue()
    try:
        sess = session(fp32)
        got = [_unit(_run(sess, p)) for p in probes]
    except Exception as exc:  # ORT refuses the graph
        raise Unexportable(f"ONNX Runtime cannot run its exported {tower} tower: {first_line(exc)[:200]}") from None
    cosine = min(float((g * w).sum(-1).min()) for g, w in zip(got, want, strict=True))
    if not cosine >= EXACT_COSINE:
        raise Unexportable(f"its exported {tower} tower differs from torch (cosine {cosine:.6f})")
    entry: dict[str, Any] = {"dynamic_length": dynamic_length,
                             "fp32": _write(folder / f"{tower}.fp32.onnx", fp32, cosine)}
    int8, drift = _int8(folder, tower, probes, got)
    if int8 is not None:
        entry["int8"] = _write(folder / f"{tower}.int8.onnx", int8, drift)
    else:
        entry["int8_skipped"] = f"cosine to fp32 {drift:.4f} < {INT8_MIN_COSINE}"
    return entry


def _write(path: Path, data: bytes, cosine: float) -> dict[str, Any]:
    import xxhash

    write_atomic(path, data)
    return {"file": path.name, "bytes": len(data), "xxh3": xxhash.xxh3_64(data).hexdigest(),
            "cosine": round(cosine, 6)}


def _int8(folder: Path, tower: str, probes: list[np.ndarray], fp32: list[np.ndarray]) -> tuple[bytes | None, float]:
    """The int8 graph (QInt8 weights per channel, activations quantized at run time) and its worst cosine to
    the fp32 graph's vectors (rows one at a time: int8 scales activations per batch), or None if too far."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src, dst = folder / f".{tower}.fp32-src.tmp-{os.getpid()}", folder / f".{tower}.int8.tmp-{os.getpid()}"
    try:
        src.write_bytes((folder / f"{tower}.fp32.onnx").read_bytes())
        with _exporting():
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"MatMulConstBOnly": True})
        data = dst.read_bytes()
        sess = session(data)
        worst = 1.0
        for probe, want in zip(probes, fp32, strict=True):
            for row in range(len(probe)):
                got = _unit(_run(sess, probe[row : row + 1]))
                worst = min(worst, float((got * want[row : row + 1]).sum()))
    except Exception as exc:  # quantization is an optimisation: without it the fp32 graph serves
        logging.getLogger(__name__).debug("int8 quantization failed: %s", exc)
        return None, float("nan")
    finally:
        src.unlink(missing_ok=True)
        dst.unlink(missing_ok=True)
    return (data if worst >= INT8_MIN_COSINE else None), worst
