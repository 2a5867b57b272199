"""One typed search request, shared by the library (``Index.search``), the CLI and the HTTP API.

Its limits hold wherever a search comes from: finite weights within a range, a bounded number and
length of negative prompts and like/unlike examples, a bounded query length, the result-count range
and the date syntax (``2021``, ``2021-07``, ``2021-07-04`` or an ISO datetime; a number is epoch seconds).
A blank string or list entry counts as not given, so an empty form field means "no value".
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from retrieval.errors import ClipdexError

MAX_LIMIT = 10000
MAX_TEXT_CHARS = 1000  # the text towers read 77 tokens at most; this is far beyond that
MAX_NEGATIVES = 16
MAX_EXAMPLES = 64  # like/unlike point ids or paths, each
MAX_PATH_CHARS = 4096
MAX_NAME_CHARS = 256
MAX_WEIGHT = 1000.0
MAX_MOMENTS = 20  # --moments: of one video (retrieval.search.moments)
MAX_CONCEPT_CHARS = 64  # retrieval.concepts.book.MAX_NAME_CHARS
MAX_PHRASE_CHARS = 200  # text in image: a sign, a receipt line, a password; far longer is no phrase


def _blank_to_none(value: Any) -> Any:
    """A blank string is no value; a path object (an image, a folder, an example) is its text."""
    value = os.fspath(value) if isinstance(value, os.PathLike) else value
    return None if isinstance(value, str) and not value.strip() else value


def _drop_blank(value: Any) -> Any:
    if isinstance(value, (str, os.PathLike)):  # one value where a list is expected (one query parameter)
        value = [value]
    if isinstance(value, (list, tuple)):
        return [v for v in map(_blank_to_none, value) if v is not None]
    return value


def _date(value: Any) -> Any:
    value = _blank_to_none(value)
    if isinstance(value, str):
        from ingest.exif import parse_date  # (PIL: loaded only when a date is given)

        try:
            return parse_date(value)
        except ClipdexError as exc:
            raise PydanticCustomError("date", str(exc)) from None
    if hasattr(value, "timestamp"):  # a datetime
        return value.timestamp()
    return value


def _text(max_chars: int) -> Any:
    return Annotated[Annotated[str, StringConstraints(max_length=max_chars)] | None, BeforeValidator(_blank_to_none)]


def _texts(max_items: int, max_chars: int) -> Any:
    item = Annotated[str, StringConstraints(max_length=max_chars)]
    return Annotated[list[item], BeforeValidator(_drop_blank), Field(max_length=max_items)]  # type: ignore[valid-type]


Text = _text(MAX_TEXT_CHARS)
Examples = _texts(MAX_EXAMPLES, MAX_PATH_CHARS)
Date = Annotated[Annotated[float, Field(allow_inf_nan=False)] | None, BeforeValidator(_date),
                 WithJsonSchema({"anyOf": [{"type": "string", "examples": ["2021", "2021-07", "2021-07-04"]},
                                           {"type": "null"}]})]
Weight = Annotated[float, Field(ge=0.0, le=MAX_WEIGHT, allow_inf_nan=False)]


class SearchParams(BaseModel):
    """What a client may ask for: every search field except a server-side example image path.

    The HTTP routes take exactly these fields (``q`` is the text); ``SearchRequest`` adds ``image``.
    """

    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, frozen=True)

    text: Text = Field(None, alias="q", description="What to look for, in words.")
    negative: _texts(MAX_NEGATIVES, MAX_TEXT_CHARS) = Field(  # type: ignore[valid-type]
        default_factory=list, description="Steer away from these prompts.")
    like: Examples = Field(default_factory=list, description="Indexed paths or point ids: more like these.")
    unlike: Examples = Field(default_factory=list, description="Indexed paths or point ids: less like these.")
    limit: Annotated[int, Field(ge=1, le=MAX_LIMIT)] | None = Field(
        None, description="How many results (default: settings).")
    folder: _text(MAX_PATH_CHARS) = Field(None, description="Only files below this folder.")  # type: ignore[valid-type]
    min_score: Annotated[float, Field(ge=-1.0, le=1.0, allow_inf_nan=False)] | None = Field(
        None, description="Drop hits scoring below (cosine).")
    after: Date = Field(None, description="Taken on or after this date (EXIF).")
    before: Date = Field(None, description="Taken before this date (EXIF).")
    camera: _text(MAX_NAME_CHARS) = Field(None, description="EXIF camera make or model.")  # type: ignore[valid-type]
    text_in_image: _text(MAX_PHRASE_CHARS) = Field(  # type: ignore[valid-type]
        None, description="Only images whose recognised text holds every word of this (OCR).")
    media: Literal["image", "video"] | None = Field(None, description="Only photos, or only video moments.")
    moments: Annotated[int, Field(ge=1, le=MAX_MOMENTS)] = Field(
        1, description="Moments of one video at most (its best first).")
    ocr: bool = Field(True, description="Fuse CLIP with BM25 over recognised text (false: CLIP only).")
    relevant: bool | None = Field(None, description="Only hits above the query's adaptive cutoff "
                                                    "(default: [search] cutoff); with a concept: its members only.")
    concept: _text(MAX_CONCEPT_CHARS) = Field(  # type: ignore[valid-type]
        None, description="Rank by this concept (retrieval.concepts), alone or with the other queries.")
    not_concept: _text(MAX_CONCEPT_CHARS) = Field(  # type: ignore[valid-type]
        None, description="Steer away from this concept.")
    in_concept: _text(MAX_CONCEPT_CHARS) = Field(  # type: ignore[valid-type]
        None, description="Only members of this concept (a filter).")
    text_weight: Weight = 1.0
    image_weight: Weight = 1.0
    negative_weight: Weight = 0.5

    @model_validator(mode="after")
    def _dates_in_order(self) -> SearchParams:
        if self.after is not None and self.before is not None and self.after >= self.before:
            raise PydanticCustomError("date_order", "after must be earlier than before")
        return self


class SearchRequest(SearchParams):
    """A whole search: :class:`SearchParams` plus an example image file (any image, indexed or not)."""

    model_config = ConfigDict(extra="forbid")

    image: Annotated[Annotated[str, StringConstraints(max_length=MAX_PATH_CHARS)] | None,
                     BeforeValidator(_blank_to_none)] = None

    @classmethod
    def of(cls, request: SearchParams | str | None = None, /, **fields: Any) -> SearchRequest:
        """``request`` itself, or one built from ``fields`` on top of ``request`` (a :class:`SearchParams`, or a
        str: the text).

        Raises :class:`SearchRequestError` naming the first field that breaks a limit.
        """
        if isinstance(request, SearchRequest) and not fields:
            return request
        if isinstance(request, SearchParams):
            fields = request.model_dump() | fields
        elif request is not None:
            fields = {"text": request, **fields}
        try:
            request = cls.model_validate(fields)
        except ValidationError as exc:
            raise SearchRequestError.of(exc) from None
        if request.min_score is not None and not request.has_query and not request.like and request.text_in_image:
            raise SearchRequestError("min_score", "bounds the CLIP cosine of a text or image query; a search by text "
                                                  "in image alone is ranked by BM25 (add a text, or leave it out)")
        return request

    @property
    def has_concept(self) -> bool:
        """True if a concept ranks, steers or filters this search."""
        return bool(self.concept or self.not_concept or self.in_concept)

    @property
    def has_query(self) -> bool:
        """True if there is something to encode (a text or an example image)."""
        return self.text is not None or self.image is not None


class UnknownPointError(ClipdexError):
    """A like/unlike example that is not in the collection."""


class SearchRequestError(ClipdexError):
    """A search field breaks a limit; ``field`` names it ("" when it is about several fields)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.reason = message

    @classmethod
    def of(cls, exc: ValidationError) -> SearchRequestError:
        first = exc.errors(include_url=False)[0]
        loc = [str(p) for p in first.get("loc", ()) if not isinstance(p, int)]
        return cls(loc[0] if loc else "", first.get("msg", "invalid value"))


def folder_note(folder: str) -> str:
    """Why a search below ``folder`` found nothing, when it is because there is no such folder ("" otherwise):
    ``--folder`` matches whole folder names, so the folders beside it whose names start that way are named."""
    path = os.path.abspath(os.path.expanduser(folder))
    if os.path.isdir(path):
        return ""
    parent, name = os.path.split(path.rstrip("/"))
    try:
        with os.scandir(parent) as entries:
            beside = sorted(e.name for e in entries if e.name.startswith(name) and e.is_dir())
    except OSError:
        beside = []
    hint = f"; did you mean {' or '.join(os.path.join(parent, b) for b in beside[:3])}?" if beside else ""
    return (f"no such folder: {folder} (--folder matches whole folder names, and keeps the files below one at "
            f"any depth){hint}")
