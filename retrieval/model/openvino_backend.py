"""The OpenVINO image engine for ingest: the exported image graph compiled by OpenVINO's CPU plugin.

Which ingests run here: retrieval.model.ingest_engine (``[model] ingest_engine``). The graph is the ONNX
export's fp32 image graph (retrieval.model.export: checked against torch, keyed by the weights' content),
compiled with ``INFERENCE_PRECISION_HINT`` bf16 (or f32 for an fp32 collection) and ``PERFORMANCE_HINT``
THROUGHPUT: OpenVINO runs as many streams as it sees fit (2 on a 2-core CPU, one core each), and a batch is
cut into that many parts run at once. The collection records the precision (bf16 or fp32): the vectors are
the same numeric path as torch's at that precision (cosine to fp32 >= 0.9999, benchmarks/engines.py), so they
mix as retrieval.model.precision.MIXABLE says. Texts stay on torch.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import numpy as np
import torch

from retrieval.errors import ClipdexError
from retrieval.model.onnx_files import Export
from retrieval.model.torch_backend import TorchEncoder

PRECISIONS = {"bf16": "bf16", "fp32": "f32"}
"""OpenVINO's name for each image precision it runs (retrieval.model.ingest_engine.RUNS)."""
CONFIG: dict[str, Any] = {"PERFORMANCE_HINT": "THROUGHPUT"}
"""The compile settings besides the precision (benchmarks/ingest.py's experiments change them)."""


class OpenVinoImages:
    """One compiled image graph and its infer requests: unit vectors for batches of preprocessed pixels."""

    def __init__(self, graph: Path, precision: str):
        import openvino as ov

        if precision not in PRECISIONS:
            raise ClipdexError(f"the OpenVINO engine runs bf16 or fp32 images, not {precision}")
        self.precision = precision
        config = {**CONFIG, "INFERENCE_PRECISION_HINT": PRECISIONS[precision]}
        self.compiled = ov.Core().compile_model(str(graph), "CPU", config)
        self.requests = max(1, int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")))
        self._queue = ov.AsyncInferQueue(self.compiled, self.requests)
        self._lock = threading.Lock()
        """One batch at a time: the queue's callback and parts are per batch."""

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        """Embed ``(N, 3, H, W)`` float32 pixels into unit float32 vectors ``(N, dim)``."""
        parts = [p for p in np.array_split(np.ascontiguousarray(pixels, dtype=np.float32), self.requests) if len(p)]
        out: list[np.ndarray | None] = [None] * len(parts)

        def done(request: Any, index: int) -> None:
            out[index] = np.array(request.get_output_tensor(0).data, dtype=np.float32)

        with self._lock:
            self._queue.set_callback(done)
            for i, part in enumerate(parts):
                self._queue.start_async({0: part}, i)
            self._queue.wait_all()
        if any(o is None for o in out):
            raise ClipdexError("OpenVINO returned no vectors for a batch")
        features = np.concatenate(out)  # type: ignore[arg-type]
        return features / np.maximum(np.linalg.norm(features, axis=-1, keepdims=True), 1e-12)


def compile_ahead(export: Export, precision: str) -> Future[OpenVinoImages]:
    """Check ``export``'s fp32 image graph against its manifest and compile it at ``precision``, in a thread."""
    future: Future[OpenVinoImages] = Future()

    def work() -> None:
        try:
            export.read("visual", "fp32")  # size and content hash, before OpenVINO reads it by its path
            future.set_result(OpenVinoImages(export.path("visual", "fp32"), precision))
        except BaseException as exc:  # noqa: BLE001  raised by result() in the loading thread
            future.set_exception(exc)

    threading.Thread(target=work, name="clipdex-openvino-compile", daemon=True).start()
    return future


class OpenVinoEncoder(TorchEncoder):
    """A TorchEncoder whose image tower runs on OpenVINO (texts, preprocessing and tokenizer stay torch's).

    Made by ``OpenVinoEncoder.load(settings)`` then :meth:`use`; torch's own image tower is never cast to bf16
    and its weights are dropped once the compiled graph is in use (the export holds them)."""

    casts_images = False
    images: OpenVinoImages | None = None

    def use(self, images: OpenVinoImages) -> OpenVinoEncoder:
        """Run the image tower on ``images`` (compiled from this model's export); their precision is the image
        tower's (what a collection records)."""
        self.images = images
        self.precision = images.precision
        self._unquantized.discard("image")
        self.model.visual.to(device="meta")  # torch's copy of the image weights: no longer used
        return self

    @property
    def engines(self) -> dict[str, str]:
        return {"image": f"openvino {self.precision}", "text": f"torch {self.text_precision}"}

    def encode_images(self, pixels: torch.Tensor) -> np.ndarray:
        """Embed a preprocessed batch ``(N, 3, H, W)`` into unit vectors ``(N, dim)`` on OpenVINO."""
        if pixels.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.images is None:
            raise ClipdexError("the OpenVINO image tower is not compiled")
        return self.images(pixels.detach().float().cpu().numpy())
