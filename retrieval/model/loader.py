"""Which backend embeds what: queries on ONNX Runtime where the model exports (else torch), ingest on torch (its
image tower on OpenVINO where ``[model] ingest_engine`` picks it: retrieval.model.openvino_backend).

``[model] engine``: ``auto`` (ONNX Runtime where the export exists or can be made, torch otherwise, with
one line saying why), ``onnx`` (ONNX Runtime or an error) or ``torch``. The first query process of a
model exports it (that process needs torch; ``clipdex model export`` does it ahead of time); later ones
import no torch at all. Nothing here imports torch until a torch encoder or an export is needed.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

from retrieval.errors import ClipdexError, first_line
from retrieval.model.encoder import Encoder, ModelIdentity
from retrieval.model.onnx_files import Export, ExportProblem, Unexportable, find_export
from retrieval.model.precision import mixable
from retrieval.model.source import check_source, student_of
from retrieval.model.weights import source_label, weights_fingerprint
from retrieval.settings import ModelSettings

TOWERS = {"image": "visual", "text": "textual"}


def note(line: str) -> None:
    """One line on stderr (``clipdex: ...``): what the model loading chose, and why."""
    print(f"clipdex: {line}", file=sys.stderr, flush=True)


def onnx_precisions(settings: ModelSettings, built: str | None, export: Export) -> dict[str, str]:
    """The exported variant each tower runs (``{"image": "int8", "text": "int8"}``) for a collection built at
    ``built`` (None: no collection yet).

    ``[model] precision`` fp32 or int8 asks for that one (the collection may then refuse it, as on torch);
    anything else (auto, or an ingest precision such as fp16) prefers int8, which opens and runs faster,
    where it mixes with the collection, else fp32. A tower without an int8 variant runs fp32."""
    wanted = [settings.precision] if settings.precision in ("fp32", "int8") else ["int8", "fp32"]
    for precision in wanted:
        towers = {t: precision if precision in export.precisions(name) else "fp32" for t, name in TOWERS.items()}
        if built is None or mixable(built, "int8" if "int8" in towers.values() else "fp32"):
            return towers
    return towers


def identity(settings: ModelSettings, export: Export) -> ModelIdentity:
    """The model's identity from its settings and export manifest, without loading it."""
    return ModelIdentity(settings.name, source_label(settings), int(export.manifest["dim"]),
                         weights_fingerprint(settings) or "", student_of=student_of(settings))


def _export(settings: ModelSettings, log: Callable[[str], None]) -> Export:
    from retrieval.model.export import export_model

    return export_model(settings, log=log)


def _usable_export(settings: ModelSettings, log: Callable[[str], None]) -> Export:
    """The model's sound export, made (or made again) here where it is missing or incomplete."""
    export = find_export(settings)  # Unexportable for random weights
    if export is not None and export.unexportable:
        raise Unexportable(export.unexportable)
    damaged = export is not None and not export.sizes_ok()
    if damaged:
        log(f"the ONNX export in {export.folder} is incomplete or damaged; exporting it again")
    if export is None or damaged:
        check_source(settings)  # a bad model name is one line before anything slow
        export = _export(settings, (lambda _line: None) if damaged else log)
    if export.unexportable:
        raise Unexportable(export.unexportable)
    return export


def load_query_encoder(settings: ModelSettings, built: str | None = None, *,
                       log: Callable[[str], None] = note) -> Encoder:
    """The encoder for queries: ONNX Runtime where possible (see the module doc), else torch."""
    if settings.engine != "torch":
        try:
            export = _usable_export(settings, log)
            towers = onnx_precisions(settings, built, export)
            from retrieval.model.onnx_backend import OnnxEncoder

            def repair(problem: str) -> Export:
                log(f"{problem}; exporting it again")
                fresh = _export(settings, lambda _line: None)
                if fresh.unexportable:
                    raise ClipdexError(f"model {settings.name} no longer exports to ONNX: {fresh.unexportable}")
                return fresh

            return OnnxEncoder(export, identity(settings, export), towers, repair=repair, log=log)
        except Unexportable as exc:
            if settings.engine == "onnx":
                raise ClipdexError(f"model {settings.name} cannot run on ONNX Runtime: {exc} "
                                   "(set model.engine = \"auto\" to search on torch)") from None
            log(f"model {settings.name} cannot run on ONNX Runtime ({exc}); searching on torch")
        except ExportProblem as exc:
            if settings.engine == "onnx":
                raise ClipdexError(str(exc)) from None
            log(f"{exc}; searching on torch")
    return load_ingest_encoder(settings)


def open_text_ahead(settings: ModelSettings, texts: list[str]) -> None:
    """Start, in a background thread, what a one-shot text search will need: the tokenizer and the text tower's
    ONNX Runtime session (retrieval.model.ort_cache.open_ahead), while the process goes on importing and
    opening the store. Does nothing where the model has no sound export yet (the search exports it), where
    the texts' vectors are cached on disk (retrieval.model.text_cache), or where the engine is torch. The
    tower precision is guessed without the collection (as for a new one); a wrong guess costs only that thread,
    as does a search that needs the session before the thread has started it (it then makes its own)."""
    if settings.engine == "torch" or not texts or os.environ.get("CLIPDEX_OPEN_AHEAD") != "1":
        return  # off unless CLIPDEX_OPEN_AHEAD=1: on a busy 2-core machine it measured no faster (benchmarks.md)

    def work() -> None:
        from retrieval.model import text_cache
        from retrieval.model.onnx_backend import TOWER_OF, session_options, tokenizer_of
        from retrieval.model.ort_cache import open_ahead

        try:
            export = find_export(settings)
            if export is None or export.unexportable or not export.sizes_ok():
                return
            precision = onnx_precisions(settings, None, export)["text"]
            folder = text_cache.folder_for(str(export.manifest["key"]), precision) if text_cache.enabled() else None
            dim = int(export.manifest["dim"])
            if folder is not None and all(text_cache.get(folder, t, dim) is not None for t in texts):
                return
            name = TOWER_OF["text"]
            open_ahead(lambda: export.read(name, precision), str(export.entry(name, precision)["xxh3"]),
                       export.folder, f"{name}-{precision}", session_options, log=note)
            tokenizer_of(export.manifest)
        except Exception:  # noqa: BLE001  only a head start: the search itself says what is wrong
            return

    threading.Thread(target=work, name="clipdex-text-ahead").start()


def torch_device(settings: ModelSettings) -> Any:
    """The torch device ``settings`` asks for (imports torch)."""
    from retrieval.model.torch_backend import pick_device

    return pick_device(settings.device)


def load_ingest_encoder(settings: ModelSettings, *, log: Callable[[str], None] = note,
                        flags: Iterable[str] | None = None, installed: bool | None = None,
                        wins_on: tuple[frozenset[str], ...] | None = None) -> Encoder:
    """The encoder for ingest: open_clip on torch, its image tower on OpenVINO where
    :func:`retrieval.model.ingest_engine.for_settings` says (``flags``, ``installed``, ``wins_on``: as there).

    Where ``auto`` picks OpenVINO, a model that cannot be exported (random weights) ingests on torch without a
    word, and one whose export or compilation fails says why in one line first; ``"openvino"`` makes both an
    error."""
    from retrieval.model import precision as precisions
    from retrieval.model.ingest_engine import WINS_ON, for_settings
    from retrieval.model.torch_backend import TorchEncoder

    device = torch_device(settings)
    if for_settings(settings, device.type, flags, installed, WINS_ON if wins_on is None else wins_on) == "openvino":
        explicit = settings.ingest_engine == "openvino"
        try:
            export = _usable_export(settings, log)
            from retrieval.model.openvino_backend import OpenVinoEncoder, compile_ahead

            # compiled in a thread while torch loads the model (OpenVINO's compile leaves the GIL)
            images = compile_ahead(export, precisions.resolve(settings.precision, device, flags))
            return OpenVinoEncoder.load(settings).use(images.result())  # type: ignore[attr-defined]
        except Unexportable as exc:
            if explicit:
                raise ClipdexError(f"model {settings.name} cannot run on OpenVINO: {exc} "
                                   "(set model.ingest_engine = \"auto\" to ingest on torch)") from None
        except ClipdexError:
            raise
        except Exception as exc:  # noqa: BLE001  an export problem, or OpenVINO's own errors: torch still runs
            line = f"OpenVINO cannot run the image tower of {settings.name} ({first_line(exc)[:200]})"
            if explicit:
                raise ClipdexError(line) from None
            log(f"{line}; ingesting on torch")
    return TorchEncoder.load(settings)


def planned_engines(settings: ModelSettings, built: str | None) -> dict[str, str]:
    """What each tower of a query would run on, read from the export without loading anything (status)."""
    if settings.engine == "torch":
        return dict.fromkeys(TOWERS, "torch")
    try:
        export = find_export(settings)
    except Unexportable as exc:
        return dict.fromkeys(TOWERS, f"torch ({exc})")
    if export is None or not export.sizes_ok():
        return dict.fromkeys(TOWERS, "onnxruntime (exported on the first search)")
    if export.unexportable:
        return dict.fromkeys(TOWERS, f"torch ({export.unexportable})")
    towers = onnx_precisions(settings, built, export)
    return {tower: f"onnxruntime {precision}" for tower, precision in towers.items()}


class Encoders:
    """The query and ingest encoders of one model setting, each loaded on first use and shared by every
    ``Index`` over the same model (a server's searches and its watcher)."""

    def __init__(self, settings: ModelSettings, encoder: Encoder | None = None):
        """``encoder``: one already loaded (it serves queries, and ingest too if it can)."""
        self.settings = settings
        self._query: Encoder | None = encoder
        self._ingest: Encoder | None = encoder if encoder is not None and encoder.ingests else None
        self._query_lock, self._ingest_lock = threading.Lock(), threading.Lock()
        """One per role, never both held: a server's search holds its store lock while asking for the query
        encoder, and a sync asks the store (under that lock) while loading the ingest encoder."""

    @property
    def query_loaded(self) -> Encoder | None:
        return self._query

    def query(self, built: str | None, check: Callable[[Encoder], Any]) -> Encoder:
        """The query encoder for a collection built at ``built``; ``check`` vets it before it is kept."""
        if self._query is None:
            with self._query_lock:
                if self._query is None:
                    encoder = self._ingest or load_query_encoder(self.settings, built)
                    check(encoder)
                    self._query = encoder
        return self._query

    def ingest(self, check: Callable[[Encoder], Any]) -> Encoder:
        if self._ingest is None:
            with self._ingest_lock:
                if self._ingest is None:
                    encoder = load_ingest_encoder(self.settings)
                    check(encoder)
                    self._ingest = encoder
        return self._ingest
