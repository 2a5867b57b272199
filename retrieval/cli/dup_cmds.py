"""``clipdex duplicates``: find near-duplicates, move them aside, undo a move, dismiss a group."""

from __future__ import annotations

from typing import Any

import click

from retrieval import duplicates as dups
from retrieval.cli.common import Run, cli, common_options
from retrieval.errors import ClipdexError
from retrieval.index import Index

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
            run.emit(found.as_dict(), lambda: _table(found))
            return
        files = [d.path for g in found.groups for d in g.duplicates]
        if not files:
            raise ClipdexError("no duplicates found; nothing moved")
        result = dups.move_files(index, files, move_to)
        run.emit(result | {"groups": len(found.groups)},
                 lambda: click.echo(f"moved {len(result['moved'])} files; undo with: clipdex duplicates "
                                    f"--undo {result['manifest']}"))


def _table(found: dups.Found) -> None:
    if not found.groups:
        click.echo(f"no duplicates among {found.checked:,} files")
        return
    for n, group in enumerate(found.groups, 1):
        click.echo(f"group {n} ({group.reason}, similarity {group.similarity:.3f})")
        click.echo(f"  keep  {_file(group.keep.row())}   [{group.keep_reason}]")
        for dup in group.duplicates:
            click.echo(f"  dup   {_file(dup.row())}")
    dupes = sum(len(g.duplicates) for g in found.groups)
    click.echo(f"{len(found.groups)} groups, {dupes} duplicates among {found.checked:,} files")
    if found.unreadable:
        click.echo(f"unreadable now (skipped): {len(found.unreadable)} files, e.g. {found.unreadable[0]}")


def _file(row: dict[str, Any]) -> str:
    return (f"{row['path']}  {row['width']}x{row['height']}  {row['size']:,} B  {row['format'] or '?'}"
            f"  {row['taken_at'] or 'no date'}")
