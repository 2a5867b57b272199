"""The library API the CLI (and any other front end) is a thin shell over.

    from retrieval import Index, load_settings
    with Index.open(load_settings("configs/demo.toml")) as index:
        index.ingest(["samples/"])
        hits = index.search(text="a sneaker", limit=5)
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.scan import root_error
from ingest.video.counts import video_counts
from retrieval import hints
from retrieval.errors import ClipdexError
from retrieval.model.loader import Encoders, planned_engines
from retrieval.model.precision import mixable, mixes_with
from retrieval.model.weights import weights_fingerprint
from retrieval.search import run
from retrieval.search.request import SearchParams, SearchRequest
from retrieval.search.vector import query_vector
from retrieval.settings import Settings
from retrieval.status import STATUS_KEYS  # noqa: F401  (re-exported: retrieval.index.STATUS_KEYS)
from retrieval.store import LAYOUT, CollectionMeta, Hit, MetadataLost, VectorStore, open_store

if TYPE_CHECKING:  # torch, open_clip and the ingest pipeline load only when a command embeds something
    from ingest.finish import Progress
    from ingest.ocr import OcrReport
    from ingest.pipeline import IngestReport
    from retrieval.model.encoder import Encoder


class Index:
    """One collection and the model that fills it. The model loads on first use."""

    def __init__(self, settings: Settings, store: VectorStore, encoder: Encoder | None = None, *,
                 encoders: Encoders | None = None):
        """``encoder``: an already loaded model; ``encoders``: another Index's (to share its models)."""
        self.settings = settings
        self.store = store
        self._check_model(self.store.meta())
        if encoder is not None:
            self._checked(encoder)
        self.encoders = encoders or Encoders(settings.model, encoder)

    @classmethod
    def open(cls, settings: Settings, *, create: bool = False, encoder: Encoder | None = None,
             owner: str | None = None) -> Index:
        """Open the collection ``settings.store`` names (``create``: allow making it).

        ``encoder``: an already loaded model for these settings, to share it instead of loading it again.
        ``owner``: who holds the store while it is open, named to any second opener
        (``retrieval.store.lock.serve_owner(url)`` for a server).
        """
        try:
            store = open_store(settings, create=create, owner=owner)
        except MetadataLost as lost:
            raise ClipdexError(lost.fix(_metadata_fix(settings, lost))) from None
        try:
            return cls(settings, store, encoder)
        except BaseException:
            store.close()
            raise

    def __enter__(self) -> Index:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.store.close()

    # -- model ---------------------------------------------------------------------------------
    def _check_model(self, meta: CollectionMeta | None) -> None:
        """Refuse, at open, a collection filled by another model (by weights hash, else by name)."""
        model = self.settings.model
        if meta is None:
            return
        weights = weights_fingerprint(model)  # None: a hub model not downloaded yet, checked once loaded
        if weights is None or not (meta.weights_id or weights):
            same = meta.model == model.name
        else:
            same = meta.weights_id == weights
        if not same:
            raise ClipdexError(
                f"collection '{self.settings.store.collection}' was built with model {meta.model} (weights "
                f"{meta.weights_id or meta.pretrained or 'random init'}), but the settings name {model.name} "
                f"(weights {weights or model.pretrained or 'random init'}); use the same model or another "
                "--collection")

    def _checked(self, encoder: Encoder) -> Encoder:
        meta = self.store.meta()
        ident = encoder.identity
        if meta is None:
            return encoder
        if meta.weights_id or ident.weights:
            same = (meta.weights_id, meta.dim) == (ident.weights, ident.dim)
        else:
            same = (meta.pretrained, meta.dim) == (ident.pretrained, ident.dim)
        if not same:
            raise ClipdexError(
                f"collection '{self.settings.store.collection}' holds vectors of {meta.model} with weights "
                f"{meta.weights_id or meta.pretrained or 'random init'} (dim {meta.dim}); the model now configured "
                f"has weights {ident.weights or ident.pretrained or 'random init'} (dim {ident.dim}); use another "
                "--collection")
        for now in dict.fromkeys((encoder.precision, getattr(encoder, "text_precision", encoder.precision))):
            if not mixable(meta.precision, now):
                raise ClipdexError(f"collection '{self.settings.store.collection}' was built at precision "
                                   f"{meta.precision}, which does not mix with {now}; set model.precision "
                                   f"to {' or '.join(mixes_with(meta.precision))}, or use another --collection")
        return encoder

    @property
    def encoder(self) -> Encoder:
        """The model that embeds queries (whichever backend runs it: retrieval.model.loader)."""
        meta = self.store.meta()
        return self.encoders.query(meta.precision if meta else None, self._checked)

    @property
    def ingest_encoder(self) -> Encoder:
        """The model that embeds ingested images."""
        return self.encoders.ingest(self._checked)

    # -- ingest --------------------------------------------------------------------------------
    def ingest(self, roots: Sequence[str | os.PathLike[str]], *, progress: bool | Progress = False,
               prune: bool = False, ray: str | None = None, ocr: bool | None = None,
               retry_failed: bool = False) -> IngestReport:
        """Embed new and changed images below ``roots``; drop points of files known to be gone from them.

        ``progress``: True for a bar on stderr, or a callback ``progress(stage, done, total)`` (stage
        "read", "delete" or "index"). ``prune``: confirm a deletion of more than
        ``[ingest] max_delete_fraction`` of a root's points (held back otherwise, see the report).
        ``ray``: run the stages on a Ray cluster at this address (``auto``, ``local``, ``HOST:PORT``;
        None or "" = in this process; ``clipdex ingest`` passes ``[ray] address``), see ``ingest.ray_ingest``.
        ``ocr``: run the OCR pass afterwards (None: ``[ocr] enabled``), see :meth:`read_text`.
        ``retry_failed``: also read the files that failed before and are unchanged (skipped otherwise, see
        ``ingest.failures``).
        """
        from ingest.pipeline import ingest

        if not roots:
            raise ClipdexError("ingest needs at least one folder")
        self._check_roots(roots)  # a typo'd folder is said at once, before a model loads or a collection is made
        address = ray or ""
        if address:
            from ingest.ray_ingest import check_address, ingest_on_ray

            check_address(address)
        if problems := self.store.problems():
            raise ClipdexError(f"store {self.store.location} is damaged ({problems[0]}); nothing was written: "
                               "restore it from a backup, or ingest into a new --collection")
        # An existing collection loads its model only when a file needs reading: a re-run with nothing new or
        # changed never loads torch.
        encoder = self.ingest_encoder if self.store.meta() is None or address else _Lazy(lambda: self.ingest_encoder)
        if self.store.meta() is None:
            ident = encoder.identity
            self.store.create(CollectionMeta(ident.name, ident.pretrained, ident.dim, precision=encoder.precision,
                                             weights=ident.weights, student_of=ident.student_of))
        if address:
            report = ingest_on_ray([os.fspath(r) for r in roots], self.store, encoder, self.settings,
                                   address=address, progress=progress, prune=prune, retry_failed=retry_failed)
        else:
            report = ingest([os.fspath(r) for r in roots], self.store, encoder, self.settings.ingest,
                            batch_size=self.settings.model.batch_size, progress=progress, prune=prune,
                            index_threshold=self.settings.store.index_threshold, video=self.settings.video,
                            retry_failed=retry_failed)
        if self.settings.ocr.enabled if ocr is None else ocr:  # the OCR pass, after the CLIP pass
            report.ocr = self.read_text(progress=progress).as_dict()
        from retrieval.concepts.teach import tag_new

        report.concepts = tag_new(self)  # new and moved files join the concepts they belong to
        return report

    def _check_roots(self, roots: Sequence[str | os.PathLike[str]]) -> None:
        """Refuse a root that cannot be listed (missing, unreadable, not a folder) when the store certainly holds
        nothing below it (no ingested folder at, below or above it): the pipeline would refuse it too, after
        loading the model. One that may hold points (an unmounted drive) is left to the pipeline (kept)."""
        from ingest.records import is_below, path_key
        from ingest.scan import EMPTY, RootListing, root_message

        stored = list(self.store.root_counts()) if self.store.meta() is not None else []
        for root in roots:
            top = os.path.abspath(os.fsdecode(os.fspath(root)))
            error = root_error(top)
            if not error or error == EMPTY:
                continue
            key = path_key(top)
            if not any(is_below(r, key) or is_below(key, r) or r == key for r in stored):
                raise ClipdexError(root_message(RootListing(top, error)))

    def read_text(self, *, progress: bool | Progress = False) -> OcrReport:
        """The OCR pass over every image not yet read by the configured OCR engine (ingest.ocr)."""
        from ingest.ocr import run_ocr

        if not hasattr(self.store, "ocr_pending"):
            raise ClipdexError(f"OCR needs the embedded store; {self.store.location} cannot hold recognised "
                               "text in clipdex yet (see docs/ocr.md)")
        if self.store.meta() is None:
            raise ClipdexError(self._missing("ingest DIR --ocr"))
        return run_ocr(self.store, self.settings, progress=progress)

    # -- search --------------------------------------------------------------------------------
    def query_vector(self, request: SearchParams | str | None = None, /, **fields: Any) -> np.ndarray:
        """The unit vector of a request's text, example image and negative prompts (retrieval.search.vector).

        Takes a :class:`SearchRequest` or its fields as keywords, like :meth:`search`.
        """
        return query_vector(self, SearchRequest.of(request, **fields))

    def search(self, request: SearchParams | str | None = None, /, **fields: Any) -> list[Hit]:
        """Ranked hits, best first: ``search(SearchRequest(...))`` or ``search(text=..., image=..., limit=...)``.

        The fields and their limits are :class:`retrieval.search.request.SearchRequest`'s; a field beyond a
        limit raises :class:`retrieval.search.request.SearchRequestError`. ``folder`` restricts to a subtree
        inside Qdrant. ``like``/``unlike`` (indexed paths or point ids) search by the stored vectors, nothing is
        decoded or encoded for them (Qdrant's average_vector recommendation); with a text or image too, that
        query vector is one more positive example; with neither, negative prompts are unlike examples.
        How a search runs: the ``retrieval.search`` package (``run.search``). ``image`` may also be a
        ``PIL.Image.Image`` (written to a temporary PNG for the search, then deleted).
        """
        image = fields.get("image")
        if image is not None and not isinstance(image, (str, os.PathLike)) and hasattr(image, "save"):
            import tempfile

            fd, path = tempfile.mkstemp(prefix="clipdex-query-", suffix=".png")
            try:
                png_modes = ("1", "L", "LA", "I", "P", "RGB", "RGBA")  # others (CMYK, YCbCr, F): as RGB
                with os.fdopen(fd, "wb") as fh:
                    (image if image.mode in png_modes else image.convert("RGB")).save(fh, format="PNG")
                return run.search(self, request, **(fields | {"image": path}))
            finally:
                os.unlink(path)
        return run.search(self, request, **fields)

    def stored_vectors(self, refs: Sequence[str]) -> np.ndarray:
        """The stored vectors of indexed paths or point ids (rows, in order), read from the store as they are.

        Raises :class:`retrieval.search.request.UnknownPointError` naming what is not in the collection.
        """
        return run.stored_vectors(self, refs)

    # -- status --------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        meta = self.store.meta()
        roots = self.roots()
        return {"collection": self.settings.store.collection, "points": self.store.count(),
                "model": meta.model if meta else self.settings.model.name,
                "dim": meta.dim if meta else 0, "pretrained": meta.pretrained if meta else "",
                "student_of": meta.student_of if meta else "",
                "store": self.store.location, "label": self.settings.model.label,
                "roots": roots, "offline": [r for r in roots if r["offline"]],
                "unindexed": self.store.unindexed(), "problems": self.store.problems(),
                "ocr": self.ocr_status(), "engines": self.engines(meta), **video_counts(self.store),
                "failed": self.failed_counts(), "layout": self.store.layout() if meta else LAYOUT}

    def failed_counts(self) -> dict[str, int] | None:
        """``{"images", "videos"}``: the files ingest could not read, from the collection's failure ledger
        (``ingest.failures``); None on a Qdrant server store, which has no local folder to keep it in."""
        from ingest import failures

        folder = failures.folder_of(self.store)
        return failures.counts(folder) if folder is not None else None

    def engines(self, meta: CollectionMeta | None = None) -> dict[str, str]:
        """Which engine runs each tower: queries' image and text towers (the loaded model's, else what the
        export says, without loading anything), and ingest's."""
        loaded = self.encoders.query_loaded
        meta = meta or self.store.meta()
        towers = loaded.engines if loaded is not None else planned_engines(
            self.settings.model, meta.precision if meta else None)
        from retrieval.model.ingest_engine import planned

        return {**towers, "ingest": planned(self.settings.model)}

    def rebuild(self, progress: Any = None) -> int:
        """Rewrite an embedded store in the current layout (``clipdex rebuild``); returns its points."""
        rebuild = getattr(self.store, "rebuild", None)
        if rebuild is None:
            raise ClipdexError(f"{self.store.location}: rebuild is for the embedded store; on a Qdrant server, "
                               "create a new --collection and ingest into it")
        if self.store.meta() is None:
            raise ClipdexError(self._missing())
        return int(rebuild(progress))

    def _missing(self, then: str = "ingest DIR") -> str:
        """The message for a collection that does not exist yet: what the store holds instead, or what fills it."""
        store = self.settings.store
        return hints.missing_collection(store.collection, self.store.location,
                                        None if store.url else self.settings.store_path, then)

    def check(self, shown: int = 20) -> dict[str, Any]:
        """Read every stored vector and mark the damaged points, so the next ingest embeds their files again.

        Returns the points read, the damaged count and up to ``shown`` of them (path, reason), and the
        store's file problems. Nothing is deleted (see retrieval.store.health).
        """
        from retrieval.store.health import DAMAGED_MARK, find_damaged

        damage = find_damaged(self.store)
        ids = sorted(damage.damaged)
        for start in range(0, len(ids), 256):
            self.store.set_payload(ids[start:start + 256], DAMAGED_MARK)
        examples = sorted(damage.damaged.values())[:shown]
        losses = getattr(self.store, "losses", None)  # the embedded store's own records (retrieval.store.segments)
        return {"checked": damage.checked, "damaged": len(ids), "problems": self.store.problems(),
                "examples": [{"path": path, "reason": reason} for path, reason in examples],
                "files": losses() if losses else None}

    def ocr_status(self) -> dict[str, int]:
        """``{"text": points with recognised text, "pending": points the OCR engine has not read}``."""
        from ingest.ocr import counts

        return counts(self.store, self.settings)

    def cameras(self, limit: int = 200) -> list[dict[str, Any]]:
        """The EXIF camera models in the collection (what ``camera=`` matches), most points first."""
        counts = self.store.facet_counts("camera_model", limit)
        return [{"name": name, "points": n} for name, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
                if n > 0 and name]

    def roots(self) -> list[dict[str, Any]]:
        """Each ingested root with its points and, if it cannot be listed now, why (``offline``)."""
        rows = []
        for path, points in sorted(self.store.root_counts().items()):
            if points <= 0:  # a payload index may keep a value whose points are all gone
                continue
            rows.append({"path": path, "points": points, "offline": root_error(path)})
        return rows




def _metadata_fix(settings: Settings, lost: MetadataLost) -> str:
    """How to rebuild a lost ``clipdex.json``: the line the configured model would have written."""
    import json

    from retrieval.model import precision
    from retrieval.model.torch_backend import pick_device, student_of
    from retrieval.model.weights import source_label

    model = settings.model
    meta = CollectionMeta(model.name, source_label(model), lost.dim or 0,
                          precision=precision.resolve(model.precision, pick_device(model.device)),
                          weights=weights_fingerprint(model) or "", student_of=student_of(model))
    return (f"if the configured model ({model.name}) built them, write this line to {lost.meta_file}: "
            f"{json.dumps(meta.as_dict())}; else restore that file from a backup")


class _Lazy:
    """An object loaded on its first use (the ingest model of an existing collection)."""

    def __init__(self, load: Any):
        self._load = load
        self._real: Any = None

    def __getattr__(self, name: str) -> Any:
        if self._real is None:
            self._real = self._load()
        return getattr(self._real, name)
