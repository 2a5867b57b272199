"""Every user-facing mistake: one line on stderr, a non-zero exit, nothing half-written."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.images import pattern


def _one_line_error(result) -> None:
    assert result.code != 0
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "error" in lines[0] and "Traceback" not in result.err


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    pattern(1).save(tmp_path / "imgs" / "x.png")
    return tmp_path / "imgs"


def test_missing_folder(clipdex, tmp_path):
    _one_line_error(clipdex("ingest", tmp_path / "does-not-exist"))


def test_empty_folder(clipdex, tmp_path):
    (tmp_path / "empty").mkdir()
    result = clipdex("ingest", tmp_path / "empty")
    _one_line_error(result)
    assert "no image files" in result.err


def test_unusable_store_path(clipdex, tmp_path, tiny_model_dir, folder):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    config = write_config(tmp_path / "bad-store.toml", tiny_model_dir, blocker / "store")
    result = clipdex("ingest", folder, "--config", config, with_config=False)
    _one_line_error(result)
    assert blocker.read_text() == "not a folder"


def test_unknown_config_key(clipdex, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[model]\nnmae = 'ViT-B-32'\n")
    result = clipdex("status", "--config", bad, with_config=False)
    _one_line_error(result)
    assert "model.nmae" in result.err


@pytest.mark.parametrize("content, needle", [("[model\n", "invalid TOML"), ("[store]\nhnsw_ef = 'x'\n", "hnsw_ef")])
def test_malformed_config(clipdex, tmp_path, content, needle):
    bad = tmp_path / "bad.toml"
    bad.write_text(content)
    result = clipdex("status", "--config", bad, with_config=False)
    _one_line_error(result)
    assert needle in result.err


def test_missing_config_file(clipdex, tmp_path):
    _one_line_error(clipdex("status", "--config", tmp_path / "nope.toml", with_config=False))


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_bad_limit(clipdex, folder, limit):
    clipdex("ingest", folder)
    _one_line_error(clipdex("search", "a shoe", "--limit", limit))


def test_search_needs_a_query(clipdex, folder):
    clipdex("ingest", folder)
    _one_line_error(clipdex("search"))
    _one_line_error(clipdex("search", "   "))


def test_search_before_any_ingest(clipdex):
    result = clipdex("search", "a shoe")
    _one_line_error(result)
    assert "ingest" in result.err


def test_query_image_missing_or_broken(clipdex, folder, tmp_path):
    clipdex("ingest", folder)
    _one_line_error(clipdex("search", "--image", tmp_path / "nope.png"))
    (tmp_path / "broken.png").write_text("<html></html>")
    _one_line_error(clipdex("search", "--image", tmp_path / "broken.png"))


def test_bad_dates(clipdex, folder):
    clipdex("ingest", folder)
    _one_line_error(clipdex("search", "x", "--after", "last tuesday"))


def test_hugging_face_cache_is_the_test_runs_own_empty_folder():
    import os
    import tempfile

    import huggingface_hub.constants as hf

    home = os.environ["HF_HOME"]
    assert Path(home).name.startswith("clipdex-test-hf-") and Path(home).parent == Path(tempfile.gettempdir())
    assert home == hf.HF_HOME and hf.HF_HUB_CACHE.startswith(home)
    assert not any(Path(home).rglob("*.safetensors")) and not any(Path(home).rglob("*.bin"))


def test_pretrained_tag_offline_fails_fast_and_writes_nothing(clipdex, tmp_path, folder, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "hub.toml"
    config.write_text(f'[model]\nname = "ViT-B-32"\npretrained = "laion2b_s34b_b79k"\n'
                      f'[store]\npath = "{tmp_path / "hub-store"}"\n')
    result = clipdex("ingest", folder, "--config", config, with_config=False)
    _one_line_error(result)
    assert "local checkpoint" in result.err
    assert not any((tmp_path / "hub-store").rglob("clipdex.json"))


def test_unknown_architecture(clipdex, tmp_path, folder):
    config = tmp_path / "arch.toml"
    config.write_text(f'[model]\nname = "ViT-Q-99"\npretrained = ""\n[store]\npath = "{tmp_path / "s"}"\n')
    result = clipdex("ingest", folder, "--config", config, with_config=False)
    _one_line_error(result)
    assert "ViT-Q-99" in result.err
