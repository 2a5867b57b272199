"""The README stays a guide, every local link of README.md and docs/*.md resolves, and
docs/configuration.md is what the settings model generates."""

from __future__ import annotations

import re
from pathlib import Path

from retrieval import config_doc
from retrieval.settings import Settings

REPO = Path(__file__).resolve().parent.parent
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")


def prose(text: str) -> str:
    """``text`` without fenced code blocks and inline code (links there are not links)."""
    text = re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())  # a link in a heading: its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading anchor of a Markdown page (repeated headings get -1, -2, ... as on GitHub)."""
    text = re.sub(r"^\s*```.*?^\s*```[^\n]*$", "", page.read_text(), flags=re.S | re.M)
    seen: dict[str, int] = {}
    found = set()
    for match in re.finditer(r"^#{1,6} +(.+?) *#*$", text, flags=re.M):
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def local_links(page: Path) -> list[str]:
    return [t for t in LINK.findall(prose(page.read_text())) if not re.match(r"[a-z][a-z0-9+.-]*:", t)]


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in local_links(page):
        file, _, anchor = target.partition("#")
        dest = (page.parent / file).resolve() if file else page
        if not dest.exists():
            broken.append(f"{target}: no such file")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{target}: no heading with that anchor in {dest.name}")
    return broken


def test_the_readme_is_a_guide_of_at_most_300_lines():
    assert len((REPO / "README.md").read_text().splitlines()) <= 300


def test_every_local_link_resolves():
    assert len(PAGES) > 5
    problems = {p.relative_to(REPO).as_posix(): broken_links(p) for p in PAGES}
    assert {page: bad for page, bad in problems.items() if bad} == {}
    assert sum(len(local_links(p)) for p in PAGES) > 30  # the checker found the links it should


def test_every_repository_path_the_pages_name_exists():
    """A path in inline code (`retrieval/model/quantize.py`, `configs/demo.toml`) names a file that is there."""
    pattern = re.compile(r"`((?:retrieval|ingest|benchmarks|configs|tests|scripts|docker|models|samples|docs)/"
                         r"[A-Za-z0-9_./-]+)`")
    named = {m for page in PAGES for m in pattern.findall(page.read_text())}
    assert len(named) > 20
    assert sorted(p for p in named if not (REPO / p).exists()) == []


def test_the_link_checker_catches_a_broken_file_and_anchor(tmp_path: Path):
    (tmp_path / "a.md").write_text("# Title `x`: y\n\n## Twice\n\n## Twice\n\n"
                                   "[ok](#title-x-y) [ok](b.md#twice-1) [file](nope.md) [anchor](b.md#none)\n"
                                   "`[not a link](nope.md)`\n")
    (tmp_path / "b.md").write_text("## Twice\n\n## Twice\n\n```\n# not a heading\n```\n")
    assert broken_links(tmp_path / "a.md") == ["nope.md: no such file",
                                               "b.md#none: no heading with that anchor in b.md"]


def test_the_configuration_page_is_generated_from_the_settings_model():
    page = (REPO / "docs" / "configuration.md").read_text()
    assert page == config_doc.render(), "run: python -m retrieval.config_doc > docs/configuration.md"


def test_the_configuration_page_names_every_key_with_its_default():
    page = (REPO / "docs" / "configuration.md").read_text()
    for section, field in Settings.model_fields.items():
        if section == "config_path":
            continue
        assert f"## `[{section}]`" in page
        for key, info in field.annotation.model_fields.items():
            assert f"| `{key}` |" in page and f"`{config_doc.toml_value(info.default)}`" in page, (section, key)
