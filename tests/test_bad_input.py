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


# -- config files: regular files only, size-capped, UTF-8 ----------------------------------------------

def _load_settings_within(path: Path, seconds: float = 20.0):
    """load_settings(path) in a thread: a config that blocks (a FIFO) fails the test instead of hanging it."""
    import threading

    from retrieval.errors import ClipdexError
    from retrieval.settings import load_settings

    outcome: list[object] = []

    def target() -> None:
        try:
            outcome.append(load_settings(path))
        except ClipdexError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():  # unblock the reader so the thread can end, then fail
        import os

        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(5)
        pytest.fail(f"reading {path} blocked")
    return outcome[0]


def test_config_fifo_never_blocks(tmp_path):
    import os

    fifo = tmp_path / "config.toml"
    os.mkfifo(fifo)
    result = _load_settings_within(fifo)
    assert isinstance(result, Exception) and "not a regular file" in str(result)


@pytest.mark.parametrize("name", ["/dev/zero", "big"])
def test_config_that_is_endless_or_huge_is_refused_without_reading_it_all(clipdex, tmp_path, name):
    path = Path(name) if name.startswith("/") else tmp_path / "big.toml"
    if name == "big":
        path.write_text("# padding\n" * 200_000)  # 2 MB of comments: valid TOML, over the 1 MiB cap
    result = clipdex("status", "--config", path, with_config=False)
    _one_line_error(result)
    assert ("not a regular file" if name.startswith("/") else "larger than") in result.err


@pytest.mark.parametrize("content", [b"\xff\xfe[\x00m\x00o\x00", b"[model]\nlabel = '\xe9t\xe9'\n",
                                     b"\x89PNG\r\n\x1a\n\x00"])
def test_config_that_is_not_utf8_text_is_one_line(clipdex, tmp_path, content):
    bad = tmp_path / "bad.toml"
    bad.write_bytes(content)
    result = clipdex("status", "--config", bad, with_config=False)
    _one_line_error(result)
    assert "internal error" not in result.err and ("UTF-8" in result.err or "invalid TOML" in result.err)


@pytest.mark.parametrize("kind", ["fifo", "/dev/zero"])
def test_query_image_that_is_not_a_regular_file(clipdex, folder, tmp_path, kind):
    import os

    clipdex("ingest", folder)
    path = Path(kind) if kind.startswith("/") else tmp_path / "pipe.png"
    if kind == "fifo":
        os.mkfifo(path)
    result = clipdex("search", "--image", path)
    _one_line_error(result)
    assert "not a regular file" in result.err and "not found" not in result.err


def test_relative_path_arguments_are_resolved_once(clipdex, monkeypatch):
    """The README's `clipdex eval … --data samples/fashion-mnist` (relative to the working directory)."""
    repo = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(repo)
    result = clipdex("eval", "--model", "models/fmnist-tiny", "--dataset", "labelled-folder",
                     "--data", "samples/fashion-mnist", "--limit", "30", "--json", with_config=False)
    assert result.code == 0, result.err
    assert 0.0 <= result.json()["zero_shot_accuracy"] <= 1.0
