"""Hostile inputs on the store and CLI side: collection names, deep configs, unusable paths (issue 19)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import TINY_CFG, write_config
from tests.hostile import photo, write_photo


def _one_line_error(result, needle: str = "") -> str:
    assert result.code != 0, result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1, result.err
    assert "error" in lines[0] and "internal error" not in lines[0] and "Traceback" not in result.err, lines[0]
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "imgs").mkdir()
    write_photo(tmp_path / "imgs" / "x.png", seed=1)
    return tmp_path / "imgs"


def _tree(top: Path) -> set[str]:
    return {str(p.relative_to(top)) for p in top.rglob("*")}


# -- 6: collection names never leave the store folder ---------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "../../evil2", "a/b", "/abs", ".hidden", "x" * 65, "sp ace", ""])
def test_unsafe_collection_flag_is_refused_and_writes_nothing(clipdex, tmp_path, folder, name):
    top = tmp_path / "x"
    (top / "store").mkdir(parents=True)
    before = _tree(tmp_path)
    result = clipdex("ingest", folder, "--store", top / "store", "--collection", name)
    _one_line_error(result, "collection")
    assert _tree(tmp_path) == before  # no clipdex.json, shard/ or lock anywhere


def test_unsafe_collection_in_config_is_refused(clipdex, tmp_path, tiny_model_dir, folder):
    config = write_config(tmp_path / "evil.toml", tiny_model_dir, tmp_path / "x" / "store", collection="../../evil2")
    before = _tree(tmp_path)
    _one_line_error(clipdex("ingest", folder, "--config", config, with_config=False), "store.collection")
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("name", ["images", "photos-2024", "a.b_c", "X" * 64])
def test_safe_collection_names_work(clipdex, tmp_path, folder, name):
    result = clipdex("ingest", folder, "--store", tmp_path / "s", "--collection", name, "--json")
    assert result.code == 0, result.err
    assert (tmp_path / "s" / name / "clipdex.json").is_file()


def test_distill_from_collection_is_checked(clipdex):
    _one_line_error(clipdex("distill", "--from-collection", "../../x"), "collection")


# -- 9: one line where an internal error was -------------------------------------------------------

@pytest.mark.parametrize("text", ["a = " + "[" * 10_000 + "]" * 10_000,
                                  "[store]\nx = " + "{a=" * 10_000 + "1" + "}" * 10_000,
                                  "[train]\nmodel_cfg = " + "{a=" * 40 + "1" + "}" * 40])
def test_deeply_nested_config(clipdex, tmp_path, text):
    bad = tmp_path / "deep.toml"
    bad.write_text(text)
    _one_line_error(clipdex("status", "--config", bad, with_config=False), "nested")


def test_collection_name_too_long(clipdex, folder):
    _one_line_error(clipdex("ingest", folder, "--collection", "c" * 300), "300 characters")


def test_store_path_that_cannot_be_resolved(clipdex, monkeypatch, tmp_path, tiny_model_dir, folder):
    if os.access("/proc/1/root/.", os.R_OK):
        loop = tmp_path / "loop"  # a symlink loop fails the same way where /proc/1/root is readable
        loop.symlink_to(loop)
        store = f"{loop}/store"
    else:
        store = "/proc/1/root/clipdex-store"
    monkeypatch.setenv("CLIPDEX_STORE", store)
    config = tmp_path / "nostore.toml"
    config.write_text(f'[model]\nname = "local-dir:{tiny_model_dir}"\npretrained = ""\n')
    _one_line_error(clipdex("status", "--config", config, with_config=False), "store")
    _one_line_error(clipdex("ingest", folder, "--config", config, with_config=False), "store")


@pytest.mark.parametrize("output", ["/proc/clipdex-model", "/sys/clipdex-model"])
def test_train_output_that_cannot_be_written_fails_before_training(clipdex, tmp_path, tiny_model_dir, folder,
                                                                   output):
    config = write_config(tmp_path / "train.toml", tiny_model_dir, tmp_path / "store")
    with config.open("a") as fh:
        fh.write(f"[train]\nmodel_cfg = {json.dumps(TINY_CFG)}\n".replace('": ', '" = ').replace('{"', '{ "'))
    result = clipdex("train", "--source", "images", "--data", folder, "-o", output, "--steps", "1",
                     "--batch-size", "2", "--quiet", "--config", config, with_config=False)
    _one_line_error(result, output)
    assert not (tmp_path / f".{Path(output).name}.checkpoints").exists()


# -- 8: a name that is not UTF-8 and its escape text are two files -------------------------------------

TRICKY_NAMES = [b"caf\xe9.jpg", b"caf\\xe9.jpg", b"caf\\\\xe9.jpg", b"a\\b.jpg", b"\xff\\x41.jpg",
                b"\xc3\xa9t\xc3\xa9.jpg", b"x\\\\.jpg", b"q\\x4g.jpg", b"plain.jpg"]


def test_path_keys_are_one_per_file_and_lead_back_to_its_bytes():
    from ingest.records import ancestors, key_bytes, path_key, point_id

    paths = [b"/lib/" + name for name in TRICKY_NAMES] + [b"/lib/caf\xe9/x.jpg", b"/lib/caf\\xe9/x.jpg"]
    keys = [path_key(os.fsdecode(p)) for p in paths]
    assert len(set(keys)) == len(keys) and len({point_id(k) for k in keys}) == len(keys)
    assert [key_bytes(k) for k in keys] == paths
    for key in keys:
        key.encode("utf-8")  # a payload is UTF-8 text
    for ordinary in ("/lib/plain.jpg", "/lib/été.jpg", "/lib/a\\b.jpg", "/lib/q\\x4g.jpg"):
        assert path_key(ordinary) == ordinary  # stored keys (and point ids) of existing stores stay
    assert path_key("/lib/caf\udce9.jpg") == "/lib/caf\\xe9.jpg"  # as before: such points keep their ids too
    folder_key = path_key(os.fsdecode(b"/lib/caf\xe9"))
    assert ancestors(keys[-2])[-1] == folder_key != ancestors(keys[-1])[-1]
    assert path_key("/x/\ud800.jpg")  # a lone surrogate (a client's JSON) has a key, no error


def test_non_utf8_name_and_its_escape_text_are_two_points_and_both_are_served(clipdex, tmp_path, config):
    import httpx

    from ingest.records import key_bytes
    from retrieval import load_settings
    from retrieval.index import Index
    from retrieval.server import create_app
    from tests.test_server import serving

    lib = tmp_path / "lib"
    lib.mkdir()
    for seed, name in enumerate(TRICKY_NAMES):  # by bytes: the names that are not UTF-8 have no str of their own
        fd = os.open(os.fsencode(lib) + b"/" + name, os.O_WRONLY | os.O_CREAT, 0o644)
        with os.fdopen(fd, "wb") as fh:
            photo(seed=seed).save(fh, "JPEG")
    first = clipdex("ingest", lib, "--json")
    assert first.code == 0, first.err
    assert first.json()["indexed"] == len(TRICKY_NAMES) and first.json()["failed"] == []
    again = clipdex("ingest", lib, "--json")
    assert again.json()["unchanged"] == len(TRICKY_NAMES) and again.json()["indexed"] == 0
    with Index.open(load_settings(config)) as index:
        keys = sorted(payload["path"] for _, payload in index.store.payloads(["path"]))
        assert len(keys) == len(TRICKY_NAMES)
        assert str(lib / "plain.jpg") in keys and str(lib / "a\\b.jpg") in keys
        with serving(create_app(index)) as url, httpx.Client(base_url=url, timeout=30) as http:
            for key in keys:
                response = http.get("/api/image", params={"path": key})
                assert response.status_code == 200, (key, response.text)
                with open(key_bytes(key), "rb") as fh:
                    assert response.content == fh.read()


# -- 11: text output never carries a file name's control characters ------------------------------------

CONTROL_NAMES = ["new\nline.jpg", "esc\x1b[2J\x1b]0;pwned\x07.jpg",
                 "rtl\u202egpj.exe.jpg", "c1\x9b31m.jpg", "tab\t.jpg"]


def test_printable_escapes_controls_and_keeps_the_rest():
    from retrieval.cli.common import json_text, printable

    assert printable("/photos/été 2024/ok.jpg") == "/photos/été 2024/ok.jpg"
    assert printable("a\nb\x1b[31m\u202ec\x9b\x7f") == "a\\nb\\x1b[31m\\u202ec\\x9b\\x7f"
    text = json_text({"path": "a\nb\x1b\u202e\x9b\u2028"})
    assert json.loads(text) == {"path": "a\nb\x1b\u202e\x9b\u2028"}
    assert text.isprintable() and text.isascii()


def test_text_output_escapes_control_characters_in_file_names(clipdex, tmp_path):
    lib = tmp_path / "lib"
    lib.mkdir()
    for seed, name in enumerate(CONTROL_NAMES):
        write_photo(lib / name, seed=seed)
    ingest = clipdex("ingest", lib)
    assert ingest.code == 0, ingest.err
    found = clipdex("search", "a photo", "--limit", "10")
    assert found.code == 0, found.err
    lines = found.out.splitlines()
    assert len(lines) == len(CONTROL_NAMES)  # a newline in a name does not split its row
    for line in lines:
        assert line.isprintable(), repr(line)
    shown = {line.split("  ", 1)[1] for line in lines}
    assert str(lib) + "/new\\nline.jpg" in shown and str(lib) + "/rtl\\u202egpj.exe.jpg" in shown
    exact = {row["path"] for row in clipdex("search", "a photo", "--limit", "10", "--json").json()}
    assert exact == {str(lib / name) for name in CONTROL_NAMES}  # JSON keeps the exact names
    status = clipdex("status")
    assert all(line.isprintable() for line in status.out.splitlines())
    (lib / "gone\x1b[1m").mkdir()
    missing = clipdex("ingest", lib / "gone\x1b[1m" / "nope\n")
    assert missing.code != 0 and len(missing.err.strip().splitlines()) == 1
    assert "\x1b" not in missing.err and "nope\\n" in missing.err
