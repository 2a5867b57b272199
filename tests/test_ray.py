"""`clipdex ingest --ray` on a real local Ray cluster (2 CPUs, started once for the module).

The Ray path must give what the local path gives: the same point ids, payloads and report, vectors
equal to 1e-5; re-runs incremental; hostile files reported; an encoder actor killed mid-run changes
nothing in the result.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import ray  # make setup installs ray[data] (requirements.lock): never skipped

from ingest.ray_ingest import ingest_on_ray
from retrieval import load_settings
from retrieval.cli import main
from retrieval.index import Index
from retrieval.store import CollectionMeta
from tests.conftest import write_config
from tests.hostile import NON_UTF8_NAME, write_hostile_files, write_photo


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    """One small local cluster for every test here: Ray start-up costs seconds."""
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=150 * 1024 * 1024,
             logging_level="warning")
    yield
    ray.shutdown()


def _library(root: Path, photos: int = 12) -> set[str]:
    """Photos in two folders, a byte-identical copy, a non-UTF-8 name and every hostile case; the names
    of the files that must fail."""
    for folder in ("p0", "p1"):
        (root / folder).mkdir(parents=True)
    for i in range(photos):
        write_photo(root / f"p{i // 6}" / f"{i:02d}.jpg", seed=i)
    shutil.copy(root / "p0" / "00.jpg", root / "p1" / "copy-of-00.jpg")
    write_photo(root / os.fsdecode(NON_UTF8_NAME), seed=99)
    cases = write_hostile_files(root / "hostile")
    return {str(root / "hostile" / name) for name, outcome in cases.items() if outcome == "failed"}


def _fp32_config(path: Path, model: Path, store: Path) -> Path:
    """A test config whose encoder runs in fp32: the CPU default, dynamic int8, quantizes activations per
    batch, so a vector would depend on which other images share its batch (Ray batches differently)."""
    config = write_config(path, model, store)
    config.write_text(config.read_text().replace("[model]\n", '[model]\nprecision = "fp32"\n', 1))
    return config


def _contents(config: Path) -> dict[str, tuple[np.ndarray, dict[str, Any]]]:
    with Index.open(load_settings(config)) as index:
        return index.store.points([pid for pid, _ in index.store.payloads(["path"])])


def _ingest(config: Path, root: Path, *extra: str) -> dict[str, Any]:
    """The real CLI, in-process; its --json summary with failures in path order."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["ingest", str(root), *extra, "--json", "--config", str(config)])
    assert code == 0, out.getvalue()
    summary = json.loads(out.getvalue())
    return {**summary, "failed": sorted(summary["failed"], key=lambda f: f["path"])}


def _same(local: dict[str, Any], on_ray: dict[str, Any]) -> None:
    assert local.keys() == on_ray.keys()
    for pid, (vector, payload) in local.items():
        assert on_ray[pid][1] == payload, payload["path"]
        np.testing.assert_allclose(on_ray[pid][0], vector, atol=1e-5)


def test_ray_ingest_equals_local_and_reruns_incrementally(cluster, tmp_path, tiny_model_dir):
    root = tmp_path / "lib"
    must_fail = _library(root)
    local = _fp32_config(tmp_path / "local.toml", tiny_model_dir, tmp_path / "store-local")
    on_ray = _fp32_config(tmp_path / "ray.toml", tiny_model_dir, tmp_path / "store-ray")

    first = _ingest(local, root)
    assert _ingest(on_ray, root, "--ray", "local") == first
    assert {f["path"] for f in first["failed"]} == must_fail  # hostile files: reported, not fatal
    assert first["indexed"] > 0 and first["duplicates"] >= 1
    stored = _contents(local)
    _same(stored, _contents(on_ray))

    again = _ingest(on_ray, root, "--ray")  # no address: [ray] address, else a local cluster
    assert (again["indexed"], again["duplicates"], again["unchanged"]) == (0, 0, len(stored))

    shutil.move(root / "p0" / "01.jpg", root / "p1" / "moved.jpg")  # a move reuses the vector
    shutil.copy(root / "p1" / "07.jpg", root / "p0" / "copy-of-07.jpg")  # so does a later copy
    (root / "p0" / "02.jpg").unlink()
    write_photo(root / "p1" / "new.jpg", seed=500)
    changed = _ingest(local, root)
    assert _ingest(on_ray, root, "--ray", "local") == changed
    assert (changed["indexed"], changed["moved"], changed["duplicates"], changed["deleted"]) == (1, 1, 1, 2)
    _same(_contents(local), _contents(on_ray))


def _encoder_actors() -> list[str]:
    """Ids of the live encoder actors of the running dataset (Ray names their class after the stage)."""
    from ray._private import state

    return [aid for aid, info in state.actors().items()
            if "EncodeBatch" in info["ActorClassName"] and info["State"] == "ALIVE"]


def _photos(root: Path, count: int) -> None:
    root.mkdir(parents=True)
    for i in range(count):
        write_photo(root / f"{i:03d}.jpg", seed=1000 + i, size=(64, 48))


def _settings(tmp_path: Path, model: Path, name: str):
    config = write_config(tmp_path / f"{name}.toml", model, tmp_path / f"store-{name}")
    return load_settings(config).with_overrides(model={"batch_size": 4}, ray={"decode_batch": 2})


def test_killed_encoder_actor_is_restarted_and_every_file_stored_once(cluster, tmp_path, tiny_model_dir):
    root = tmp_path / "lib"
    _photos(root, 40)
    killed: list[str] = []
    after_kill: list[int] = []

    def kill_first_encoder(stage: str, done: int, total: int) -> None:
        if stage != "read":
            return
        if killed:
            after_kill.append(done)
            return
        actors = _encoder_actors()
        assert actors, "no live encoder actor while batches are still arriving"
        from ray._raylet import ActorID

        worker = ray._private.worker.global_worker
        ray.kill(worker.core_worker.get_actor_handle(ActorID.from_hex(actors[0])), no_restart=False)
        killed.append(actors[0])

    settings = _settings(tmp_path, tiny_model_dir, "kill")
    with Index.open(settings, create=True) as index:
        encoder = index.ingest_encoder
        ident = encoder.identity
        index.store.create(CollectionMeta(ident.name, ident.pretrained, ident.dim, weights=ident.weights))
        report = ingest_on_ray([str(root)], index.store, encoder, settings, address="local",
                               progress=kill_first_encoder)
        stored = [p["path"] for _, p in index.store.payloads(["path"])]
    assert killed and after_kill  # the kill came while batches were still to come
    assert (report.indexed, report.duplicates, report.failed) == (40, 0, [])
    assert sorted(stored) == sorted(str(f) for f in root.iterdir())  # each file once


def test_rerun_after_a_crash_embeds_nothing_already_stored(cluster, tmp_path, tiny_model_dir):
    root = tmp_path / "lib"
    _photos(root, 24)
    settings = _settings(tmp_path, tiny_model_dir, "crash")
    seen: list[int] = []

    def crash_after_two_batches(stage: str, done: int, total: int) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise KeyboardInterrupt  # what Ctrl-C does in the driver

    with Index.open(settings, create=True) as index:
        encoder = index.ingest_encoder
        ident = encoder.identity
        index.store.create(CollectionMeta(ident.name, ident.pretrained, ident.dim, weights=ident.weights))
        with pytest.raises(KeyboardInterrupt):
            ingest_on_ray([str(root)], index.store, encoder, settings, address="local",
                          progress=crash_after_two_batches)
        before = index.store.count()
        report = index.ingest([root], ray="local")
        assert index.store.count() == 24
    assert before == seen[-1] and 0 < before < 24
    assert (report.indexed, report.unchanged, report.failed) == (24 - before, before, [])


@pytest.mark.parametrize("args", [["--ray", "not an address"], ["--ray", "/some/folder"]])
def test_bad_ray_address_is_one_line_error(clipdex, tmp_path, args):
    _photos(tmp_path / "lib", 1)
    result = clipdex("ingest", tmp_path / "lib", *args)
    assert result.code == 1 and result.err.startswith("clipdex: error: --ray:") and result.err.count("\n") == 1
    assert "folders go before --ray" in result.err


def test_per_file_time_budget_holds_in_ray_tasks(cluster, tmp_path, tiny_model_dir):
    """Ray runs the decode tasks on a worker's main thread, where the SIGALRM budget works."""
    from PIL import Image

    root = tmp_path / "lib"
    root.mkdir()
    ramp = np.linspace(0, 255, 8000, dtype=np.float32).astype(np.uint8)
    Image.fromarray(np.broadcast_to(ramp, (6000, 8000))).convert("RGB").save(root / "huge.png", compress_level=1)
    settings = _settings(tmp_path, tiny_model_dir, "budget").with_overrides(ingest={"file_timeout_s": 0.2})
    with Index.open(settings, create=True) as index:
        report = index.ingest([root], ray="local")
    # 48 MP of PNG take well over 0.2 s to inflate: stopped by the budget, reported, the run goes on
    assert report.failed == [{"path": str(root / "huge.png"), "error": "decode took longer than 0.2 s"}]
    assert report.indexed == 0
