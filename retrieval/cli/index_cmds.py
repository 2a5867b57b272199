"""``clipdex ingest``, ``search`` and ``status``."""

from __future__ import annotations

import os
import sys
import uuid
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

import click

from retrieval import hints
from retrieval.cli.common import Run, cli, common_options, echo
from retrieval.cli.paths import echo_paths
from retrieval.cli.remote import Server, server_for
from retrieval.errors import ClipdexError
from retrieval.search.request import (
    MAX_LIMIT,
    MAX_MOMENTS,
    MAX_WEIGHT,
    SearchRequest,
    SearchRequestError,
    folder_note,
)

if TYPE_CHECKING:
    from retrieval.index import Index
    from retrieval.settings import Settings

# retrieval.index (numpy, the store, the models) is imported inside the commands that open the store: a
# command answered by a running server (retrieval.cli.remote) never loads it.


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
@click.option("--retry-failed", is_flag=True,
              help="Also read the files that failed before and are unchanged (skipped otherwise).")
@click.option("--ray", "ray_address", is_flag=False, flag_value="[ray]", default=None, metavar="[ADDRESS]",
              help="Run on Ray Data: 'auto' joins the running cluster, 'local' starts one in-process, or a "
                   "cluster address [default: [ray] address, else local].")
@common_options
def ingest(run: Run, folders: tuple[str, ...], include: tuple[str, ...], exclude: tuple[str, ...],
           follow_symlinks: bool | None, hidden: bool | None, workers: int | None, progress: bool | None,
           prune: bool, ocr: bool | None, video: bool | None, retry_failed: bool, ray_address: str | None) -> None:
    """Embed the images and videos below FOLDERS; re-runs only do what changed."""
    if server := server_for(run.settings):
        given = {"--include": include, "--exclude": exclude, "--follow-symlinks": follow_symlinks, "--hidden": hidden,
                 "--workers": workers, "--ocr": ocr, "--video": video, "--ray": ray_address,
                 "--retry-failed": retry_failed or None}
        summaries = _remote_ingest(server, folders, prune, [k for k, v in given.items() if v not in (None, ())])
        for summary in summaries:
            for line in summary.get("notices", []):
                echo(f"clipdex: {line}", err=True)
        run.emit(summaries[0] if len(summaries) == 1 else summaries,
                 lambda: [_ingest_lines(summary) for summary in summaries])
        return
    settings = run.settings.with_overrides(ingest={
        "include": list(include) or None, "exclude": list(exclude) or None, "follow_symlinks": follow_symlinks,
        "skip_hidden": None if hidden is None else not hidden, "workers": workers, "video": video})
    made = _new_folders(settings)
    try:
        with open_index(settings, create=True) as index:
            show = progress if progress is not None else (not run.json and sys.stderr.isatty())
            if ray_address is None:  # no --ray: the config's [ray] address ("" = this process)
                ray_address = settings.ray.address
            elif ray_address == "[ray]":  # --ray without a value
                ray_address = settings.ray.address or "local"
            report = index.ingest(folders, progress=show, prune=prune, ray=ray_address, ocr=ocr,
                                  retry_failed=retry_failed)
    except BaseException:
        _remove_if_empty(made)  # a first run that failed (a folder typo, no model) leaves no empty store behind
        raise
    summary = report.as_dict()
    for line in report.notices():  # kept and held-back points: said even with --json
        echo(f"clipdex: {line}", err=True)
    run.emit(summary, lambda: _ingest_lines(summary))


def _new_folders(settings: Any) -> list[str]:
    """The embedded store's folders this ingest would create (the collection's, and the store's), deepest first."""
    if settings.store.url:
        return []
    folder = settings.store_path / settings.store.collection
    return [str(p) for p in (folder, folder.parent) if not p.exists()]


def _remove_if_empty(folders: list[str]) -> None:
    """Remove the folders a failed first ingest made, if they hold nothing but the released lock file."""
    from retrieval.store.lock import LOCK_FILE

    for folder in folders:
        try:
            entries = os.listdir(folder)
            if entries == [LOCK_FILE] and os.path.getsize(os.path.join(folder, LOCK_FILE)) == 0:
                os.unlink(os.path.join(folder, LOCK_FILE))
            os.rmdir(folder)  # only when empty
        except OSError:
            return


def _ingest_lines(summary: dict[str, Any]) -> None:
    """The text output of an ingest: its counts, failures and OCR pass (an ingest report's ``as_dict``)."""
    failed, skipped = summary["failed"], summary.get("skipped") or []
    echo(f"indexed {summary['indexed']}, unchanged {summary['unchanged']}, moved {summary['moved']}, "
         f"duplicates {summary['duplicates']}, deleted {summary['deleted']}, failed {len(failed)}"
         + (f", skipped {len(skipped)}" if skipped else "")
         + (f", videos {summary['videos']} ({summary.get('moments', 0)} moments)" if summary.get("videos") else ""))
    for item in failed:
        echo(f"  failed: {item['path']}: {item['error']}")
    for item in skipped:
        echo(f"  skipped: {item['path']}: failed before, unchanged ({item['error']})")
    if skipped:
        echo(f"  ({hints.command('ingest DIR --retry-failed')} reads them again)")
    if summary.get("ocr") is not None:
        o = summary["ocr"]
        echo(f"ocr: read {o['read']}, with text {o['with_text']}, reused {o['reused']}, failed {len(o['failed'])}")
        for item in o["failed"]:
            echo(f"  ocr failed: {item['path']}: {item['error']}")


INGEST_POLL_S = 0.2


def _remote_ingest(server: Server, folders: tuple[str, ...], prune: bool, options: list[str]) -> list[dict[str, Any]]:
    """Ingest ``folders`` through the server that holds the store: ``POST /api/ingest`` of the watched folder
    each lies in, then wait for that sync to finish; its summaries, one per folder."""
    if options:
        raise ClipdexError(f"{server.owner()} holds the store and ingests with its own settings: leave out "
                           f"{', '.join(options)}, or stop the server first")
    sync = server.get("/api/status").get("sync")
    if not sync:
        raise ClipdexError(f"store is in use by {server.owner()}, which watches no folder: restart it with "
                           f"{hints.command('serve --watch DIR')} (it then ingests DIR, and `clipdex ingest DIR` asks "
                           "it to), or stop it first")
    roots = [r["path"] for r in sync["roots"]]
    wanted = []
    for folder in folders:
        path = os.path.abspath(os.path.expanduser(folder))
        root = next((r for r in roots if path == r or path.startswith(r.rstrip("/") + "/")), None)
        if root is None:
            raise ClipdexError(f"store is in use by {server.owner()}, which watches {', '.join(roots)}, not "
                               f"{folder}: add `--watch {path}` to the server's command (or [serve] watch), or stop "
                               "it first")
        wanted.append(root)
    summaries = []
    for root in dict.fromkeys(wanted):
        before = _root_state(server, root)
        server.request("POST", "/api/ingest", {"root": root, "prune": prune or None})
        summaries.append(_wait_for_sync(server, root, int(before.get("syncs") or 0)))
    return summaries


def _root_state(server: Server, root: str) -> dict[str, Any]:
    """The server's status of one watched folder (``sync.roots[]``) and whether a sync of it is running or queued."""
    sync = server.get("/api/status").get("sync") or {}
    state = next((r for r in sync.get("roots", []) if r.get("path") == root), {})
    return state | {"busy": root in sync.get("queued", []) or sync.get("root") == root}


def _wait_for_sync(server: Server, root: str, syncs_before: int) -> dict[str, Any]:
    """The summary of the server's next finished sync of ``root`` (its error as a ClipdexError)."""
    import time

    while True:
        state = _root_state(server, root)
        if not state["busy"] and int(state.get("syncs") or 0) > syncs_before:
            last = state.get("last") or {}
            if last.get("error"):
                raise ClipdexError(f"{server.owner()}: ingest of {root} failed: {last['error']}")
            return last.get("result") or {}
        time.sleep(INGEST_POLL_S)


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
@click.option("--folder", help="Only files below this folder, at any depth (whole folder names: 'photos/sh' is "
                                "not 'photos/shirt'; a Qdrant payload filter).")
@click.option("--min-score", type=float, default=None,
              help="Drop hits whose score (the CLIP cosine, also in hybrid search) is below (-1 to 1).")
@click.option("--text-weight", type=float, default=None,
              help=f"Weight of TEXT in a text+image query (0-{MAX_WEIGHT:g}) {_default('text_weight')}.")
@click.option("--image-weight", type=float, default=None,
              help=f"Weight of --image in a text+image query (0-{MAX_WEIGHT:g}) {_default('image_weight')}.")
@click.option("--negative-weight", type=float, default=None,
              help=f"How hard negative prompts push away (0-{MAX_WEIGHT:g}) {_default('negative_weight')}.")
@click.option("--after", help="Taken on or after this date (EXIF), e.g. 2021 or 2021-07-04.")
@click.option("--before", help="Taken before this date (EXIF).")
@click.option("--camera", help="EXIF camera make or model (case aside: 'iphone 14' finds 'iPhone 14').")
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
    server = server_for(run.settings)
    rows = _remote_search(run, server, options) if server else _local_search(run, request, options)
    if not rows and request.folder and (note := folder_note(request.folder)):
        echo(f"clipdex: note: {note}", err=True)
    if paths_only:  # a moment as path#t=SECONDS
        if left_out := echo_paths([{**row, "path": _fragment(row)} for row in rows]):
            raise ClipdexError(f"{left_out} matching path(s) left out of --paths: they hold control characters")
        return

    def human() -> None:
        if not rows:
            echo("no results")
        for row in rows:
            at = _moment_at(row)
            echo(f"{row['score']:.4f}  {row['path']}{at}")
            if row.get("ocr_text"):
                echo("        text: " + " / ".join(row["ocr_text"].splitlines())[:200])

    run.emit(rows, human)


def _fragment(row: dict[str, Any]) -> str:
    """A row's reference for --paths: the path, or ``path#t=SECONDS`` for a video moment."""
    if row.get("media") == "video" and row.get("time_s") is not None:
        from retrieval.search.moments import fragment  # (numpy: only for a video moment)

        return fragment(row)
    return str(row.get("path", ""))


def _moment_at(row: dict[str, Any]) -> str:
    """``  at m:ss (m:ss-m:ss)`` for a video moment, "" for a photo."""
    if row.get("media") != "video" or "time_s" not in row:
        return ""
    from retrieval.search.moments import mmss

    return f"  at {mmss(row['time_s'])} ({mmss(row['start_s'])}-{mmss(row['end_s'])})"


def _local_search(run: Run, request: SearchRequest, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of a search this process runs itself (it opens the store)."""
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
    from retrieval.search.run import hit_row

    return [hit_row(h) for h in hits]


def _remote_search(run: Run, server: Server, options: dict[str, Any]) -> list[dict[str, Any]]:
    """The rows of the same search asked of the server that holds the store (``GET``/``POST /api/search``).

    Paths are made absolute here (the server's working folder is not this one); the defaults this run's
    settings give (``limit``, ``relevant``) are sent, so the answer is the one this process would give.
    """
    params = {k: v for k, v in options.items() if v is not None and v != () and k != "image"}
    if "text" in params:
        params["q"] = params.pop("text")
    for key in ("like", "unlike"):
        if key in params:
            params[key] = [_absolute_ref(ref) for ref in params[key]]
    if params.get("folder"):
        params["folder"] = os.path.abspath(os.path.expanduser(params["folder"]))
    params.setdefault("limit", run.settings.search.limit)
    params.setdefault("relevant", run.settings.search.cutoff == "auto")
    image = options.get("image")
    if not image:
        return server.get("/api/search", params)
    url = _image_url(image)
    if not url:
        return server.post_form("/api/search", params, "image", image)
    from retrieval.search.fetch import fetched

    limits = run.settings.search
    with fetched(url, max_bytes=int(limits.fetch_max_mb * (1 << 20)), timeout_s=limits.fetch_timeout_s) as local:
        try:
            return server.post_form("/api/search", params, "image", local)
        except ClipdexError as exc:
            raise ClipdexError(str(exc).replace(os.path.basename(local), url)) from None


def _absolute_ref(ref: str) -> str:
    """A like/unlike example as the server must read it: a point id as it is, a path made absolute."""
    try:
        return str(uuid.UUID(ref))
    except ValueError:
        return os.path.abspath(os.path.expanduser(ref))


def _image_url(image: str | None) -> str | None:
    """``--image`` when it names an http(s) URL (other schemes are refused), else None."""
    if not image:
        return None  # a text search: urllib and http.client stay unloaded
    from retrieval.search.fetch import is_url

    return image if image and is_url(image) else None


@cli.command()
@click.option("--check", is_flag=True,
              help="Also read every stored vector; mark damaged points so the next ingest embeds them again "
                   "(exit 1 when something is damaged).")
@click.option("--failed", "list_failed", is_flag=True,
              help="Also list each file ingest could not read, with the reason (--json: failed_files).")
@common_options
def status(run: Run, check: bool, list_failed: bool) -> None:
    """Show the collection, its size, its model and where it is stored."""
    from retrieval.status import STATUS_KEYS
    from retrieval.store.layout import LAYOUT

    server = server_for(run.settings)
    if server is not None:
        if check:
            raise ClipdexError(f"status --check reads every stored vector and marks damaged points: it needs the "
                               f"store, which {server.owner()} holds; stop the server first, then run it again")
        info = server.get("/api/status")
        checked = None
    else:
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
            state = f"offline: {root['offline']}; its points are kept until it is back" if root["offline"] else "online"
            echo(f"root        {root['path']}  {root['points']:,} points  ({state})")
        if info.get("videos"):
            echo(f"videos      {info['videos']:,} ({info['moments']:,} moments)")
        _failed_lines(info.get("failed"), listed, list_failed)
        if info["points"]:
            echo(f"ocr         {info['ocr']['text']:,} points with text, {info['ocr']['pending']:,} pending")
        if info["unindexed"]:
            echo(f"unindexed   {info['unindexed']:,} points (searched exactly until the index is built)")
        if info["layout"] < LAYOUT:
            echo(f"layout      {info['layout']} (made by an older clipdex; it works as it is. "
                 f"{hints.command('rebuild')} rewrites it in layout {LAYOUT}: float16 vectors, no ancestors lists, "
                 "about half the memory)")
        if info["label"]:
            echo(f"note        {info['label']}")
        for problem in info["problems"]:
            echo(f"damaged     {problem}: searches may fail; restore the store from a backup, or ingest "
                 "into a new --collection")
        if checked is not None:
            echo(f"checked     {checked['checked']:,} vectors, {checked['damaged']:,} damaged"
                 + (f" (marked: the next {hints.command('ingest DIR')} embeds their files again)"
                    if checked["damaged"] else ""))
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

    listed = _failed_files(run.settings) if list_failed else None
    doc = {k: info.get(k) for k in STATUS_KEYS}  # (a server of an older clipdex may lack a key)
    run.emit(doc | ({"check": checked} if checked is not None else {})
             | ({"failed_files": listed} if list_failed else {}), human)
    if checked is not None and (checked["damaged"] or checked["problems"] or (checked["files"] or {}).get("lost")):
        raise click.exceptions.Exit(1)


def _failed_files(settings: Settings) -> list[dict[str, Any]] | None:
    """Every entry of the collection's failure ledger (``ingest.failures``), read from its file (also while a
    server holds the store); None on a Qdrant server store, which has no local folder to keep it in."""
    from ingest import failures

    if settings.store.url:
        return None
    keys = ("path", "media", "error", "size", "mtime_ns", "at")
    return [{k: e[k] for k in keys} for e in failures.entries_in_order(settings.store_path / settings.store.collection)]


def _failed_lines(counts: dict[str, int] | None, listed: list[dict[str, Any]] | None, asked: bool) -> None:
    """The human ``failed`` line of ``status`` (with ``--failed``, one more line per file)."""
    if counts is None or (asked and listed is None):
        if asked:
            echo("failed      not remembered on a Qdrant server store (no local collection folder to keep them "
                 "in): each ingest's report lists its failures")
        return
    total = counts["images"] + counts["videos"]
    if total:
        kinds = ", ".join(f"{n:,} {kind if n == 1 else kind + 's'}"
                          for kind, n in (("image", counts["images"]), ("video", counts["videos"])))
        echo(f"failed      {total:,} file{'s' if total != 1 else ''} ingest could not read ({kinds})"
             + ("" if listed is not None else f": {hints.command('status --failed')} lists them"))
    for item in listed or []:
        echo(f"  failed: {item['path']}: {item['error']}")


@cli.command()
@common_options
def rebuild(run: Run) -> None:
    """Rewrite the embedded store in the current layout (a copy beside it, switched atomically)."""
    from retrieval.store.layout import LAYOUT

    if server := server_for(run.settings):
        raise ClipdexError(f"rebuild rewrites the whole store, which {server.owner()} holds: stop the server "
                           f"(Ctrl-C), run {hints.command('rebuild')}, then start it again")
    with open_index(run.settings) as index:
        before = index.status()["layout"]

        def progress(done: int, total: int) -> None:
            if not run.json and done % 102_400 < 1024:
                echo(f"copied {done:,}/{total:,} points", err=True)

        points = index.rebuild(progress)
    result = {"points": points, "layout_before": before, "layout": LAYOUT}
    run.emit(result, lambda: echo(f"rebuilt {points:,} points: layout {before} -> {LAYOUT}"))
