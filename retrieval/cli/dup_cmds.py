"""``clipdex duplicates``: find near-duplicates, move them aside, undo a move, dismiss a group."""

from __future__ import annotations

from typing import Any

import click

from retrieval.cli.common import Run, cli, common_options
from retrieval.cli.remote import Server, server_for
from retrieval.errors import ClipdexError

# retrieval.duplicates and retrieval.index load inside the command: answered by a running server, neither is.

_UNIT = click.FloatRange(0.0, 1.0, min_open=True)


@cli.command()
@click.argument("paths", nargs=-1, type=click.Path(path_type=str, exists=False))
@click.option("--folder", default=None, help="Only files below this folder.")
@click.option("--threshold", type=_UNIT, default=None,
              help="Cosine of the stored vectors for a candidate pair [default: [duplicates] threshold, 0.9].")
@click.option("--min-similarity", type=_UNIT, default=None,
              help="Pixel similarity a candidate pair needs to be grouped [default: [duplicates] min_similarity, 0.8].")
@click.option("--neighbours", type=click.IntRange(1, 256), default=None,
              help="Nearest neighbours asked per file [default: [duplicates] neighbours, 16].")
@click.option("--move-to", default=None, metavar="DIR",
              help="Move every group's duplicates into DIR (relative paths kept) and write a manifest there.")
@click.option("--undo", "undo", default=None, metavar="MANIFEST", help="Put back the files a --move-to moved.")
@click.option("--not-duplicates", is_flag=True, help="Remember that the files PATHS are not duplicates.")
@common_options
def duplicates(run: Run, paths: tuple[str, ...], folder: str | None, threshold: float | None,
               min_similarity: float | None, neighbours: int | None, move_to: str | None, undo: str | None,
               not_duplicates: bool) -> None:
    """Find near-duplicate images (checked pixel by pixel) and resolve them without deleting anything."""
    if sum(bool(x) for x in (move_to, undo, not_duplicates)) > 1:
        raise click.UsageError("--move-to, --undo and --not-duplicates do not go together")
    if paths and not not_duplicates:
        raise click.UsageError("file arguments go with --not-duplicates only")
    if server := server_for(run.settings):
        _remote(run, server, paths, folder=folder, threshold=threshold, min_similarity=min_similarity,
                neighbours=neighbours, move_to=move_to, undo=undo, not_duplicates=not_duplicates)
        return
    from retrieval import duplicates as dups
    from retrieval.index import Index

    with Index.open(run.settings) as index:
        if undo is not None:
            result = dups.undo_moves(index, undo)
            run.emit(result, lambda: click.echo(f"put back {len(result['restored'])} files "
                                                f"({len(result['already_back'])} were back already)"))
            return
        if not_duplicates:
            result = dups.dismiss(index, list(paths))
            run.emit(result, lambda: click.echo(f"remembered: {len(result['not_duplicates'])} files are not "
                                                "duplicates of each other"))
            return
        options = dups.options_of(index.settings, folder=folder, threshold=threshold, neighbours=neighbours,
                                  min_similarity=min_similarity)
        if move_to is not None:
            dups.resolve.check_destination(move_to, list(index.store.root_counts()))  # before the slow part
        found = dups.find_in(index, options)
        if move_to is None:
            doc = found.as_dict()
            run.emit(doc, lambda: _table(doc, len(found.unreadable)))
            return
        files = [d.path for g in found.groups for d in g.duplicates]
        if not files:
            raise ClipdexError("no duplicates found; nothing moved")
        result = dups.move_files(index, files, move_to)
        run.emit(result | {"groups": len(found.groups)},
                 lambda: click.echo(f"moved {len(result['moved'])} files; undo with: clipdex duplicates "
                                    f"--undo {result['manifest']}"))


def _table(found: dict[str, Any], unreadable: int) -> None:
    """The text output of a duplicates search (``Found.as_dict()``; ``unreadable``: how many in all)."""
    groups = found["groups"]
    if not groups:
        click.echo(f"no duplicates among {found['checked']:,} files")
        return
    for n, group in enumerate(groups, 1):
        keep, *duplicates = group["files"]
        click.echo(f"group {n} ({group['reason']}, similarity {group['similarity']:.3f})")
        click.echo(f"  keep  {_file(keep)}   [{group['keep_reason']}]")
        for dup in duplicates:
            click.echo(f"  dup   {_file(dup)}")
    dupes = sum(len(g["duplicates"]) for g in groups)
    click.echo(f"{len(groups)} groups, {dupes} duplicates among {found['checked']:,} files")
    if unreadable:
        click.echo(f"unreadable now (skipped): {unreadable} files, e.g. {found['unreadable'][0]}")


def _remote(run: Run, server: Server, paths: tuple[str, ...], *, folder: str | None, threshold: float | None,
            min_similarity: float | None, neighbours: int | None, move_to: str | None, undo: str | None,
            not_duplicates: bool) -> None:
    """``clipdex duplicates`` asked of the server that holds the store (``/api/duplicates``, ``/resolve``)."""
    import os

    if undo is not None:
        raise ClipdexError(f"--undo puts files back and re-adds their points: it needs the store, which "
                           f"{server.owner()} holds; stop the server, then run it again")
    if not_duplicates:
        files = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        if len(set(files)) < 2:
            raise ClipdexError("--not-duplicates needs two or more indexed files")
        result = server.post_json("/api/duplicates/resolve", {"action": "not-duplicates", "paths": files})
        result.pop("action", None)
        run.emit(result, lambda: click.echo(f"remembered: {len(result['not_duplicates'])} files are not "
                                            "duplicates of each other"))
        return
    params = {"folder": os.path.abspath(os.path.expanduser(folder)) if folder else None, "threshold": threshold,
              "min_similarity": min_similarity, "neighbours": neighbours, "limit": PAGE, "refresh": True}
    first = server.get("/api/duplicates", params | {"offset": 0})
    groups = list(first["groups"])
    while len(groups) < first["total"]:
        page = server.get("/api/duplicates", params | {"offset": len(groups), "refresh": None})
        if not page["groups"]:
            break
        groups += page["groups"]
    found = {"groups": groups} | {k: first.get(k) for k in ("checked", "candidates", "verified", "unreadable",
                                                             "seconds")}
    if move_to is None:
        run.emit(found, lambda: _table(found, int(first.get("unreadable_count") or 0)))
        return
    files = [d for g in groups for d in g["duplicates"]]
    if not files:
        raise ClipdexError("no duplicates found; nothing moved")
    result = server.post_json("/api/duplicates/resolve", {"action": "move", "paths": files,
                                                          "move_to": os.path.abspath(os.path.expanduser(move_to))})
    result.pop("action", None)
    run.emit(result | {"groups": len(groups)},
             lambda: click.echo(f"moved {len(result['moved'])} files; undo with: clipdex duplicates "
                                f"--undo {result['manifest']}"))


PAGE = 100
"""Groups per ``GET /api/duplicates`` page (its largest)."""


def _file(row: dict[str, Any]) -> str:
    return (f"{row['path']}  {row['width']}x{row['height']}  {row['size']:,} B  {row['format'] or '?'}"
            f"  {row['taken_at'] or 'no date'}")
