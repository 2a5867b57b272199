"""The ONNX Runtime backend: a model's exported towers in ORT sessions, with no torch in the process.

Texts go through the torch-free tokenizer (:mod:`retrieval.model.tokenizer`) and, where the export has a
dynamic sequence length, run at their real token length (cut after the pooled token, as
:mod:`retrieval.model.text_trim` does on torch); pictures go through the PIL/numpy preprocessing
(:mod:`retrieval.model.preprocess`). Each tower's session opens on its first use (a text search never
opens the image tower), with intra-op threads = cores and sequential execution.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np

from retrieval.model.encoder import Encoder, ModelIdentity
from retrieval.model.onnx_files import Export, ExportProblem

if TYPE_CHECKING:  # a text search loads no PIL
    from PIL import Image

    from retrieval.model.preprocess import Preprocess

TOWER_OF = {"image": "visual", "text": "textual"}


def session_options(threads: int | None = None) -> Any:
    """ORT options for a query process: all cores inside an op, one op at a time, threads that do not spin."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # a shared CPU: sleep, not spin
    return options


_tokenizers: dict[str, Any] = {}
_tokenizers_lock = threading.Lock()


def tokenizer_of(manifest: dict[str, Any]) -> Any:
    """The torch-free tokenizer of an export (built once per process: reading the BPE merges takes 0.1 s)."""
    import json

    from retrieval.model.tokenizer import load_tokenizer

    args = (manifest["open_clip_name"], manifest.get("model_cfg") or None, int(manifest["context_length"]))
    key = json.dumps(args, sort_keys=True, default=str)
    with _tokenizers_lock:
        if key not in _tokenizers:
            _tokenizers[key] = load_tokenizer(*args)
        return _tokenizers[key]


def _stderr(line: str) -> None:
    print(f"clipdex: {line}", file=sys.stderr, flush=True)


class OnnxEncoder(Encoder):
    """Both towers of an exported model on ONNX Runtime (CPU)."""

    ingests = False
    """Ingest keeps its torch encoder (retrieval.model.loader)."""

    def __init__(self, export: Export, identity: ModelIdentity, precision: dict[str, str],
                 repair: Callable[[str], Export] | None = None, log: Callable[[str], None] | None = None):
        """``precision``: per tower ("image", "text") the exported variant to run (fp32 or int8).
        ``repair(problem)``: called with a one-line problem when a file turns out damaged; returns a new export.
        ``log(line)``: says a damaged optimised-graph cache (retrieval.model.ort_cache) being made again."""
        super().__init__()
        manifest = export.manifest
        self.export = export
        self.identity = identity
        self.tower_precision = dict(precision)
        self.precision = "int8" if "int8" in self.tower_precision.values() else "fp32"
        """The collection-facing precision: int8 if either tower runs int8 (retrieval.model.precision)."""
        self.image_size = int(manifest["image_size"])
        self.context_length = int(manifest["context_length"])
        self._preprocess_cfg = dict(manifest["preprocess_cfg"])
        tokenizer = tokenizer_of(manifest)
        if tokenizer is None:
            raise ExportProblem("the export's tokenizer cannot be read without torch")
        self.tokenizer = tokenizer
        text = manifest.get("text") or {}
        self.trim = bool(text.get("trim")) and bool(manifest["towers"]["textual"].get("dynamic_length"))
        self.pool, self.eos_id = str(text.get("pool") or ""), text.get("eos_id")
        self._repair = repair
        self._log = log or _stderr
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    @cached_property
    def preprocess(self) -> Preprocess:
        """The torch-free picture preprocessing, made on the first picture (PIL and its plugins load with it:
        a text search never needs them)."""
        from retrieval.model.preprocess import Preprocess

        return Preprocess.from_config(self._preprocess_cfg)

    @property
    def engines(self) -> dict[str, str]:
        """Which engine runs each tower, as ``clipdex status`` shows it."""
        return {tower: f"onnxruntime {p}" for tower, p in self.tower_precision.items()}

    def _session(self, tower: str) -> Any:
        if tower not in self._sessions:
            with self._lock:
                if tower not in self._sessions:
                    self._sessions[tower] = self._open(tower)
        return self._sessions[tower]

    def _open(self, tower: str) -> Any:
        from retrieval.model.ort_cache import cached_session

        name, precision = TOWER_OF[tower], self.tower_precision[tower]

        def source() -> bytes:
            try:
                return self.export.read(name, precision)
            except ExportProblem as problem:
                if self._repair is None:
                    raise
                self.export = self._repair(str(problem))
                return self.export.read(name, precision)

        if not self.export.sizes_ok():  # a damaged export is repaired before its cached graph is trusted
            source()
        entry = self.export.entry(name, precision)
        return cached_session(source, str(entry["xxh3"]), self.export.folder, f"{name}-{precision}",
                              session_options, log=self._log)

    def _run(self, tower: str, array: np.ndarray) -> np.ndarray:
        sess = self._session(tower)
        out = sess.run(None, {sess.get_inputs()[0].name: array})[0].astype(np.float32, copy=False)
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def encode_pil(self, images: Sequence[Image.Image]) -> np.ndarray:
        """Embed decoded PIL images (one at a time at int8: its activation scales are per batch)."""
        if not images:
            return np.zeros((0, self.dim), dtype=np.float32)
        pixels = self.preprocess.batch(list(images))
        if self.tower_precision["image"] == "int8" and len(images) > 1:
            return np.concatenate([self._run("image", pixels[i : i + 1]) for i in range(len(images))])
        return self._run("image", pixels)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        folder = self._text_folder()
        if folder is None:
            return self._encode_texts_now(texts)
        from retrieval.model import text_cache

        found = {t: v for t in texts if (v := text_cache.get(folder, t, self.dim)) is not None}
        missing = list(dict.fromkeys(t for t in texts if t not in found))
        if missing:
            for text, vector in zip(missing, self._encode_texts_now(missing), strict=True):
                text_cache.put(folder, text, vector)
                found[text] = vector
        return np.stack([found[t] for t in texts])

    def _text_folder(self) -> Any:
        """Where this process keeps text vectors on disk (retrieval.model.text_cache), or None."""
        from retrieval.model import text_cache

        if not text_cache.enabled():
            return None
        return text_cache.folder_for(str(self.export.manifest["key"]), self.tower_precision["text"])

    def open_ahead(self, tower: str) -> None:
        """Start opening ``tower``'s session in the background (retrieval.model.ort_cache.open_ahead)."""
        from retrieval.model.ort_cache import open_ahead

        name, precision = TOWER_OF[tower], self.tower_precision[tower]
        if self.export.sizes_ok():
            open_ahead(lambda: self.export.read(name, precision), str(self.export.entry(name, precision)["xxh3"]),
                       self.export.folder, f"{name}-{precision}", session_options, log=self._log)

    def _encode_texts_now(self, texts: list[str]) -> np.ndarray:
        if self.tower_precision["text"] == "int8" and len(texts) > 1:
            # int8 scales activations per batch: one text at a time keeps a text's vector independent of its batch
            return np.concatenate([self._encode_texts_now([text]) for text in texts])
        return self._run("text", self.cut(self.tokenizer(texts)))

    def cut(self, tokens: np.ndarray) -> np.ndarray:
        """The token rows cut right after the last pooled token (exact under the causal mask)."""
        if not self.trim:
            return tokens
        if self.pool == "argmax":
            pooled = tokens.argmax(axis=-1)
        elif self.pool == "eos":
            pooled = (tokens == self.eos_id).argmax(axis=-1)
        else:
            pooled = np.zeros(len(tokens), dtype=np.int64)
        return np.ascontiguousarray(tokens[:, : min(int(pooled.max()) + 1, tokens.shape[1])])
