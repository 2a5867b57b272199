"""``clipdex ingest``, ``search`` and ``status``."""

from __future__ import annotations

import sys

import click

from ingest.exif import parse_optional_date
from retrieval.cli.common import Run, cli, common_options
from retrieval.index import STATUS_KEYS, Index, hit_row


@cli.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=str))
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable), e.g. '*.jpg', '2024/**'.")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--follow-symlinks/--no-follow-symlinks", default=None, help="Descend into symlinked folders.")
@click.option("--hidden/--no-hidden", default=None, help="Also index hidden (dot) folders and files.")
@click.option("--workers", type=click.IntRange(0, 64), default=None, help="Decoder processes (0: decode inline).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: when stderr is a terminal and --json is off].")
@click.option("--ray", "ray_address", is_flag=False, flag_value="[ray]", default=None, metavar="[ADDRESS]",
              help="Run on Ray Data: 'auto' joins the running cluster, 'local' starts one in-process, or a "
                   "cluster address [default: [ray] address, else local].")
@common_options
def ingest(run: Run, folders: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
           follow_symlinks: bool | None, hidden: bool | None, workers: int | None, progress: bool | None,
           ray_address: str | None) -> None:
    """Embed the images below FOLDERS; re-runs only do what changed."""
    settings = run.settings.with_overrides(ingest={
        "include": list(include) or None, "exclude": list(exclude) or None, "follow_symlinks": follow_symlinks,
        "skip_hidden": None if hidden is None else not hidden, "workers": workers})
    with Index.open(settings, create=True) as index:
        show = progress if progress is not None else (not run.json and sys.stderr.isatty())
        if ray_address == "[ray]":  # --ray without a value
            ray_address = settings.ray.address or "local"
        report = index.ingest(folders, progress=show, ray=ray_address)
    summary = report.as_dict()

    def human() -> None:
        click.echo(f"indexed {report.indexed}, unchanged {report.unchanged}, moved {report.moved}, "
                   f"duplicates {report.duplicates}, deleted {report.deleted}, failed {len(report.failed)}")
        for item in report.failed:
            click.echo(f"  failed: {item['path']}: {item['error']}")

    run.emit(summary, human)


@cli.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(dir_okay=False, path_type=str), help="Example image (any image file).")
@click.option("--negative", multiple=True, help="Steer away from this prompt (repeatable).")
@click.option("--limit", "-k", type=click.IntRange(min=1, max=10000), default=None, help="How many results.")
@click.option("--folder", help="Only files below this folder (a Qdrant payload filter).")
@click.option("--min-score", type=click.FloatRange(-1.0, 1.0), default=None, help="Drop hits scoring below.")
@click.option("--text-weight", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
@click.option("--image-weight", type=click.FloatRange(min=0.0), default=1.0, show_default=True)
@click.option("--negative-weight", type=click.FloatRange(min=0.0), default=0.5, show_default=True)
@click.option("--after", help="Taken on or after this date (EXIF), e.g. 2021 or 2021-07-04.")
@click.option("--before", help="Taken before this date (EXIF).")
@click.option("--camera", help="EXIF camera make or model, exactly.")
@common_options
def search(run: Run, text: str | None, image: str | None, negative: tuple[str, ...], limit: int | None,
           folder: str | None, min_score: float | None, text_weight: float, image_weight: float,
           negative_weight: float, after: str | None, before: str | None, camera: str | None) -> None:
    """Find images by TEXT, by --image, or both."""
    after_ts, before_ts = parse_optional_date(after), parse_optional_date(before)
    with Index.open(run.settings) as index:
        hits = index.search(text, image, negative, limit=limit, folder=folder, min_score=min_score,
                            after=after_ts, before=before_ts, camera=camera, text_weight=text_weight,
                            image_weight=image_weight, negative_weight=negative_weight)
    rows = [hit_row(h) for h in hits]

    def human() -> None:
        if not rows:
            click.echo("no results")
        for row in rows:
            click.echo(f"{row['score']:.4f}  {row['path']}")

    run.emit(rows, human)


@cli.command()
@common_options
def status(run: Run) -> None:
    """Show the collection, its size, its model and where it is stored."""
    with Index.open(run.settings) as index:
        info = index.status()

    def human() -> None:
        click.echo(f"collection  {info['collection']}")
        click.echo(f"points      {info['points']}")
        click.echo(f"model       {info['model']} ({info['pretrained'] or 'not created yet'})")
        click.echo(f"dim         {info['dim']}")
        click.echo(f"store       {info['store']}")
        if info["label"]:
            click.echo(f"note        {info['label']}")

    run.emit({k: info[k] for k in STATUS_KEYS}, human)
