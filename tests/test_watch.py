"""``clipdex serve --watch``: a real server process ingesting while it serves.

Real watchdog events on real files, the real tiny model and the real embedded store; every wait
polls the server until a deadline, never a fixed sleep.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from retrieval import load_settings
from retrieval.changes import apply_changes
from retrieval.errors import ClipdexError
from retrieval.index import Index
from retrieval.server import create_app
from tests.conftest import write_config
from tests.images import pattern
from tests.test_server import _free_port, run_cli, serving

WAIT_S = 60.0


def until(check: Callable[[], Any], what: str, timeout: float = WAIT_S) -> Any:
    """Poll ``check`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def write_images(folder: Path, count: int, start: int = 0, size: tuple[int, int] = (48, 32)) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"img{start + i:04d}.png" for i in range(count)]
    for i, path in enumerate(paths):
        pattern(start + i, size).save(path)
    return paths


def watch_config(tmp: Path, model_dir: Path, **serve: object) -> Path:
    config = write_config(tmp / "clipdex.toml", model_dir, tmp / "store")
    lines = ["[serve]", *(f"{k} = {v!r}" for k, v in {"debounce_s": 0.2, **serve}.items())]
    config.write_text(config.read_text() + "\n".join(lines).replace("'", '"') + "\n")
    return config


def indexed(http: httpx.Client, path: Path) -> bool:
    """Whether the server holds a point for ``path``: a search of its folder, with every result, lists it."""
    response = http.get("/api/search", params={"q": "a picture", "folder": str(path.parent), "limit": 10000})
    return response.status_code == 200 and str(path) in {row["path"] for row in response.json()}


def sync_status(http: httpx.Client) -> dict[str, Any]:
    return http.get("/api/status").json()["sync"]


def serve_watching(config: Path, lib: Path | list[Path], probe: Callable[[httpx.Client, int], None]) -> tuple[int, str]:
    """Run the real `clipdex serve --watch LIB` in this thread (real signals) while ``probe(http, port)``
    runs in another once the server answers; SIGTERM when the probe ends. Returns (exit code, stderr)."""
    port = _free_port()
    up = threading.Event()

    def run_probe() -> None:
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                until(lambda: _up(http), "the server")
                up.set()
                probe(http, port)
        finally:  # uvicorn handles SIGTERM in the main thread; SIGINT if it never came up
            os.kill(os.getpid(), signal.SIGTERM if up.is_set() else signal.SIGINT)

    prober = threading.Thread(target=run_probe, daemon=True)
    prober.start()
    watch = [arg for folder in (lib if isinstance(lib, list) else [lib]) for arg in ("--watch", folder)]
    code, _, err = run_cli("serve", "--port", port, "--config", config, *watch, "--log-level", "warning")
    prober.join(10)
    return code, err


def test_serve_watch_picks_up_new_moved_and_deleted_files(tmp_path: Path, tiny_model_dir: Path):
    """The real `clipdex serve --watch DIR` command (main thread, real signals) and real file events."""
    lib = tmp_path / "lib"
    first = write_images(lib / "a", 3)
    config = watch_config(tmp_path, tiny_model_dir)
    seen: dict[str, Any] = {}

    def probe(http: httpx.Client, port: int) -> None:
        seen["initial"] = until(lambda: (s := http.get("/api/status").json())["sync"]["syncs"] >= 1 and s,
                                "the initial sync")
        new = write_images(lib / "a", 1, start=100)[0]  # into a watched folder: ingested by path
        until(lambda: indexed(http, new), "the new file to be indexed")
        with new.open("rb") as fh:
            seen["found"] = http.post("/api/search", files={"image": ("q.png", fh, "image/png")},
                                      data={"limit": "1"}).json()
        seen["new"] = new
        first[0].unlink()
        until(lambda: not indexed(http, first[0]), "the deleted file to be dropped")
        moved = lib / "a" / "renamed.png"
        first[1].rename(moved)
        until(lambda: indexed(http, moved) and not indexed(http, first[1]), "the move")
        seen["final"] = http.get("/api/status").json()
        seen["last"] = seen["final"]["sync"]["last"]
        seen["kept"] = indexed(http, first[2])

    code, err = serve_watching(config, lib, probe)
    assert code == 0, err
    assert f"watching {lib}" in err
    assert seen["initial"]["points"] == 3 and seen["initial"]["sync"]["last"]["result"]["indexed"] == 3
    assert seen["found"][0]["path"] == str(seen["new"]) and seen["found"][0]["score"] >= 0.99
    assert seen["final"]["points"] == 3 and seen["kept"]  # +1 new, -1 deleted, one moved
    assert seen["final"]["roots"] == [{"path": str(lib), "points": 3, "offline": ""}]  # files ingested by path too
    assert seen["final"]["sync"]["errors"] == []
    assert seen["last"]["kind"] == "changes" and seen["last"]["result"]["moved"] == 1  # the vector was reused
    assert "server stopped" in err


def _up(http: httpx.Client) -> bool:
    try:
        return http.get("/api/status").status_code == 200
    except httpx.TransportError:
        return False


@contextmanager
def watching(tmp: Path, model_dir: Path, lib: Path, **serve: object) -> Iterator[tuple[httpx.Client, Index]]:
    """``create_app(..., watch=[lib])`` under a real uvicorn, with its real sync thread and watcher."""
    config = watch_config(tmp, model_dir, **serve)
    with (Index.open(load_settings(config), create=True) as index,
          serving(create_app(index, watch=[str(lib)])) as url, httpx.Client(base_url=url, timeout=30) as http):
        yield http, index


def test_searches_answer_during_a_sync(tmp_path: Path, tiny_model_dir: Path):
    lib = tmp_path / "lib"
    write_images(lib / "seed", 8)
    code, _, err = run_cli("ingest", lib, "--config", write_config(tmp_path / "c.toml", tiny_model_dir,
                                                                     tmp_path / "store"))
    assert code == 0, err
    write_images(lib / "bulk", 600, start=1000)
    with watching(tmp_path, tiny_model_dir, lib) as (http, _):
        during, answers, second, progress = 0, [], None, []
        deadline = time.monotonic() + WAIT_S
        while (status := sync_status(http))["syncs"] == 0:
            assert time.monotonic() < deadline, "the initial sync did not finish"
            response = http.get("/api/search", params={"q": "a colourful patchwork", "limit": 5})
            answers.append(response.status_code)
            if status["state"] == "syncing" and status["stage"] == "read":
                progress.append((status["done"], status["total"]))
            if status["state"] == "syncing" and sync_status(http)["state"] == "syncing":
                during += 1  # this search was answered while the sync ran
                if second is None:
                    second = http.post("/api/ingest", params={"root": str(lib)})
        assert answers and set(answers) == {200}
        assert during >= 3, f"only {during} searches ran during the sync; make the sync longer"
        assert second is not None and second.status_code == 200 and second.json()["started"] is False
        assert progress and {total for _, total in progress} == {600}  # the pipeline's progress, files to read
        assert [done for done, _ in progress] == sorted(done for done, _ in progress) and progress[-1][0] > 0
        assert second.json()["sync"]["root"] == str(lib)
        last = sync_status(http)["last"]
        assert last["error"] == "" and last["result"]["indexed"] == 600 and last["result"]["unchanged"] == 8
        assert http.get("/api/status").json()["points"] == 608


def test_post_ingest_syncs_a_watched_root_and_refuses_others(tmp_path: Path, tiny_model_dir: Path):
    lib = tmp_path / "lib"
    write_images(lib, 2)
    with watching(tmp_path, tiny_model_dir, lib, rescan_interval_s=0) as (http, _):
        until(lambda: sync_status(http)["syncs"] >= 1, "the initial sync")
        for root in (str(tmp_path), "/etc", "relative/lib", ""):
            response = http.post("/api/ingest", params={"root": root} if root else None)
            if root == "":  # no root: every watched folder
                assert response.status_code in (200, 202) and response.json()["sync"]["roots"][0]["path"] == str(lib)
                continue
            assert response.status_code == 400, response.text
            message = response.json()["error"]
            assert "not a watched folder" in message and "\n" not in message
        evil = http.post("/api/ingest", params={"root": str(lib)}, headers={"origin": "http://evil.example"})
        assert evil.status_code == 403 and "cross-site" in evil.json()["error"]
        assert http.post("/api/ingest", params={"prune": "maybe"}).status_code == 422
        same = http.post("/api/ingest", headers={"origin": str(http.base_url).rstrip("/")})
        assert same.status_code in (200, 202)
        write_images(lib, 1, start=50)  # the watcher may see it first; the requested sync must agree
        response = http.post("/api/ingest", params={"root": f"{lib}/"})
        assert response.status_code in (200, 202)
        until(lambda: http.get("/api/status").json()["points"] == 3, "the new file")
        until(lambda: (s := sync_status(http))["state"] == "idle" and not s["queued"], "the requested sync")
        assert sync_status(http)["errors"] == []
    config = write_config(tmp_path / "plain.toml", tiny_model_dir, tmp_path / "store")
    with Index.open(load_settings(config)) as index, serving(create_app(index)) as url:
        response = httpx.post(f"{url}/api/ingest")
        assert response.status_code == 409 and "--watch" in response.json()["error"]
        assert httpx.get(f"{url}/api/status").json()["sync"] is None


def test_an_offline_root_keeps_its_points_and_comes_back(tmp_path: Path, tiny_model_dir: Path):
    lib, away = tmp_path / "lib", tmp_path / "unmounted"
    files = write_images(lib, 3)
    with watching(tmp_path, tiny_model_dir, lib, rescan_interval_s=0.3) as (http, index):
        until(lambda: http.get("/api/status").json()["points"] == 3, "the initial sync")
        lib.rename(away)  # the drive goes away ...
        until(lambda: any("missing" in e["error"] for e in sync_status(http)["errors"]), "the offline root")
        assert http.get("/api/status").json()["points"] == 3  # ... and nothing is dropped
        lib.mkdir()  # an empty mount point
        until(lambda: any("empty" in e["error"] for e in sync_status(http)["errors"]), "the empty root")
        assert http.get("/api/status").json()["points"] == 3
        lib.rmdir()
        away.rename(lib)  # mounted again: watched again, new files are picked up
        until(lambda: sync_status(http)["roots"][0]["watched"], "the root to be watched again")
        new = write_images(lib, 1, start=70)[0]
        until(lambda: indexed(http, new), "a new file after the root came back")
        assert all(indexed(http, f) for f in files)


def test_an_empty_or_missing_folder_is_watched_from_the_start(tmp_path: Path, tiny_model_dir: Path):
    """A new camera-dump folder (empty) and one not made yet (missing) are watched: files that appear in
    them are ingested within seconds, and the status says how each is watched, in words."""
    empty, missing = tmp_path / "dump", tmp_path / "later" / "photos"
    empty.mkdir()
    config = watch_config(tmp_path, tiny_model_dir)  # rescans every 600 s: only the watch can be this quick
    seen: dict[str, Any] = {}

    def probe(http: httpx.Client, port: int) -> None:
        until(lambda: sync_status(http)["syncs"] >= 2, "the first syncs")
        seen["start"] = {r["path"]: r for r in sync_status(http)["roots"]}
        files = write_images(empty, 2)
        seen["empty"] = until(lambda: all(indexed(http, f) for f in files), "files in the empty folder", 30)
        files = write_images(missing, 1, start=10)
        seen["missing"] = until(lambda: all(indexed(http, f) for f in files), "a file in the new folder", 30)
        seen["after"] = until(lambda: {r["path"]: r for r in sync_status(http)["roots"]}[str(missing)]["state"]
                              == "watching", "the new folder watched itself")

    code, err = serve_watching(config, [empty, missing], probe)
    assert code == 0, err
    start = seen["start"]
    assert start[str(empty)]["watched"] and start[str(empty)]["state"] == "watching"
    assert "empty" in start[str(empty)]["reason"] and start[str(empty)]["error"] == ""
    assert start[str(missing)]["watched"] and start[str(missing)]["state"] == "waiting"
    assert f"watching {tmp_path} for it to appear" in start[str(missing)]["reason"]
    assert seen["empty"] and seen["missing"] and seen["after"]
    assert f"watching {empty} (empty for now: new files are ingested as they arrive)" in err
    assert f"waiting for {missing} to appear" in err and "retried every" not in err


def test_changes_prove_a_file_gone_before_dropping_it(tmp_path: Path, tiny_model_dir: Path):
    """apply_changes: what the events named is checked on disk; an offline root changes nothing."""
    lib = tmp_path / "lib"
    files = write_images(lib / "a", 3) + write_images(lib / ".hidden", 1, start=9)
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    with Index.open(load_settings(config), create=True) as index:
        index.ingest([lib])
        assert index.store.count() == 3  # hidden files are not ingested
        summary = apply_changes(index, str(lib), [str(p) for p in files])  # events for files still there
        assert summary["deleted"] == 0 and summary["unchanged"] == 3 and index.store.count() == 3
        shutil.move(str(lib), str(tmp_path / "away"))
        with pytest.raises(ClipdexError, match="missing"):
            apply_changes(index, str(lib), [str(p) for p in files])
        assert index.store.count() == 3
        shutil.move(str(tmp_path / "away"), str(lib))
        files[0].unlink()
        shutil.rmtree(lib / "a" / "sub", ignore_errors=True)
        summary = apply_changes(index, str(lib), [str(files[0]), str(lib / "a" / "never-existed.png")])
        assert summary["deleted"] == 1 and index.store.count() == 2
        moved = lib / "b"
        (lib / "a").rename(moved)  # a folder moved: its old path is gone, the new one is synced as a whole
        summary = apply_changes(index, str(lib), [str(lib / "a"), str(moved)])
        assert summary["kind"] == "full" and summary["moved"] == 2 and index.store.count() == 2


def test_a_change_event_proving_a_failed_file_gone_drops_it_from_the_failure_ledger(tmp_path: Path,
                                                                                       tiny_model_dir: Path):
    """``status`` stops counting a failed file as soon as a watch event proves it gone (not at the next full sync);
    a failed file still there stays counted."""
    from ingest import failures

    lib = tmp_path / "lib"
    write_images(lib, 2)
    (lib / "broken.jpg").write_text("not a picture")
    (lib / "empty.png").write_bytes(b"")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    with Index.open(load_settings(config), create=True) as index:
        index.ingest([lib])
        folder = failures.folder_of(index.store)
        assert folder is not None and failures.counts(folder) == {"images": 2, "videos": 0}
        (lib / "broken.jpg").unlink()
        apply_changes(index, str(lib), [str(lib / "broken.jpg")])
        assert failures.counts(folder) == {"images": 1, "videos": 0}
        assert [e["path"] for e in failures.entries_in_order(folder)] == [str(lib / "empty.png")]


def test_watch_settings_and_bad_watch_paths(tmp_path: Path, tiny_model_dir: Path):
    config = watch_config(tmp_path, tiny_model_dir, watch=["lib", "/abs/photos"], rescan_interval_s=5)
    settings = load_settings(config).serve
    assert settings.watch == [str(tmp_path / "lib"), "/abs/photos"]  # relative to the config file
    assert settings.rescan_interval_s == 5 and settings.debounce_s == 0.2
    photo = write_images(tmp_path, 1)[0]
    code, _, err = run_cli("serve", "--port", _free_port(), "--config", config, "--watch", photo)
    assert code == 2 and "--watch" in err and "is a file" in err and err.count("\n") == 1
    (tmp_path / "bad").mkdir()
    bad = watch_config(tmp_path / "bad", tiny_model_dir, rescan_interval_s=-1)
    code, _, err = run_cli("serve", "--config", bad)
    assert code == 1 and "serve.rescan_interval_s" in err and err.count("\n") == 1


def test_the_embedded_store_answers_queries_while_another_thread_upserts(tmp_path: Path):
    """qdrant-edge's shard takes calls from several threads: queries run between a writer's upserts."""
    import numpy as np

    from retrieval.store import CollectionMeta, SearchFilter
    from retrieval.store.edge import EdgeStore

    store = EdgeStore(tmp_path / "edge")
    store.create(CollectionMeta("m", "", 16))
    rng = np.random.default_rng(0)
    seed = rng.standard_normal((50, 16)).astype(np.float32)
    store.upsert(_ids(0, 50), seed / np.linalg.norm(seed, axis=1, keepdims=True),
                 [{"path": f"/p/{i}"} for i in range(50)])
    done = threading.Event()
    answers: list[int] = []
    errors: list[BaseException] = []

    def search() -> None:
        try:
            while not done.is_set():
                answers.append(len(store.query(seed[0], 10, SearchFilter())))
        except BaseException as exc:
            errors.append(exc)

    reader = threading.Thread(target=search)
    reader.start()
    try:
        for start in range(50, 4050, 200):
            vectors = rng.standard_normal((200, 16)).astype(np.float32)
            store.upsert(_ids(start, start + 200), vectors / np.linalg.norm(vectors, axis=1, keepdims=True),
                         [{"path": f"/p/{i}"} for i in range(start, start + 200)])
    finally:
        done.set()
        reader.join(30)
    assert not errors and answers and set(answers) == {10}
    assert store.count() == 4050
    assert store.query(seed[0], 1, SearchFilter())[0].payload["path"] == "/p/0"
    store.close()


def _ids(start: int, stop: int) -> list[str]:
    import uuid

    return [str(uuid.UUID(int=i + 1)) for i in range(start, stop)]


def test_ingest_while_serving_goes_through_the_server_or_names_it(tmp_path: Path, tiny_model_dir: Path):
    lib = tmp_path / "lib"
    write_images(lib, 2)
    other = tmp_path / "other"
    write_images(other, 1)
    config = watch_config(tmp_path, tiny_model_dir)
    seen: dict[str, Any] = {}

    def probe(http: httpx.Client, port: int) -> None:
        seen["port"] = port
        until(lambda: sync_status(http)["syncs"], "the first sync")
        seen["ingest"] = run_cli("ingest", lib, "--config", config)
        seen["other"] = run_cli("ingest", other, "--config", config)

    code, err = serve_watching(config, lib, probe)
    assert code == 0, err
    ingest_code, ingest_out, ingest_err = seen["ingest"]
    assert ingest_code == 0 and ingest_out.startswith("indexed "), ingest_err
    other_code, _, other_err = seen["other"]
    assert other_code == 1 and other_err.count("\n") == 1
    assert f"clipdex serve at http://127.0.0.1:{seen['port']}" in other_err and "--watch" in other_err


def test_an_event_storm_becomes_one_full_sync(tmp_path: Path, tiny_model_dir: Path):
    """More changed paths than MAX_EVENT_FILES are not kept one by one: the root is synced whole."""
    from retrieval.changes import MAX_EVENT_FILES
    from retrieval.sync import Syncer

    lib = tmp_path / "lib"
    write_images(lib, 2)
    config = watch_config(tmp_path, tiny_model_dir, rescan_interval_s=0)
    with Index.open(load_settings(config), create=True) as index:
        syncer = Syncer(index, [str(lib)], index.settings.serve, threading.Lock())
        syncer.start()
        try:
            until(lambda: syncer.status()["syncs"] == 1, "the initial sync")
            syncer.notify(str(lib), [str(lib / f"x{i}.png") for i in range(MAX_EVENT_FILES + 1)])
            assert syncer.status()["pending_changes"] == 0  # nothing kept per path
            last = until(lambda: (s := syncer.status())["syncs"] == 2 and s["last"], "the storm's sync")
        finally:
            syncer.stop()
    assert last["kind"] == "full" and last["error"] == "" and last["result"]["unchanged"] == 2


def test_a_mass_deletion_seen_as_events_waits_for_prune(tmp_path: Path, tiny_model_dir: Path):
    lib = tmp_path / "lib"
    write_images(lib / "album", 3)
    write_images(lib / "keep", 1, start=10)
    with watching(tmp_path, tiny_model_dir, lib, rescan_interval_s=0) as (http, _):
        until(lambda: http.get("/api/status").json()["points"] == 4, "the initial sync")
        shutil.rmtree(lib / "album")  # 3 of 4 points: over max_delete_fraction = 0.5
        notice = until(lambda: [e["error"] for e in sync_status(http)["errors"] if "held back" in e["error"]],
                       "the held-back deletion")
        assert "3 of 4 points" in notice[0] and "prune=true" in notice[0]
        assert http.get("/api/status").json()["points"] == 4
        response = http.post("/api/ingest", params={"root": str(lib), "prune": "true"})
        assert response.status_code == 202 and response.json()["started"] is True
        until(lambda: http.get("/api/status").json()["points"] == 1, "the confirmed deletion")
        assert sync_status(http)["last"]["result"]["deleted"] == 3
