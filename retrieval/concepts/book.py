"""Where concept definitions live: ``concepts.json`` beside the collection's shard in the embedded store folder.

One JSON document, written atomically (a temporary file, fsync, rename), so a crash leaves the old or the new
file and never half of one. It holds, per concept, its examples and non-examples (point id, path, content hash
and the vector, base64 float32), the model that taught it (weights hash or name, and the width) and when it
changed: everything needed to fit it again. ``clipdex rebuild`` rewrites only the shard, so the file survives it;
a copied store folder carries it; each collection has its own folder, so concepts are kept apart per collection.
"""

from __future__ import annotations

import base64
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from retrieval.errors import ClipdexError
from retrieval.store import CollectionMeta

FILE = "concepts.json"
VERSION = 1
MAX_NAME_CHARS = 64
MAX_EXAMPLES = 1000
"""Examples plus non-examples of one concept."""
MAX_CONCEPTS = 200
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9 _.'+-]*")


class ConceptError(ClipdexError):
    """A concept request that cannot be done (unknown concept, bad name, too many examples...); ``status`` is
    the HTTP answer's (404: no such concept or photo)."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def name_problem(name: str) -> str:
    """Why ``name`` cannot name a concept ("" when it can)."""
    if not isinstance(name, str) or not name.strip():
        return "a concept name cannot be empty"
    if len(name) > MAX_NAME_CHARS:
        return f"concept name is {len(name)} characters, over {MAX_NAME_CHARS}"
    if any(c in name for c in "/\\") or name in (".", "..") or "\x00" in name:
        return f"concept name {name!r} holds path characters: use letters, digits, space, '_', '.', '-', '+', \"'\""
    if not NAME_RE.fullmatch(name) or name != name.strip():
        return (f"concept name {name!r} may hold only letters, digits, space, '_', '.', '-', '+' and \"'\", "
                "starting with a letter or digit")
    return ""


def check_name(name: str) -> str:
    if problem := name_problem(name):
        raise ConceptError(problem)
    return name


@dataclass
class Example:
    """One labelled photo: its point id and path when indexed, its content hash, and its vector."""

    vector: np.ndarray
    id: str = ""
    path: str = ""
    hash: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path, "hash": self.hash,
                "vector": base64.b64encode(np.asarray(self.vector, "<f4").tobytes()).decode()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        vector = np.frombuffer(base64.b64decode(data["vector"]), "<f4").astype(np.float32)
        return cls(vector, str(data.get("id", "")), str(data.get("path", "")), str(data.get("hash", "")))

    @property
    def key(self) -> str:
        """What makes two examples the same photo: its content hash, else its path, else its point id."""
        return self.hash or self.path or self.id


def content_key(payload: dict[str, Any]) -> str:
    """A stored point's :attr:`Example.key`: its content hash (a video moment's: the hash and its time, since
    one video's moments show different things), else its path."""
    digest = payload.get("hash") or ""
    if digest and payload.get("media") == "video" and isinstance(payload.get("time_s"), int | float):
        return f"{digest}#t={float(payload['time_s']):g}"
    return digest or payload.get("path") or ""


@dataclass
class Concept:
    """A concept's definition: what the user said, and the model that said it in vectors."""

    name: str
    model: str
    dim: int
    examples: list[Example] = field(default_factory=list)
    non_examples: list[Example] = field(default_factory=list)
    created: float = field(default_factory=time.time)
    updated: float = field(default_factory=time.time)
    threshold: float | None = None
    members: int = 0
    knows_word: float = 0.5

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "model": self.model, "dim": self.dim, "created": self.created,
                "updated": self.updated, "threshold": self.threshold, "members": self.members,
                "knows_word": self.knows_word,
                "examples": [e.as_dict() for e in self.examples],
                "non_examples": [e.as_dict() for e in self.non_examples]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Concept:
        return cls(name=str(data["name"]), model=str(data["model"]), dim=int(data["dim"]),
                   examples=[Example.from_dict(e) for e in data.get("examples", [])],
                   non_examples=[Example.from_dict(e) for e in data.get("non_examples", [])],
                   created=float(data.get("created", 0.0)), updated=float(data.get("updated", 0.0)),
                   threshold=data.get("threshold"), members=int(data.get("members", 0)),
                   knows_word=float(data.get("knows_word", 0.5)))

    def summary(self) -> dict[str, Any]:
        """What ``concept list`` / ``show`` print (no vectors)."""
        return {"name": self.name, "examples": [e.path or e.id for e in self.examples],
                "non_examples": [e.path or e.id for e in self.non_examples], "members": self.members,
                "threshold": None if self.threshold is None else round(self.threshold, 6),
                "model": self.model, "knows_word": round(self.knows_word, 3), "updated": self.updated}


def model_id(meta: CollectionMeta) -> str:
    """The identity of the model whose vectors a concept holds: the weights' hash, else name and tag."""
    return meta.weights_id or f"{meta.model}:{meta.pretrained}"


class ConceptBook:
    """The concepts of one collection (an embedded store folder)."""

    def __init__(self, folder: str | os.PathLike[str]):
        self.file = Path(folder) / FILE
        self.concepts: dict[str, Concept] = {}
        if self.file.is_file():
            try:
                data = json.loads(self.file.read_text(encoding="utf-8"))
                self.concepts = {c["name"]: Concept.from_dict(c) for c in data.get("concepts", [])}
            except (ValueError, KeyError, TypeError) as exc:
                raise ConceptError(f"{self.file} is damaged ({exc}); restore it from a backup or move it "
                                   "away (the photos are untouched)") from None

    def get(self, name: str) -> Concept:
        if not isinstance(name, str) or not name.strip():
            raise ConceptError("a concept name cannot be empty")
        concept = self.concepts.get(name)
        if concept is None:
            known = ", ".join(sorted(self.concepts)[:5]) or "none yet"
            raise ConceptError(f"no concept named {name!r} in this collection (concepts: {known})", 404)
        return concept

    def usable(self, name: str, meta: CollectionMeta | None) -> Concept:
        """:meth:`get`, refused when the concept was taught on another model's vectors."""
        concept = self.get(name)
        check_model(concept, meta)
        return concept

    def save(self) -> None:
        data = {"version": VERSION, "concepts": [c.as_dict() for c in self.concepts.values()]}
        self.file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".concepts-", suffix=".json", dir=self.file.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(data, out)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.file)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def check_model(concept: Concept, meta: CollectionMeta | None) -> None:
    """Refuse a concept taught on another model than the one whose vectors the collection holds."""
    if meta is None:
        raise ConceptError("the collection is empty or missing (run `clipdex ingest DIR` first)")
    if concept.model != model_id(meta) or concept.dim != meta.dim:
        raise ConceptError(f"concept {concept.name!r} was taught on model {concept.model} (dim {concept.dim}); "
                           f"this collection holds vectors of {model_id(meta)} (dim {meta.dim}): teach it again "
                           "here from its examples")
