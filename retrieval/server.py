"""``clipdex serve``: the library's search over HTTP, plus a small web page.

A thin shell over :class:`retrieval.index.Index`, like the CLI: one Index is opened at start-up and
shared by all requests (the embedded store allows one opener per process), calls into it are
serialised with a lock that is held for one search or one store call, never for a whole sync (see
``retrieval.sync`` for ``--watch``). Only files that are in the collection are ever served.
"""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, Query, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from PIL import Image
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from ingest.decode import FORMATS, DecodeError
from ingest.decode_pool import DecodePool, DecodersBusy
from ingest.records import fs_path, point_id
from ingest.scan import is_video_name
from retrieval import hints
from retrieval.errors import ClipdexError
from retrieval.index import Index
from retrieval.search.moments import moment_at
from retrieval.search.request import SearchParams, SearchRequest, SearchRequestError, UnknownPointError
from retrieval.search.run import hit_row
from retrieval.serving import browse as browse_routes
from retrieval.serving import concepts as concept_routes
from retrieval.serving import duplicates as duplicate_routes
from retrieval.serving.auth import ApiKey
from retrieval.serving.fd_response import FdResponse
from retrieval.serving.media import Unsatisfiable, byte_range, video_type
from retrieval.serving.middleware import (
    ApiPrecondition,
    BodyLimit,
    ErrorBoundary,
    HeadAsGet,
    JsonBodyLimit,
    SecurityHeaders,
    UploadSlots,
    content_security_policy,
    cross_site,
    field_message,
    validation_detail,
)
from retrieval.serving.safe_open import NotServable, OpenedFile, open_inside
from retrieval.serving.store_guard import StoreGuard
from retrieval.serving.thumbs import ThumbnailCache, thumb_key
from retrieval.settings import ServeSettings
from retrieval.status import STATUS_KEYS
from retrieval.store.health import StoreDamaged
from retrieval.sync import Syncer

WEB_DIR = Path(__file__).resolve().parent / "web"
ASSET_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
MAX_UPLOAD_BYTES = 64 << 20
FORM_FIELDS_BYTES = 64 << 10
"""Room for the other form fields beside an upload: a request body may be this much over the upload limit."""


class ApiError(Exception):
    """An HTTP error answered as ``{"error": message}``."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


STATUS_WAIT_S = 1.0
"""How long ``GET /api/status`` waits for the store (busy with a sync's batch or an index build) before it
answers with the collection figures it read last (``busy: true``) and the sync's live progress."""


def status_doc(info: dict[str, Any]) -> dict[str, Any]:
    """``clipdex status --json`` plus the model's ``label``, ``pretrained`` tag and the ``unindexed`` points."""
    return {k: info[k] for k in STATUS_KEYS} | {k: info[k] for k in ("pretrained", "label", "unindexed")}


def _one_line(text: str) -> str:
    lines = str(text).strip().splitlines()
    return lines[0] if lines else "error"


class Service:
    """The shared Index, its lock, and the operations the routes call."""

    def __init__(self, index: Index, max_upload_bytes: int = MAX_UPLOAD_BYTES, watch: Sequence[str] = (),
                 serve: ServeSettings | None = None):
        serve = serve or index.settings.serve
        self.index = index
        self.lock = threading.Lock()
        self.serve = serve
        self.decoders = DecodePool(serve.decode_workers, serve.decode_timeout_s, serve.decode_memory_mb)
        self.thumbs = ThumbnailCache(int(serve.thumb_cache_mb * (1 << 20)))
        self.store_guard = StoreGuard(index.store)
        self.max_upload_bytes = max_upload_bytes
        self.syncer = Syncer(index, watch, index.settings.serve, self.lock) if watch else None
        self._last_status: dict[str, Any] | None = None

    def status(self) -> dict[str, Any]:
        """The collection's status, its cameras, and the sync's progress (live, even while the store is busy)."""
        sync = self.syncer.status() if self.syncer else None
        if self.lock.acquire(timeout=STATUS_WAIT_S):
            try:
                self._last_status = status_doc(self.index.status()) | {"cameras": self.index.cameras()}
            finally:
                self.lock.release()
            busy = False
        else:
            busy = True
            if self._last_status is None:  # nothing read yet: wait for the store after all
                with self.lock:
                    self._last_status = status_doc(self.index.status()) | {"cameras": self.index.cameras()}
        settings = self.index.settings  # the page's hints name the settings this server runs with
        commands = {"ingest": hints.command_line("ingest DIR"), "watch": hints.command_line("serve --watch DIR")}
        return self._last_status | {"sync": sync, "busy": busy, "can_move": bool(settings.duplicates.move_to),
                                    "settings": self.settings_flags(), "commands": commands}

    def settings_flags(self) -> list[str]:
        """The CLI flags that name this server's store and collection (``--config``, ``--store`` or
        ``--qdrant-url``, ``--collection``): the page's hints carry them, as a bare command could write elsewhere."""
        settings = self.index.settings
        flags = ["--config", os.path.abspath(settings.config_path)] if settings.config_path else []
        flags += ["--qdrant-url", settings.store.url] if settings.store.url else ["--store", str(settings.store_path)]
        return flags + ["--collection", settings.store.collection]

    def sync(self, root: str | None, prune: bool = False) -> tuple[bool, dict[str, Any]]:
        """Start a full sync of a watched root (None: all of them), or report the one running."""
        if self.syncer is None:
            raise ApiError(409, f"this server watches no folder (start it with {hints.command('serve --watch DIR')})")
        return self.syncer.request(root if root and root.strip() else None, prune=prune)

    def search(self, params: SearchParams, image: str | None = None) -> list[dict[str, Any]]:
        """The rows of ``clipdex search --json`` for ``params`` (and an example image file, if any)."""
        try:
            request = SearchRequest.of(params, image=image)
            with self.lock:
                hits = self.index.search(request)
        except UnknownPointError as exc:
            raise ApiError(404, str(exc)) from None
        except SearchRequestError as exc:  # a limit across fields, e.g. one example both liked and unliked
            raise ApiError(422, str(exc)) from None
        return [hit_row(h) for h in hits]

    def indexed_file(self, path: str) -> OpenedFile:
        """``path`` opened once, if it is exactly the path of a point in the collection and what opened is a
        regular file inside an ingested root (the point's own, or another); else a 404."""
        if not path or "\x00" in path:
            raise ApiError(404, "not an indexed file")
        payload = self.stored_payload(path)
        if payload is None:
            raise ApiError(404, f"not an indexed file: {path}")
        own = payload.get("root")
        file = fs_path(path)  # the file itself: a name that is not UTF-8 has an escaped key (ingest.records)
        try:
            try:
                return open_inside(file, [fs_path(own)] if own else self._roots())
            except NotServable:
                if not own:
                    raise
                return open_inside(file, self._roots())  # a link to another ingested root's file
        except NotServable as exc:
            raise ApiError(404, str(exc).replace(file, path)) from None

    def stored_payload(self, path: str) -> dict[str, Any] | None:
        """The payload of the point stored for ``path`` (a video's first moment), or None."""
        with self.lock:
            if self.index.store.meta() is None:
                return None
            found = self.index.store.points([point_id(path)])
            payloads = [payload for _, payload in found.values()]
            if not payloads and is_video_name(path):
                hit = moment_at(self.index.store, path, None)
                payloads = [hit.payload] if hit is not None else []
        return payloads[0] if payloads and payloads[0].get("path") == path else None

    def _roots(self) -> list[str]:
        with self.lock:
            return [fs_path(root) for root in self.index.store.root_counts()]

    @contextmanager
    def upload(self, upload: UploadFile | None) -> Iterator[str | None]:
        """The uploaded example image decoded (in a worker) into a small temporary bitmap, or None.

        The worker reads the form parser's own spooled copy through its descriptor and writes the bitmap
        into a file created here (``mkstemp``: never a name another process could have prepared); the
        bitmap is :func:`ingest.query_image.query_image`'s result, a few hundred kB, deleted afterwards.
        """
        if upload is None or not upload.filename:
            yield None
            return
        source = upload.file.fileno()  # (a spooled file in memory is written to an unnamed temporary file)
        if os.fstat(source).st_size > self.max_upload_bytes:
            raise ApiError(413, f"uploaded image is larger than {self.max_upload_bytes / (1 << 20):.4g} MiB")
        fd, bitmap = tempfile.mkstemp(prefix="clipdex-query-", suffix=".bmp")
        try:
            cap = min(self.serve.query_max_megapixels, self.index.settings.ingest.max_megapixels)
            try:
                self.decoders.run("bitmap", self.index.encoder.image_size, cap, fds=(source, fd))
            except DecodeError as exc:
                raise ClipdexError(f"cannot read query image {upload.filename}: {exc}") from None
            except DecodersBusy as exc:
                raise ApiError(503, str(exc)) from None
            finally:
                os.close(fd)
                upload.file.close()  # the form parser's copy is not needed any more
            try:
                yield bitmap  # decoded within the budget, in a worker; loading it again is plain and quick
            except ClipdexError as exc:  # name the upload, not the temporary file
                raise ClipdexError(str(exc).replace(bitmap, upload.filename)) from None
        finally:
            with suppress(FileNotFoundError):
                os.unlink(bitmap)

    def thumbnail(self, opened: OpenedFile, path: str, size: int, time_s: float | None = None) -> tuple[bytes, bool]:
        """A JPEG at most ``size`` pixels on its longer side, and whether it came from the cache; of a video, its
        frame at ``time_s`` (default: its first moment's frame)."""
        video = is_video_name(path)
        if video and time_s is None:
            first = self.stored_payload(path) or {}
            time_s = float(first.get("time_s") or 0.0)
        key = thumb_key(f"{path}#t={time_s:.3f}" if video else path, size, opened.st)
        if (cached := self.thumbs.get(key)) is not None:
            return cached, True
        cap = self.index.settings.ingest.max_megapixels
        try:
            if video:
                data = self.decoders.run("video_frame", time_s, size, cap, fds=(opened.fd,))
            else:
                data = self.decoders.run("thumbnail", size, cap, fds=(opened.fd,))
        except DecodeError as exc:
            raise ApiError(415, f"cannot read {path}: {exc}") from None
        except DecodersBusy as exc:
            raise ApiError(503, str(exc)) from None
        self.thumbs.put(key, data)
        return data, False


def media_type(opened: OpenedFile, path: str) -> str:
    """The MIME type of an open image file, from its content (not its name)."""
    try:
        with os.fdopen(os.dup(opened.fd), "rb") as fh, \
                Image.open(fh, formats=[f for f in FORMATS if f in Image.OPEN]) as im:
            fmt = im.format or ""
    except Exception:
        raise ApiError(415, f"not a readable image: {path}") from None
    return Image.MIME.get(fmt) or {"HEIF": "image/heif", "AVIF": "image/avif"}.get(fmt, "application/octet-stream")


def _validation_message(exc: RequestValidationError) -> str:
    errors = exc.errors()
    if not errors:
        return "invalid request"
    first = errors[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("query", "body"))
    message = field_message(str(first.get("msg", "invalid value")))
    return f"{where}: {message}" if where else message


def _install_error_handlers(app: FastAPI) -> None:
    def answer(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": _one_line(message)}, status_code=status)

    @app.exception_handler(ClipdexError)
    async def clipdex_error(request: Request, exc: ClipdexError) -> JSONResponse:
        return answer(400, str(exc))

    @app.exception_handler(StoreDamaged)
    async def store_damaged(request: Request, exc: StoreDamaged) -> JSONResponse:
        return answer(503, str(exc))  # the store's files, not the client's request

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc.status, str(exc))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"error": _validation_message(exc), "detail": validation_detail(exc.errors())},
                            status_code=422)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        response = answer(exc.status_code, str(exc.detail))
        response.headers.update(getattr(exc, "headers", None) or {})  # e.g. Retry-After
        return response


def create_app(index: Index, *, max_upload_bytes: int = MAX_UPLOAD_BYTES,
               allowed_hosts: Sequence[str] | None = None, watch: Sequence[str] = (), api_key: str | None = None,
               serve: ServeSettings | None = None) -> FastAPI:
    """The HTTP API and web page over an open :class:`Index` (which the caller closes).

    ``allowed_hosts``: accept only these ``Host`` headers (e.g. loopback names, against DNS rebinding).
    ``watch``: folders kept in sync while the app runs (its lifespan starts and stops the sync thread).
    ``api_key``: required on every ``/api/`` route (None: ``[serve] api_key``; "": no key).
    ``serve``: decode budget, workers and thumbnail cache (default: the index's ``[serve]`` settings).
    """
    service = Service(index, max_upload_bytes, watch, serve)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        threading.Thread(target=service.decoders.warm, daemon=True).start()  # the first thumbnail is quick
        threading.Thread(target=index.store.warm, daemon=True).start()  # the first searches read no pages from disk
        threading.Thread(target=app.state.browse.warm, daemon=True).start()  # and the library's first page
        if service.syncer:
            service.syncer.start()
        try:
            yield
        finally:
            if service.syncer:
                service.syncer.stop()
            service.decoders.close()

    page = (WEB_DIR / "index.html").read_text(encoding="utf-8")
    assets = {p.name: (p.read_bytes(), ASSET_TYPES[p.suffix]) for p in sorted(WEB_DIR.iterdir())
              if p.suffix in ASSET_TYPES}
    # No Swagger/ReDoc pages: they load from a CDN, so offline they are blank.
    app = FastAPI(title="clipdex", version="0.1.0", summary="Search images by text and by example image.",
                  docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.service = service
    _install_error_handlers(app)
    # Innermost first; ErrorBoundary, added last, is the outermost and also covers the other middleware.
    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes + FORM_FIELDS_BYTES)
    app.add_middleware(JsonBodyLimit)  # a JSON body's own, small cap, while it streams in
    app.add_middleware(UploadSlots, slots=service.serve.max_uploads)
    app.add_middleware(ApiPrecondition, check=service.store_guard.problem)
    app.add_middleware(HeadAsGet)
    api_key = index.settings.serve.api_key if api_key is None else api_key
    if api_key:
        app.add_middleware(ApiKey, key=api_key)
    if allowed_hosts:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    app.add_middleware(ErrorBoundary, explain=service.store_guard.problem)
    app.add_middleware(SecurityHeaders, csp=content_security_policy(page))  # outermost: on every answer

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def home() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    @app.get("/static/{name}", include_in_schema=False)
    def static(name: str) -> Response:
        """The page's scripts (ES modules) and style sheet: only the files shipped beside index.html."""
        if name not in assets:
            raise ApiError(404, "no such file")
        data, kind = assets[name]
        return Response(data, media_type=kind, headers={"Cache-Control": "no-cache",
                                                        "X-Content-Type-Options": "nosniff"})

    @app.get("/api/status")
    def api_status() -> dict[str, Any]:
        """``clipdex status --json`` plus ``label``, ``pretrained``, ``unindexed`` (points searched exactly until
        the index is built), ``cameras`` (EXIF camera models and their points), ``sync`` (``--watch`` progress,
        else null), ``busy`` (true: the store was busy, the collection figures are the last ones read),
        ``can_move`` (``[duplicates] move_to`` is set), ``settings`` (the CLI flags naming this server's
        config, store and collection, for commands the page suggests) and ``commands`` (``ingest``, ``watch``:
        whole commands to suggest, with the options this server was started with)."""
        return service.status()

    @app.post("/api/ingest", status_code=202)
    def api_ingest(request: Request, response: Response, root: str | None = None,
                   prune: bool = False) -> dict[str, Any]:
        """Sync a watched folder (``root``; all of them when left out). ``started`` is false when that
        sync was already running or queued; ``sync`` is the progress ``GET /api/status`` shows.
        ``prune``: confirm deleting more than ``[ingest] max_delete_fraction`` of its points."""
        if cross_site(request):
            raise ApiError(403, "cross-site request refused (a web page may not start a sync)")
        started, progress = service.sync(root, prune)
        if not started:
            response.status_code = 200
        return {"started": started, "sync": progress}

    @app.get("/api/search")
    def api_search(params: Annotated[SearchParams, Query()]) -> list[dict[str, Any]]:
        """Rows as ``clipdex search --json`` prints them, best first."""
        return service.search(params)

    @app.post("/api/search")
    def api_search_upload(params: Annotated[SearchParams, Form()],
                          image: Annotated[UploadFile | None, File()] = None) -> list[dict[str, Any]]:
        """Like ``GET /api/search``, with an optional example image uploaded as the ``image`` field."""
        with service.upload(image) as example:
            return service.search(params, example)

    @app.get("/api/media")
    def api_media(path: str, request: Request) -> Response:
        """An indexed file's bytes (a video or a photo), with HTTP Range support (retrieval/serving/media.py)."""
        opened = service.indexed_file(path)
        headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff",
                   "Accept-Ranges": "bytes"}
        try:
            kind = video_type(path) or media_type(opened, path)
            try:
                wanted = byte_range(request.headers.get("range"), opened.size)
            except Unsatisfiable:
                opened.close()
                return Response(b"", status_code=416, headers=headers | {"Content-Range": f"bytes */{opened.size}"})
            return FdResponse(opened, kind, headers, os.path.basename(path), byte_range=wanted)  # it closes it
        except BaseException:
            opened.close()
            raise

    @app.get("/api/image")
    def api_image(path: str, thumb: Annotated[int | None, Query(ge=16, le=2048)] = None,
                  t: Annotated[float | None, Query(ge=0, le=1e7, allow_inf_nan=False)] = None) -> Response:
        """An indexed file's bytes, or a JPEG thumbnail with ``thumb`` pixels on the longer side. Of a video: a
        JPEG of its frame at ``t`` seconds (default: its first moment), ``thumb`` pixels (default 1024) at most."""
        opened = service.indexed_file(path)
        headers = {"Cache-Control": "private, max-age=300", "X-Content-Type-Options": "nosniff"}
        if thumb is None and is_video_name(path):
            thumb = 1024
        try:
            if thumb is not None:
                data, cached = service.thumbnail(opened, path, thumb, t)
                return Response(data, media_type="image/jpeg",
                                headers=headers | {"X-Cache": "HIT" if cached else "MISS"})
            return FdResponse(opened, media_type(opened, path), headers, os.path.basename(path))  # it closes it
        except BaseException:
            opened.close()
            raise
        finally:
            if thumb is not None:
                opened.close()

    browse = app.state.browse = browse_routes.add_routes(app, service)
    duplicate_routes.add_routes(app, service, on_change=browse.invalidate)
    concept_routes.add_routes(app, service)
    return app
