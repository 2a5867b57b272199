"""``clipdex concept ...``: a thin shell over :mod:`retrieval.concepts`."""

from __future__ import annotations

import sys
from typing import Any

import click

from retrieval.cli.common import Run, cli, common_options, echo
from retrieval.cli.paths import echo_paths
from retrieval.errors import ClipdexError


def _open(run: Run) -> Any:
    """The collection, opened here (retrieval.index loads numpy and the store: not when the CLI starts)."""
    from retrieval.index import Index

    return Index.open(run.settings)


@cli.group()
def concept() -> None:
    """Personal concepts: teach from examples, search, review, tag, suggest (docs/concepts.md)."""


def _show_lines(doc: dict[str, Any]) -> None:
    echo(f"concept     {doc['name']}")
    echo(f"members     {doc['members']:,}")
    echo(f"threshold   {doc['threshold']}")
    echo(f"knows word  {doc['knows_word']} (0.5: the model cannot read the name; near 1: it can)")
    for path in doc["examples"]:
        echo(f"  example      {path}")
    for path in doc["non_examples"]:
        echo(f"  non-example  {path}")


@concept.command()
@click.argument("name")
@click.option("--example", "examples", multiple=True, metavar="PATH",
              help="A photo of the concept (repeatable): an indexed file, or any image file (encoded once).")
@click.option("--not", "non_examples", multiple=True, metavar="PATH", help="A photo that is not it (repeatable).")
@common_options
def teach(run: Run, name: str, examples: tuple[str, ...], non_examples: tuple[str, ...]) -> None:
    """Create concept NAME from examples, or add examples and non-examples to it (how feedback arrives)."""
    from retrieval.concepts import teach as do_teach

    with _open(run) as index:
        result = do_teach(index, name, examples, non_examples)
    doc = result.as_dict()
    run.emit(doc, lambda: echo(f"concept {doc['name']}: {doc['members']:,} members, {len(doc['examples'])} "
                               f"examples, {len(doc['non_examples'])} non-examples "
                               f"({doc['tagged']['written']:,} points re-tagged)"))


@concept.command("list")
@common_options
def list_(run: Run) -> None:
    """The collection's concepts with their member counts."""
    from retrieval.concepts import concepts

    with _open(run) as index:
        rows = [c.summary() for c in concepts(index)]

    def human() -> None:
        if not rows:
            echo("no concepts yet (clipdex concept teach NAME --example PATH)")
        for row in rows:
            echo(f"{row['name']}  {row['members']:,} members  {len(row['examples'])} examples  "
                 f"{len(row['non_examples'])} non-examples")

    run.emit(rows, human)


@concept.command()
@click.argument("name")
@common_options
def show(run: Run, name: str) -> None:
    """A concept's examples, non-examples, member count and threshold."""
    from retrieval.concepts import show as do_show

    with _open(run) as index:
        doc = do_show(index, name).summary()
    run.emit(doc, lambda: _show_lines(doc))


@concept.command()
@click.argument("name")
@common_options
def forget(run: Run, name: str) -> None:
    """Delete a concept and take it off every photo."""
    from retrieval.concepts import forget as do_forget

    with _open(run) as index:
        doc = do_forget(index, name)
    run.emit(doc, lambda: echo(f"forgot concept {doc['name']} ({doc['untagged']:,} photos untagged)"))


@concept.command()
@click.argument("name")
@click.argument("new_name")
@common_options
def rename(run: Run, name: str, new_name: str) -> None:
    """Give a concept another name."""
    from retrieval.concepts import rename as do_rename

    with _open(run) as index:
        doc = do_rename(index, name, new_name).summary()
    run.emit(doc, lambda: echo(f"renamed concept {name} to {doc['name']}"))


@concept.command()
@click.argument("name")
@common_options
def export(run: Run, name: str) -> None:
    """Print the member paths, one per line (for an album, a folder of links, a script)."""
    from retrieval.concepts import member_paths

    with _open(run) as index:
        paths = member_paths(index, name)
    if run.json:
        run.emit(paths, lambda: None)
    elif left_out := echo_paths([{"path": p} for p in paths]):
        raise ClipdexError(f"{left_out} member path(s) left out: they hold control characters")


@concept.command()
@click.argument("name")
@click.option("--batch", type=click.IntRange(1, 100), default=10, help="Candidates shown per round.")
@click.option("--max", "most", type=click.IntRange(1, 1000), default=100, help="Stop after this many answers.")
@common_options
def review(run: Run, name: str, batch: int, most: int) -> None:
    """Answer about the photos the concept is least sure of: y (it is), n (it is not), s (skip), q (stop).

    One keystroke per line on stdin. After each answer the concept is refitted and the next candidate follows
    from the refit. With --json: one JSON line per candidate on stdout, answers read the same way.
    """
    from retrieval.cli.common import json_text
    from retrieval.concepts import ReviewSession

    with _open(run) as index:
        session = ReviewSession(index, name)
        asked = 0
        while asked < most:
            candidate = next(iter(session.candidates(batch)), None)
            if candidate is None:
                break
            if run.json:
                echo(json_text({"candidate": candidate.as_dict()}))
            else:
                state = "member" if candidate.member else "not a member"
                echo(f"{candidate.path}  (score {candidate.score:.3f}, now {state})  [y/n/s/q] ", nl=False)
            line = sys.stdin.readline()
            if not line:
                break
            key = line.strip().lower()[:1]
            if not run.json and not sys.stdin.isatty():
                echo(key)  # answers from a pipe: each on its candidate's line
            if key == "q":
                break
            asked += 1
            if key in ("y", "n"):
                session.answer(candidate.id, key == "y")
            else:
                session.skip(candidate.id)
        result = session.finish() if session.answered else None
    doc = {"answered": session.answered, **(result.as_dict() if result else {"name": name})}
    run.emit(doc, lambda: echo(f"{session.answered} answers; concept {name}: "
                               f"{doc.get('members', session.concept.members):,} members"))


@concept.command()
@click.option("--clusters", "k", type=int, default=None, help="How many clusters (2-50) [default: from the size].")
@click.option("--accept", "number", type=int, default=None, metavar="N",
              help="Turn suggestion N into a concept (with --name), its typical photos as examples.")
@click.option("--name", default=None, help="The new concept's name (with --accept).")
@common_options
def suggest(run: Run, k: int | None, number: int | None, name: str | None) -> None:
    """Clusters of the photos no concept covers yet, each with typical photos and a guessed name."""
    from retrieval.concepts.suggest import accept
    from retrieval.concepts.suggest import suggest as do_suggest

    if (number is None) != (name is None):
        raise click.UsageError("--accept N and --name NAME go together")
    with _open(run) as index:
        if number is not None and name is not None:
            doc = accept(index, number, name, k).as_dict()
            run.emit(doc, lambda: echo(f"concept {doc['name']}: {doc['members']:,} members from suggestion "
                                       f"{number}"))
            return
        results = do_suggest(index, k)
    doc = results.as_dict()

    def human() -> None:
        echo(f"{doc['uncovered']:,} photos in no concept; {len(doc['clusters'])} clusters")
        for c in doc["clusters"]:
            words = f"  text: {' '.join(c['words'])}" if c["words"] else ""
            echo(f"#{c['number']}  {c['size']:,} photos  looks like: {c['name']} ({c['name_score']:.2f}){words}")
            for path in c["typical"][:4]:
                echo(f"      {path}")
        if doc["clusters"]:
            echo("turn one into a concept: clipdex concept suggest --accept N --name NAME")

    run.emit(doc, human)
