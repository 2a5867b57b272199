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


# -- numbers: finite and bounded, in every section (issue 26, case 13) --------------------------------------------


def _numeric_fields() -> list[tuple[str, str, str]]:
    """(section, key, kind) of every number setting: kind is "float", "int" or "floats" (a list of floats)."""
    import typing

    from retrieval.settings import Settings

    found = []
    for section, info in Settings.model_fields.items():
        model = info.annotation
        if not isinstance(model, type) or not hasattr(model, "model_fields"):
            continue
        for key, field in model.model_fields.items():
            kinds = {a for a in typing.get_args(field.annotation) if a is not type(None)} or {field.annotation}
            if float in kinds:
                found.append((section, key, "float"))
            elif int in kinds and bool not in kinds:
                found.append((section, key, "int"))
            elif typing.get_origin(field.annotation) is list and float in {
                    typing.get_origin(a) and typing.get_args(a)[0] or a for a in typing.get_args(field.annotation)}:
                found.append((section, key, "floats"))
    return found


NUMERIC = _numeric_fields()


def test_the_walk_sees_the_number_settings_of_every_section():
    sections = {section for section, _, _ in NUMERIC}
    assert {"store", "ingest", "search", "ocr", "serve", "duplicates", "ray", "train", "distill"} <= sections
    assert ("ingest", "max_megapixels", "float") in NUMERIC and ("serve", "query_max_megapixels", "float") in NUMERIC
    assert ("train", "image_mean", "floats") in NUMERIC and ("ingest", "workers", "int") in NUMERIC


def _refused(tmp_path: Path, section: str, key: str, value: str) -> str:
    config = tmp_path / "c.toml"
    config.write_text(f"[{section}]\n{key} = {value}\n")
    with pytest.raises(ClipdexError) as caught:
        load_settings(config)
    message = str(caught.value)
    assert f"'{section}.{key}" in message and "\n" not in message, message
    return message


@pytest.mark.parametrize("section, key, kind", [n for n in NUMERIC if n[2] != "int"], ids=lambda v: str(v))
def test_every_float_setting_refuses_inf_and_nan(tmp_path: Path, section: str, key: str, kind: str):
    for value in ("inf", "-inf", "nan", "+inf"):
        message = _refused(tmp_path, section, key, f"[{value}, 0.5, 0.5]" if kind == "floats" else value)
        assert "finite" in message, message


@pytest.mark.parametrize("section, key, kind", NUMERIC, ids=lambda v: str(v))
def test_every_number_setting_has_an_upper_bound(tmp_path: Path, section: str, key: str, kind: str):
    """``1e308`` is finite and would switch a cap off (``max_megapixels``) or overflow a timer: every number
    setting declares a maximum, and the file's value above it is one line naming the key."""
    _refused(tmp_path, section, key, "[1e308, 0.5, 0.5]" if kind == "floats" else "1e308")
    if kind == "int":
        _refused(tmp_path, section, key, str(2**62))


def test_flags_and_overrides_are_held_to_the_same_limits(tmp_path: Path):
    settings = load_settings(None)
    for value in (float("inf"), float("nan"), 1e308):
        with pytest.raises(ClipdexError, match="'ingest.file_timeout_s'"):
            settings.with_overrides(ingest={"file_timeout_s": value})


def test_an_infinite_pixel_cap_is_refused_before_the_store_is_touched(tmp_path: Path, tiny_model_dir: Path):
    """The reported case: ``max_megapixels = inf`` indexed a 169 MP bomb; now the CLI refuses the config."""
    from tests.conftest import write_config
    from tests.images import write_library
    from tests.test_server import run_cli

    write_library(tmp_path / "lib")
    for extra in ("max_megapixels = inf", "max_megapixels = 1e308", "max_megapixels = nan", "file_timeout_s = inf",
                  "[serve]\nquery_max_megapixels = inf"):
        config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")  # [ingest] is its last table
        config.write_text(config.read_text() + extra + "\n")
        code, out, err = run_cli("ingest", tmp_path / "lib", "--config", config)
        assert code != 0 and out == "", (code, out, err)
        assert err.count("\n") == 1 and extra.split("\n")[-1].split(" ")[0] in err, err
        assert not (tmp_path / "store").exists()
