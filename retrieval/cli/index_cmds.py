"""``clipdex ingest``, ``search`` and ``status``."""

from __future__ import annotations

import sys
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import click

from retrieval.cli.common import Run, cli, common_options, echo
from retrieval.cli.paths import echo_paths
from retrieval.errors import ClipdexError
from retrieval.search.request import MAX_LIMIT, MAX_MOMENTS, MAX_WEIGHT, SearchRequest, SearchRequestError

if TYPE_CHECKING:
    from retrieval.index import Index
    from retrieval.settings import Settings


def open_index(settings: Settings, **kwargs: Any) -> Index:
    """``Index.open``, with retrieval.index (the stores, the model loader: 0.3 s) imported only when a command
    runs, so that a search starts its text tower's session first (retrieval.model.loader.open_text_ahead)."""
    from retrieval.index import Index

    return Index.open(settings, **kwargs)


@cli.command()
@click.argument("folders", nargs=-1, required=True, type=click.Path(path_type=str, readable=False))
@click.option("--include", multiple=True, help="Only files matching this glob (repeatable), e.g. '*.jpg', '2024/**'.")
@click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable).")
@click.option("--follow-symlinks/--no-follow-symlinks", default=None, help="Descend into symlinked folders.")
@click.option("--hidden/--no-hidden", default=None, help="Also index hidden (dot) folders and files.")
@click.option("--workers", type=click.IntRange(0, 64), default=None, help="Decoder processes (0: decode inline).")
@click.option("--progress/--no-progress", default=None,
              help="Progress bar on stderr [default: when stderr is a terminal and --json is off].")
@click.option("--prune", is_flag=True,
              help="Confirm deleting more than [ingest] max_delete_fraction of a folder's points.")
@click.option("--ocr/--no-ocr", default=None,
              help="Then read the text in the images (an OCR pass after the CLIP pass) [default: [ocr] enabled].")
@click.option("--video/--no-video", default=None,
              help="Also ingest videos, one point per moment [default: [ingest] video, on].")
@click.option("--ray", "ray_address", is_flag=False, flag_value="[ray]", default=None, metavar="[ADDRESS]",
              help="Run on Ray Data: 'auto' joins the running cluster, 'local' starts one in-process, or a "
                   "cluster address [default: [ray] address, else local].")
@common_options
def ingest(run: Run, folders: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
           follow_symlinks: bool | None, hidden: bool | None, workers: int | None, progress: bool | None,
           prune: bool, ocr: bool | None, video: bool | None, ray_address: str | None) -> None:
    """Embed the images and videos below FOLDERS; re-runs only do what changed."""
    settings = run.settings.with_overrides(ingest={
        "include": list(include) or None, "exclude": list(exclude) or None, "follow_symlinks": follow_symlinks,
        "skip_hidden": None if hidden is None else not hidden, "workers": workers, "video": video})
    with open_index(settings, create=True) as index:
        show = progress if progress is not None else (not run.json and sys.stderr.isatty())
        if ray_address is None:  # no --ray: the config's [ray] address ("" = this process)
            ray_address = settings.ray.address
        elif ray_address == "[ray]":  # --ray without a value
            ray_address = settings.ray.address or "local"
        report = index.ingest(folders, progress=show, prune=prune, ray=ray_address, ocr=ocr)
    summary = report.as_dict()
    for line in report.notices():  # kept and held-back points: said even with --json
        echo(f"clipdex: {line}", err=True)

    def human() -> None:
        echo(f"indexed {report.indexed}, unchanged {report.unchanged}, moved {report.moved}, "
                   f"duplicates {report.duplicates}, deleted {report.deleted}, failed {len(report.failed)}"
             + (f", videos {report.videos} ({report.moments} moments)" if report.videos else ""))
        for item in report.failed:
            echo(f"  failed: {item['path']}: {item['error']}")
        if report.ocr is not None:
            o = report.ocr
            echo(f"ocr: read {o['read']}, with text {o['with_text']}, reused {o['reused']}, "
                 f"failed {len(o['failed'])}")
            for item in o["failed"]:
                echo(f"  ocr failed: {item['path']}: {item['error']}")

    run.emit(summary, human)


def _default(field: str) -> str:
    """The request model's default for ``field``, for --help (the defaults live in the model only)."""
    return f"[default: {SearchRequest.model_fields[field].default}]"


def search_request(**options: Any) -> SearchRequest:
    """The request the ``search`` options describe; a field beyond its limit is a usage error naming the option."""
    if options.get("text_in_image") is not None and not options["text_in_image"].strip():
        raise click.UsageError("--text-in-image: the phrase is empty")
    try:
        return SearchRequest.of(**{k: v for k, v in options.items() if v is not None})
    except SearchRequestError as exc:
        name = {"text": "TEXT", "": "--after/--before"}.get(exc.field, "--" + exc.field.replace("_", "-"))
        raise click.UsageError(f"{name}: {exc.reason}") from None


@cli.command()
@click.argument("text", required=False)
@click.option("--image", type=click.Path(dir_okay=False, path_type=str),
              help="Example image: any image file, or an http(s) URL (fetched within [search] fetch_max_mb and "
                   "fetch_timeout_s).")
@click.option("--negative", multiple=True, help="Steer away from this prompt (repeatable).")
@click.option("--like", multiple=True, metavar="PATH",
              help="More like this indexed file (repeatable): its stored vector, nothing re-encoded.")
@click.option("--unlike", multiple=True, metavar="PATH", help="Less like this indexed file (repeatable).")
@click.option("--limit", "-k", type=int, default=None,
              help=f"How many results (1-{MAX_LIMIT}) [default: [search] limit].")
@click.option("--folder", help="Only files below this folder (a Qdrant payload filter).")
@click.option("--min-score", type=float, default=None, help="Drop hits scoring below (-1 to 1).")
@click.option("--text-weight", type=float, default=None,
              help=f"Weight of TEXT in a text+image query (0-{MAX_WEIGHT:g}) {_default('text_weight')}.")
@click.option("--image-weight", type=float, default=None,
              help=f"Weight of --image in a text+image query (0-{MAX_WEIGHT:g}) {_default('image_weight')}.")
@click.option("--negative-weight", type=float, default=None,
              help=f"How hard negative prompts push away (0-{MAX_WEIGHT:g}) {_default('negative_weight')}.")
@click.option("--after", help="Taken on or after this date (EXIF), e.g. 2021 or 2021-07-04.")
@click.option("--before", help="Taken before this date (EXIF).")
@click.option("--camera", help="EXIF camera make or model, exactly.")
@click.option("--text-in-image", metavar="PHRASE",
              help="Only images whose recognised text (OCR) holds every word of PHRASE, ranked by BM25.")
@click.option("--ocr/--no-ocr", default=None,
              help="Fuse CLIP with BM25 over recognised text where the collection has some [default: on].")
@click.option("--relevant/--all", default=None,
              help="Only the hits that stand out from this query's score distribution [default: [search] cutoff]; "
                   "with --concept: its members only.")
@click.option("--concept", metavar="NAME", help="Rank by this concept (alone, or with TEXT/--image/--like).")
@click.option("--not-concept", metavar="NAME", help="Steer away from this concept.")
@click.option("--in-concept", metavar="NAME", help="Only members of this concept.")
@click.option("--media", type=click.Choice(["image", "video"]), default=None,
              help="Only photos, or only moments of videos.")
@click.option("--moments", type=int, default=None, metavar="N",
              help=f"Up to N moments of one video (1-{MAX_MOMENTS}) [default: 1, its best].")
@click.option("--paths", "paths_only", is_flag=True,
              help="Print only the matching paths, one per line (for xargs -d '\\n', feh -f -).")
@common_options
def search(run: Run, paths_only: bool, **options: Any) -> None:
    """Find images by TEXT, by --image, by indexed examples (--like/--unlike), or a combination."""
    if paths_only and run.json:
        raise click.UsageError("--paths and --json: choose one")
    request = search_request(**options)  # bad input is refused before any fetch
    texts = [t for t in (request.text, *request.negative) if t is not None]
    if texts:  # a one-shot process: texts' vectors kept on disk, the text tower opened while the store opens
        from retrieval.model import text_cache
        from retrieval.model.loader import open_text_ahead

        text_cache.enable()
        click.get_current_context().call_on_close(lambda: text_cache.enable(False))  # this command only
        open_text_ahead(run.settings.model, texts)
    url = _image_url(request.image)
    with ExitStack() as stack:
        if url:
            from retrieval.search.fetch import fetched

            limits = run.settings.search
            local = stack.enter_context(
                fetched(url, max_bytes=int(limits.fetch_max_mb * (1 << 20)), timeout_s=limits.fetch_timeout_s))
            request = search_request(**(options | {"image": local}))
        try:
            with open_index(run.settings) as index:
                hits = index.search(request)
        except ClipdexError as exc:
            if not url:
                raise
            raise ClipdexError(str(exc).replace(local, url)) from None  # name the URL, not the temporary file
    from retrieval.search.moments import fragment, mmss
    from retrieval.search.run import hit_row

    rows = [hit_row(h) for h in hits]
    if paths_only:  # a moment as path#t=SECONDS
        if left_out := echo_paths([{**row, "path": fragment(row)} for row in rows]):
            raise ClipdexError(f"{left_out} matching path(s) left out of --paths: they hold control characters")
        return

    def human() -> None:
        if not rows:
            echo("no results")
        for row in rows:
            at = f"  at {mmss(row['time_s'])} ({mmss(row['start_s'])}-{mmss(row['end_s'])})" \
                if row.get("media") == "video" and "time_s" in row else ""
            echo(f"{row['score']:.4f}  {row['path']}{at}")
            if row.get("ocr_text"):
                echo("        text: " + " / ".join(row["ocr_text"].splitlines())[:200])

    run.emit(rows, human)


def _image_url(image: str | None) -> str | None:
    """``--image`` when it names an http(s) URL (other schemes are refused), else None."""
    from retrieval.search.fetch import is_url

    return image if image and is_url(image) else None


@cli.command()
@click.option("--check", is_flag=True,
              help="Also read every stored vector; mark damaged points so the next ingest embeds them again "
                   "(exit 1 when something is damaged).")
@common_options
def status(run: Run, check: bool) -> None:
    """Show the collection, its size, its model and where it is stored."""
    from retrieval.index import STATUS_KEYS
    from retrieval.store import LAYOUT

    with open_index(run.settings) as index:
        info = index.status()
        checked = index.check() if check else None

    def human() -> None:
        echo(f"collection  {info['collection']}")
        echo(f"points      {info['points']}")
        echo(f"model       {info['model']} ({info['pretrained'] or 'not created yet'})")
        echo(f"dim         {info['dim']}")
        if info["student_of"]:
            echo(f"student of  {info['student_of']} (text queries use that teacher's text tower)")
        echo(f"store       {info['store']}")
        engines = info["engines"]
        echo(f"engines     text: {engines['text']}; image: {engines['image']}; ingest: {engines['ingest']}")
        for root in info["roots"]:
            state = f"offline: {root['offline']}" if root["offline"] else "online"
            echo(f"root        {root['path']}  {root['points']:,} points  ({state})")
        if info.get("videos"):
            echo(f"videos      {info['videos']:,} ({info['moments']:,} moments)")
        if info["points"]:
            echo(f"ocr         {info['ocr']['text']:,} points with text, {info['ocr']['pending']:,} pending")
        if info["unindexed"]:
            echo(f"unindexed   {info['unindexed']:,} points (searched exactly until the index is built)")
        if info["layout"] < LAYOUT:
            echo(f"layout      {info['layout']} (made by an older clipdex; it works as it is. `clipdex rebuild` "
                 f"rewrites it in layout {LAYOUT}: float16 vectors, no ancestors lists, about half the memory)")
        if info["label"]:
            echo(f"note        {info['label']}")
        for problem in info["problems"]:
            echo(f"damaged     {problem}: searches may fail; restore the store from a backup, or ingest "
                 "into a new --collection")
        if checked is not None:
            echo(f"checked     {checked['checked']:,} vectors, {checked['damaged']:,} damaged"
                 + (" (marked: the next `clipdex ingest` embeds their files again)" if checked["damaged"] else ""))
            for item in checked["examples"]:
                echo(f"  damaged: {item['path']}: {item['reason']}")
            files = checked.get("files")
            if files and files["expected"] is not None:
                echo(f"files       the store's records say {files['expected']:,} points, the engine serves "
                     f"{files['served']:,}" + (f": {files['lost']:,} lost to damaged store files; the next "
                                               "`clipdex ingest` of their folders embeds them again"
                                               if files["lost"] else ""))
            for item in (files or {}).get("set_aside", []):
                echo(f"  set aside: {item['segment']}: {item['reason']}")

    doc = {k: info[k] for k in STATUS_KEYS}
    run.emit(doc | ({"check": checked} if checked is not None else {}), human)
    if checked is not None and (checked["damaged"] or checked["problems"] or (checked["files"] or {}).get("lost")):
        raise click.exceptions.Exit(1)


@cli.command()
@common_options
def rebuild(run: Run) -> None:
    """Rewrite the embedded store in the current layout (a copy beside it, switched atomically)."""
    from retrieval.store import LAYOUT

    with open_index(run.settings) as index:
        before = index.status()["layout"]

        def progress(done: int, total: int) -> None:
            if not run.json and done % 102_400 < 1024:
                echo(f"copied {done:,}/{total:,} points", err=True)

        points = index.rebuild(progress)
    result = {"points": points, "layout_before": before, "layout": LAYOUT}
    run.emit(result, lambda: echo(f"rebuilt {points:,} points: layout {before} -> {LAYOUT}"))
