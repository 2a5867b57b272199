"""Settings files: paths relative to the file, environment overrides, precise errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from retrieval.errors import ClipdexError
from retrieval.settings import load_settings


def test_paths_in_a_config_are_relative_to_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "c.toml"
    config.write_text('[model]\nname = "local-dir:../models/m"\npretrained = ""\n'
                      '[store]\npath = "stores/here"\n'
                      '[train]\ndata = "../data"\noutput = "out"\narch = "ViT-B-32"\npretrained = "w/ckpt.pt"\n')
    monkeypatch.chdir(tmp_path)  # elsewhere than the config's folder
    settings = load_settings(config)
    assert settings.model.name == f"local-dir:{tmp_path / 'models' / 'm'}"
    assert settings.store_path == tmp_path / "cfg" / "stores" / "here"
    assert settings.train.data == str(tmp_path / "data")
    assert settings.train.output == str(tmp_path / "cfg" / "out")
    assert settings.train.pretrained == str(tmp_path / "cfg" / "w" / "ckpt.pt")
    assert settings.train.arch == "ViT-B-32"  # an architecture name is not a path


def test_pretrained_tags_are_left_alone(tmp_path: Path):
    config = tmp_path / "c.toml"
    config.write_text('[model]\nname = "ViT-B-32"\npretrained = "laion2b_s34b_b79k"\n')
    assert load_settings(config).model.pretrained == "laion2b_s34b_b79k"


def test_environment_and_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    config = tmp_path / "c.toml"
    config.write_text(f'[store]\npath = "{tmp_path / "from-file"}"\ncollection = "a"\n')
    monkeypatch.setenv("CLIPDEX_STORE", str(tmp_path / "from-env"))
    settings = load_settings(config)
    assert settings.store_path == tmp_path / "from-env"
    assert settings.with_overrides(store={"collection": "b", "path": None}).store.collection == "b"


@pytest.mark.parametrize("text, message", [
    ("[search]\nlimit = 0\n", "search.limit"),
    ("[ingest]\nworkers = 'many'\n", "ingest.workers"),
    ("[nonsense]\n", "unknown setting 'nonsense'"),
    ("config_path = 'x'\n", "unknown setting 'config_path'"),
])
def test_bad_values_name_the_setting(tmp_path: Path, text: str, message: str):
    config = tmp_path / "c.toml"
    config.write_text(text)
    with pytest.raises(ClipdexError, match=message):
        load_settings(config)
