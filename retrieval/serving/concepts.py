"""``/api/concepts...`` for ``clipdex serve``: a thin shell over :mod:`retrieval.concepts`.

* ``GET /api/concepts``: every concept (as ``clipdex concept list --json``);
* ``GET /api/concepts/{name}``: one (``show``); ``GET /api/concepts/{name}/members``: member paths (``export``);
* ``POST /api/concepts/{name}`` ``{"examples": [...], "non_examples": [...]}``: teach (indexed paths or point ids
  only: the server never reads a file a client names);
* ``DELETE /api/concepts/{name}``: forget; ``POST /api/concepts/{name}/rename`` ``{"name": new}``;
* ``GET /api/concepts/{name}/review?n=10``: the candidates the concept is least sure of;
  ``POST /api/concepts/{name}/answer`` ``{"ref": path or id, "answer": "y"|"n"|"s"}``: refit at once, re-tag from
  the vectors held in memory, and the next candidates;
* ``GET /api/concept-suggestions?clusters=K``; ``POST /api/concept-suggestions/accept`` ``{"number", "name"}``.

Searching with a concept is ``/api/search``'s ``concept``, ``not_concept`` and ``in_concept`` fields. Writes take
the server's store lock; answers are limited to :data:`MAX_ANSWERS_PER_S` a second (429 beyond), and a request
from another site's page is refused (403), like every write of this server.
"""

from __future__ import annotations

import threading
import time
from typing import Annotated, Any, Literal

from fastapi import FastAPI, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException

from retrieval import concepts
from retrieval.concepts.book import MAX_EXAMPLES, MAX_NAME_CHARS, ConceptError
from retrieval.concepts.review import ReviewSession
from retrieval.serving.middleware import cross_site

MAX_ANSWERS_PER_S = 20
Ref = Annotated[str, Field(min_length=1, max_length=4096)]
Name = Annotated[str, Path(min_length=1, max_length=MAX_NAME_CHARS)]


class TeachBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    examples: list[Ref] = Field(default_factory=list, max_length=MAX_EXAMPLES)
    non_examples: list[Ref] = Field(default_factory=list, max_length=MAX_EXAMPLES)


class RenameBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]


class AnswerBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: Ref
    answer: Literal["y", "n", "s"]


class AcceptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    number: Annotated[int, Field(ge=1, le=1000)]
    name: Annotated[str, Field(min_length=1, max_length=MAX_NAME_CHARS)]
    clusters: Annotated[int, Field(ge=2, le=50)] | None = None


def _same_site(request: Request) -> None:
    if cross_site(request):
        raise HTTPException(403, "cross-site request refused (another site's page may not change concepts)")


def add_routes(app: FastAPI, service: Any) -> None:
    """Register the concept routes on ``app`` (``service``: the server's ``Service``)."""
    index = service.index
    sessions: dict[str, tuple[tuple[int, float], ReviewSession]] = {}
    pace = {"at": 0.0, "n": 0}
    pace_lock = threading.Lock()

    def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            with service.lock:
                return fn(*args, **kwargs)
        except ConceptError as exc:
            raise HTTPException(exc.status, str(exc)) from None

    def session(name: str) -> ReviewSession:
        """The review session of ``name``, kept while the collection and the concept stay as they are."""
        def make() -> ReviewSession:
            concept = concepts.show(index, name)
            key = (index.store.count(), concept.updated)
            held = sessions.get(name)
            if held is not None and held[0] == key:
                return held[1]
            sessions.clear()  # one session's vectors in memory at a time
            fresh = ReviewSession(index, name)
            sessions[name] = ((index.store.count(), fresh.concept.updated), fresh)
            return fresh
        return call(make)

    def throttle() -> None:
        with pace_lock:
            now = time.monotonic()
            if now - pace["at"] >= 1.0:
                pace["at"], pace["n"] = now, 0
            pace["n"] += 1
            if pace["n"] > MAX_ANSWERS_PER_S:
                raise HTTPException(429, f"more than {MAX_ANSWERS_PER_S} answers a second; slow down")

    @app.get("/api/concepts")
    def api_concepts() -> list[dict[str, Any]]:
        return [c.summary() for c in call(concepts.concepts, index)]

    @app.get("/api/concept-suggestions")
    def api_suggest(clusters: Annotated[int | None, Query(ge=2, le=50)] = None) -> dict[str, Any]:
        from retrieval.concepts.suggest import suggest

        return call(suggest, index, clusters).as_dict()

    @app.post("/api/concept-suggestions/accept")
    def api_accept(body: AcceptBody, request: Request) -> dict[str, Any]:
        from retrieval.concepts.suggest import accept

        _same_site(request)
        return call(accept, index, body.number, body.name, body.clusters).as_dict()

    @app.get("/api/concepts/{name}")
    def api_show(name: Name) -> dict[str, Any]:
        return call(concepts.show, index, name).summary()

    @app.get("/api/concepts/{name}/members")
    def api_members(name: Name) -> dict[str, Any]:
        return {"name": name, "paths": call(concepts.member_paths, index, name)}

    @app.post("/api/concepts/{name}")
    def api_teach(name: Name, body: TeachBody, request: Request) -> dict[str, Any]:
        _same_site(request)
        return call(concepts.teach, index, name, body.examples, body.non_examples, indexed_only=True).as_dict()

    @app.delete("/api/concepts/{name}")
    def api_forget(name: Name, request: Request) -> dict[str, Any]:
        _same_site(request)
        sessions.pop(name, None)
        return call(concepts.forget, index, name)

    @app.post("/api/concepts/{name}/rename")
    def api_rename(name: Name, body: RenameBody, request: Request) -> dict[str, Any]:
        _same_site(request)
        sessions.pop(name, None)
        return call(concepts.rename, index, name, body.name).summary()

    @app.get("/api/concepts/{name}/review")
    def api_review(name: Name, n: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        review = session(name)
        return {"name": name, "candidates": [c.as_dict() for c in call(review.candidates, n)]}

    @app.post("/api/concepts/{name}/answer")
    def api_answer(name: Name, body: AnswerBody, request: Request,
                   n: Annotated[int, Query(ge=1, le=100)] = 10) -> dict[str, Any]:
        _same_site(request)
        throttle()
        review = session(name)
        started = time.perf_counter()
        result = None
        if body.answer == "s":
            call(review.skip, body.ref)
        else:
            call(review.answer, body.ref, body.answer == "y")
            result = call(review.finish)
            sessions[name] = ((index.store.count(), review.concept.updated), review)
        return {"name": name, "members": review.concept.members,
                "written": result.tagged["written"] if result else 0,
                "candidates": [c.as_dict() for c in call(review.candidates, n)],
                "ms": round((time.perf_counter() - started) * 1000, 1)}
