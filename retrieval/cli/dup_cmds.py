"""``clipdex duplicates``: find near-duplicates, move them aside, undo a move, dismiss a group (or forget that).

Every line of text output goes through :func:`retrieval.cli.common.echo` (file names, EXIF values and
reasons can hold newlines or terminal escapes); ``--json`` prints exact values.
"""

from __future__ import annotations

import shlex
from typing import Any

import click

from retrieval import duplicates as dups
from retrieval.cli.common import Run, cli, common_options, echo
from retrieval.index import Index
from retrieval.settings import Settings

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
    """Find near-duplicate images (checked pixel by pixel) and resolve them without deleting anything."""
    if sum(bool(x) for x in (move_to, undo, not_duplicates, forget_decision)) > 1:
        raise click.UsageError("--move-to, --undo, --not-duplicates and --forget-decision do not go together")
    if paths and not (not_duplicates or forget_decision):
        raise click.UsageError("file arguments go with --not-duplicates or --forget-decision only")
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
            run.emit(found.as_dict(), lambda: _table(found))
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


def _table(found: dups.Found) -> None:
    if not found.groups:
        echo(f"no duplicates among {found.checked:,} files")
        return
    for n, group in enumerate(found.groups, 1):
        echo(f"group {n} ({group.reason}, similarity {group.similarity:.3f})")
        echo(f"  keep  {_file(group.keep.row())}   [{group.keep_reason}]")
        for dup in group.duplicates:
            echo(f"  dup   {_file(dup.row())}")
    dupes = sum(len(g.duplicates) for g in found.groups)
    echo(f"{len(found.groups)} groups, {dupes} duplicates among {found.checked:,} files")
    if found.unreadable:
        echo(f"unreadable now (skipped): {len(found.unreadable)} files, e.g. {found.unreadable[0]}")


def _file(row: dict[str, Any]) -> str:
    return (f"{row['path']}  {row['width']}x{row['height']}  {row['size']:,} B  {row['format'] or '?'}"
            f"  {row['taken_at'] or 'no date'}")
