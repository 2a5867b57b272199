"""``clipdex duplicates``: find near-duplicates, move them aside, undo a move, dismiss a group (or forget that).

Every line of text output goes through :func:`retrieval.cli.common.echo` (file names, EXIF values and
reasons can hold newlines or terminal escapes); ``--json`` prints exact values.
"""

from __future__ import annotations

import shlex
from typing import Any

import click

from retrieval.cli.common import Run, cli, common_options, echo
from retrieval.cli.remote import Server, server_for
from retrieval.errors import ClipdexError
from retrieval.settings import Settings

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
@click.option("--forget-decision", is_flag=True,
              help="Forget every --not-duplicates decision that involves one of the files PATHS.")
@common_options
def duplicates(run: Run, paths: tuple[str, ...], folder: str | None, threshold: float | None,
               min_similarity: float | None, neighbours: int | None, move_to: str | None, undo: str | None,
               not_duplicates: bool, forget_decision: bool) -> None:
    """Find near-duplicate images and videos (checked pixel by pixel) and resolve them without deleting anything."""
    if sum(bool(x) for x in (move_to, undo, not_duplicates, forget_decision)) > 1:
        raise click.UsageError("--move-to, --undo, --not-duplicates and --forget-decision do not go together")
    if paths and not (not_duplicates or forget_decision):
        raise click.UsageError("file arguments go with --not-duplicates or --forget-decision only")
    if server := server_for(run.settings):
        _remote(run, server, paths, folder=folder, threshold=threshold, min_similarity=min_similarity,
                neighbours=neighbours, move_to=move_to, undo=undo, not_duplicates=not_duplicates,
                forget_decision=forget_decision)
        return
    from retrieval import duplicates as dups
    from retrieval.index import Index

    with Index.open(run.settings) as index:
        if undo is not None:
            result = dups.undo_moves(index, undo)
            run.emit(result, lambda: echo(f"put back {len(result['restored'])} files "
                                          f"({len(result['already_back'])} were back already)"))
            return
        if not_duplicates:
            result = dups.dismiss(index, list(paths))
            run.emit(result, lambda: echo(f"remembered: {len(result['not_duplicates'])} files are not duplicates of "
                                          "each other (undo with --forget-decision)"))
            return
        if forget_decision:
            result = dups.forget(index, list(paths))
            run.emit(result, lambda: echo(f"forgot {result['forgotten']} decisions; those files can be grouped "
                                          "again"))
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
        if not any(g.duplicates for g in found.groups):
            run.emit({"manifest": "", "moved": [], "skipped": [], "points_dropped": 0, "groups": 0},
                     lambda: echo(f"no duplicates among {found.checked:,} files; nothing moved"))
            return
        result = dups.move_files(index, dups.group_moves(found.groups), move_to)
        run.emit(result | {"groups": len(found.groups), "undo": undo_command(run.settings, result["manifest"])},
                 lambda: _moved(run.settings, result))


def undo_command(settings: Settings, manifest: str) -> str:
    """The command that undoes a move, with the settings this run used (it works as printed, from anywhere)."""
    words = ["clipdex", "duplicates", "--undo", manifest]
    if settings.config_path:
        words += ["--config", settings.config_path]
    if settings.store.url:
        words += ["--qdrant-url", settings.store.url]
    else:
        words += ["--store", str(settings.store_path)]
    words += ["--collection", settings.store.collection]
    return shlex.join(words)


def _moved(settings: Settings, result: dict[str, Any]) -> None:
    echo(f"moved {len(result['moved'])} files; undo with: {undo_command(settings, result['manifest'])}")
    for row in result["skipped"][:20]:
        echo(f"  not moved: {row['path']}: {row['reason']}")
    if len(result["skipped"]) > 20:
        echo(f"  not moved: {len(result['skipped']) - 20} more files")
    if result.get("warning"):
        echo(f"clipdex: warning: {result['warning']}", err=True)


def _table(found: dict[str, Any], unreadable: int) -> None:
    """The text output of a duplicates search (``Found.as_dict()``; ``unreadable``: how many in all)."""
    groups = found["groups"]
    if not groups:
        echo(f"no duplicates among {found['checked']:,} files")
        return
    for n, group in enumerate(groups, 1):
        keep, *duplicates = group["files"]
        echo(f"group {n} ({group['reason']}, similarity {group['similarity']:.3f})")
        echo(f"  keep  {_file(keep)}   [{group['keep_reason']}]")
        for dup in duplicates:
            echo(f"  dup   {_file(dup)}")
    dupes = sum(len(g["duplicates"]) for g in groups)
    echo(f"{len(groups)} groups, {dupes} duplicates among {found['checked']:,} files")
    if unreadable:
        echo(f"unreadable now (skipped): {unreadable} files, e.g. {found['unreadable'][0]}")


PAGE = 100
"""Groups per ``GET /api/duplicates`` page (its largest)."""


def _remote(run: Run, server: Server, paths: tuple[str, ...], *, folder: str | None, threshold: float | None,
            min_similarity: float | None, neighbours: int | None, move_to: str | None, undo: str | None,
            not_duplicates: bool, forget_decision: bool) -> None:
    """``clipdex duplicates`` asked of the server that holds the store (``/api/duplicates``, ``/resolve``)."""
    import os

    if undo is not None or forget_decision:
        what = "--undo puts files back and re-adds their points" if undo is not None else "--forget-decision"
        raise ClipdexError(f"{what}: it needs the store, which {server.owner()} holds; stop the server, then run "
                           "it again")
    if not_duplicates:
        files = [os.path.abspath(os.path.expanduser(p)) for p in paths]
        if len(set(files)) < 2:
            raise ClipdexError("--not-duplicates needs two or more indexed files")
        result = server.post_json("/api/duplicates/resolve", {"action": "not-duplicates", "paths": files})
        result.pop("action", None)
        run.emit(result, lambda: echo(f"remembered: {len(result['not_duplicates'])} files are not duplicates of "
                                      "each other (undo with --forget-decision)"))
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
    moving = [{"keep": g["keep"], "paths": g["duplicates"]} for g in groups if g["duplicates"]]
    if not moving:
        run.emit({"manifest": "", "moved": [], "skipped": [], "points_dropped": 0, "groups": 0},
                 lambda: echo(f"no duplicates among {found['checked']:,} files; nothing moved"))
        return
    result = server.post_json("/api/duplicates/resolve", {"action": "move", "groups": moving,
                                                          "move_to": os.path.abspath(os.path.expanduser(move_to))})
    result.pop("action", None)
    run.emit(result | {"groups": len(groups), "undo": undo_command(run.settings, result["manifest"])},
             lambda: _moved(run.settings, result))


def _file(row: dict[str, Any]) -> str:
    video = (f"  {row.get('codec') or '?'} {float(row.get('duration_s') or 0):.1f} s"
             f" {float(row.get('bitrate') or 0) / 1000:,.0f} kbit/s") if row.get("media") == "video" else ""
    return (f"{row['path']}  {row['width']}x{row['height']}  {row['size']:,} B  {row['format'] or '?'}{video}"
            f"  {row['taken_at'] or 'no date'}")
