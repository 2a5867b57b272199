"""Every hint carries the settings that were used (issue 23, item 3): real CLI processes."""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import write_config
from tests.images import pattern
from tests.test_cli_server import cli


def _library(folder: Path, count: int = 3) -> Path:
    folder.mkdir(parents=True)
    for i in range(count):
        pattern(i).save(folder / f"{i}.png")
    return folder


def test_a_missing_collection_names_the_ones_the_store_holds(tmp_path: Path, tiny_model_dir: Path):
    store = tmp_path / "my store"
    config = write_config(tmp_path / "c.toml", tiny_model_dir, store, collection="holiday")
    code, _, err, _ = cli("ingest", _library(tmp_path / "lib"), "--config", config)
    assert code == 0, err
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPDEX_")}
    code, _, err, _ = cli("search", "x", "--store", store, env=env)  # no --config: the default collection
    assert code == 1 and err.count("\n") == 1, err
    assert "collection 'images' is empty or missing" in err and "'holiday'" in err, err
    assert "--collection holiday" in err and f"--store '{store}'" in err, err
    code, _, err, _ = cli("search", "x", "--config", config, "--collection", "nothing")
    assert code == 1 and "'holiday'" in err and f"--config {config}" in err and "--collection nothing" in err, err


def test_a_hint_repeats_config_and_store(tmp_path: Path, tiny_model_dir: Path):
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    code, _, err, _ = cli("ingest", _library(tmp_path / "lib"), "--config", config)
    assert code == 0, err
    code, _, err, _ = cli("search", "--text-in-image", "exit", "--config", config, "--store", tmp_path / "store")
    assert code == 1, err
    assert f"`clipdex ingest DIR --ocr --config {config} --store {tmp_path / 'store'}`" in err, err
