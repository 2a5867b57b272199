"""Issue 23's smaller frictions, each with the real CLI (in this process or as a subprocess) and a real store."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from retrieval import Index, load_settings
from tests.conftest import Result, write_config
from tests.images import pattern, write_library
from tests.test_cli_server import ROOT, cli


@pytest.fixture
def library(tmp_path: Path, clipdex: Callable[..., Result]) -> Path:
    lib = tmp_path / "lib"
    write_library(lib)
    assert clipdex("ingest", lib).code == 0
    return lib


def test_folder_matches_whole_folder_names_and_says_so(library: Path, clipdex: Callable[..., Result]):
    below = clipdex("search", "a photo", "--folder", library / "a", "--json")
    assert below.code == 0 and {Path(r["path"]).parent.name for r in below.json()} == {"a", "deep"}
    partial = clipdex("search", "a photo", "--folder", library / "a" / "de", "--json")  # not a prefix of "deep"
    assert partial.code == 0 and partial.json() == []
    assert f"no such folder: {library / 'a' / 'de'}" in partial.err and str(library / "a" / "deep") in partial.err
    assert partial.err.count("\n") == 1


def test_camera_matches_case_aside_or_lists_the_cameras(library: Path, clipdex: Callable[..., Result]):
    exact = clipdex("search", "a photo", "--camera", "iPhone 14", "--json")
    folded = clipdex("search", "a photo", "--camera", "iphone 14", "--json")
    assert folded.code == 0 and folded.json() == exact.json() and len(exact.json()) == 2
    make = clipdex("search", "a photo", "--camera", "CANON", "--json")
    assert {Path(r["path"]).name for r in make.json()} == {"one.png", "two.jpg"}
    none = clipdex("search", "a photo", "--camera", "nikon")
    assert none.code == 1 and "'NIKON D750'" in none.err and "'NIKON CORPORATION'" in none.err
    assert none.err.count("\n") == 1


def test_the_python_api_searches_with_a_pil_image(library: Path, config: Path):
    with Index.open(load_settings(config)) as index:
        by_path = index.search(image=str(library / "a" / "one.png"), limit=3)
        with Image.open(library / "a" / "one.png") as im:
            by_image = index.search(image=im, limit=3)
        assert [h.payload["path"] for h in by_image] == [h.payload["path"] for h in by_path]
        assert by_image[0].score == pytest.approx(by_path[0].score, abs=1e-3)


def test_ingest_of_a_missing_folder_is_quick_and_leaves_nothing(tmp_path: Path, tiny_model_dir: Path):
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    code, _, err, loaded = cli("ingest", tmp_path / "nothing", "--config", config)
    assert code == 1 and err == f"clipdex: error: no such file or folder: {tmp_path / 'nothing'}\n"
    assert "torch" not in loaded  # said before any model loads
    assert not (tmp_path / "store").exists()  # and no empty store is left behind


def test_a_re_ingest_with_nothing_new_loads_no_model(tmp_path: Path, tiny_model_dir: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(6):
        pattern(i).save(lib / f"{i}.png")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    code, _, err, loaded = cli("ingest", lib, "--config", config)
    assert code == 0 and "torch" in loaded, err
    code, out, err, loaded = cli("ingest", lib, "--config", config)
    assert code == 0 and out.startswith("indexed 0, unchanged 6, moved 0"), (out, err)
    assert "torch" not in loaded


def test_a_first_run_without_the_hub_points_at_the_demo_and_leaves_nothing(tmp_path: Path):
    lib = tmp_path / "lib"
    lib.mkdir()
    pattern(0).save(lib / "0.png")
    config = tmp_path / "c.toml"
    config.write_text(f'[model]\nname = "hf-hub:clipdex-test/not-there"\npretrained = ""\n'
                      f'[store]\npath = "{tmp_path / "store"}"\n')
    code, _, err, _ = cli("ingest", lib, "--config", config, env=os.environ | {"HF_HUB_OFFLINE": "1"})
    assert code == 1 and err.count("\n") == 1, err
    assert "--config configs/demo.toml" in err and "local-dir:PATH" in err and "open_clip_config.json" in err
    assert not (tmp_path / "store").exists()  # no empty images/clipdex.lock


def test_serve_json_prints_where_it_listens(tmp_path: Path, tiny_model_dir: Path):
    from tests.test_server import _free_port

    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port), "--config",
                               str(config), "--json", "--log-level", "warning"], cwd=ROOT, text=True,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.DEVNULL)
    try:
        assert server.stdout is not None
        line = json.loads(server.stdout.readline())
        assert line["url"] == f"http://127.0.0.1:{port}/" and line["pid"] == server.pid
        assert line["collection"] == "test" and line["points"] == 0 and line["watch"] == []
        assert httpx.get(f"{line['url']}api/status", timeout=30).json()["collection"] == "test"
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
