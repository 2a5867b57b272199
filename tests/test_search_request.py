"""One search request (retrieval.search.request) with the same limits in the library, the CLI and HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from ingest.exif import parse_date
from retrieval import load_settings
from retrieval.index import Index
from retrieval.search.request import MAX_NEGATIVES, MAX_TEXT_CHARS, SearchRequest, SearchRequestError

# (field, value, what the error names): each breaks exactly one limit.
BAD_FIELDS = [
    ("text_weight", float("inf"), "finite"),
    ("image_weight", float("nan"), "finite"),
    ("negative_weight", -1.0, "greater than or equal to 0"),
    ("min_score", float("nan"), "finite"),
    ("min_score", 1.5, "less than or equal to 1"),
    ("limit", 0, "greater than or equal to 1"),
    ("limit", 10001, "less than or equal to 10000"),
    ("negative", ["a dog"] * (MAX_NEGATIVES + 1), f"at most {MAX_NEGATIVES} items"),
    ("negative", ["x" * (MAX_TEXT_CHARS + 1)], f"at most {MAX_TEXT_CHARS} characters"),
    ("text", "x" * (MAX_TEXT_CHARS + 1), f"at most {MAX_TEXT_CHARS} characters"),
    ("after", "yesterday", "invalid date 'yesterday'"),
    ("before", "2021-13", "invalid date '2021-13'"),
]


@pytest.fixture
def index(config: Path) -> Iterator[Index]:
    """An Index over a store that does not exist yet: every check here comes before the store."""
    with Index.open(load_settings(config)) as opened:
        yield opened


@pytest.mark.parametrize("field, value, needle", BAD_FIELDS)
def test_library_refuses_each_limit_by_name(index: Index, field: str, value: object, needle: str):
    with pytest.raises(SearchRequestError) as caught:
        index.search(**{"text": "a shoe", field: value})
    assert caught.value.field == field and needle in str(caught.value)
    with pytest.raises(ValidationError, match=field):
        SearchRequest(**{"text": "a shoe", field: value})  # the same model, built directly


def test_request_fields_are_normalised_once():
    request = SearchRequest.of(text="  ", negative=["a cat", " "], folder="", after="2021-07", before="2022",
                               image=Path("/tmp/x.png"), like=" ")
    assert request.text is None and request.negative == ["a cat"] and request.folder is None
    assert (request.after, request.before) == (parse_date("2021-07"), parse_date("2022"))
    assert request.image == "/tmp/x.png" and request.like == []
    assert SearchRequest.of("a shoe", limit=3) == SearchRequest(text="a shoe", limit=3)
    assert SearchRequest.of(request, limit=4).limit == 4 and request.limit is None  # frozen: a new request
    with pytest.raises(SearchRequestError, match="after must be earlier than before"):
        SearchRequest.of(text="x", after="2022", before="2021")
    with pytest.raises(SearchRequestError, match="imge"):
        SearchRequest.of(text="x", imge="typo.png")  # a misspelt keyword is an error, not ignored


def test_library_takes_a_request_or_keywords(index: Index):
    for call in (lambda: index.search(SearchRequest(text="a shoe")), lambda: index.search(text="a shoe"),
                 lambda: index.search("a shoe")):
        with pytest.raises(Exception, match="run `clipdex ingest DIR[^`]*` first"):  # valid: it reached the store
            call()


CLI_BAD = [
    (["a shoe", "--text-weight", "inf"], "--text-weight", "finite"),
    (["a shoe", "--image-weight", "-inf"], "--image-weight", "finite"),
    (["a shoe", "--min-score", "nan"], "--min-score", "finite"),
    (["a shoe", "--limit", "0"], "--limit", "greater than or equal to 1"),
    (["a shoe", "--limit", "10001"], "--limit", "less than or equal to 10000"),
    (["a shoe", *["--negative", "x"] * (MAX_NEGATIVES + 1)], "--negative", f"at most {MAX_NEGATIVES}"),
    (["y" * (MAX_TEXT_CHARS + 1)], "TEXT", f"at most {MAX_TEXT_CHARS} characters"),
    (["a shoe", "--after", "last tuesday"], "--after", "invalid date 'last tuesday'"),
    (["a shoe", "--after", "2022", "--before", "2021"], "--after/--before", "after must be earlier than before"),
]


@pytest.mark.parametrize("args, option, needle", CLI_BAD)
def test_cli_names_the_option_in_one_line_with_exit_2(clipdex, args: list[str], option: str, needle: str):
    result = clipdex("search", *args)
    assert result.code == 2, result.err
    assert result.err.startswith(f"clipdex search: error: {option}: ") and needle in result.err
    assert result.err.count("\n") == 1 and result.out == ""
