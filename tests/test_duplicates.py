"""``clipdex duplicates`` end to end: real photos the test alters, the tiny real model, the real store.

The tiny model's embeddings are nearly random, so candidates come from a generous cosine threshold
and the pixel verification does the real work (which is the point: an embedding alone cannot).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ingest.decode import content_hash
from retrieval.cli import main
from tests.conftest import Result, write_config
from tests.photos import ALTERATIONS, SMALL, write_family, write_moment_apart

GENEROUS = "0.2"


def run(capfd: pytest.CaptureFixture[str], config: Path, *args: str) -> Result:
    capfd.readouterr()
    code = main([*map(str, args), "--config", str(config)])
    out = capfd.readouterr()
    return Result(code, out.out, out.err)


def make_library(root: Path, families: int = 3) -> dict[str, object]:
    """Families (an original and its five altered copies), two pairs of shots a moment apart (an object
    moved 2 % and 4 %), a byte-identical copy and a lone photo."""
    lib = root / "lib"
    fams = {}
    for seed in range(families):
        original, copies = write_family(lib / f"trip{seed}", seed, size=SMALL)
        fams[str(original)] = sorted(map(str, copies))
    shots = [tuple(map(str, write_moment_apart(lib / "burst", 50 + i, shift, size=SMALL)))
             for i, shift in enumerate((0.02, 0.04))]
    write_moment_apart(lib / "lone", 70, size=SMALL)[1].unlink()
    copy = lib / "backup" / "photo0.jpg"
    copy.parent.mkdir()
    shutil.copy2(lib / "trip0" / "photo0.jpg", copy)
    return {"lib": lib, "families": fams, "shots": shots, "identical": str(copy)}


@pytest.fixture
def library(tmp_path: Path, tiny_model_dir: Path, capfd: pytest.CaptureFixture[str]) -> dict[str, object]:
    made = make_library(tmp_path, families=2)
    made["config"] = write_config(tmp_path / "clipdex.toml", tiny_model_dir, tmp_path / "store")
    assert run(capfd, made["config"], "ingest", made["lib"]).code == 0
    return made


def files_of(lib: Path) -> dict[str, str]:
    return {str(p.relative_to(lib)): content_hash(str(p)) for p in sorted(lib.rglob("*")) if p.is_file()}


def test_families_grouped_and_shots_never(library, capfd):
    result = run(capfd, library["config"], "duplicates", "--json", "--threshold", GENEROUS)
    assert result.code == 0, result.err
    doc = result.json()
    assert set(doc) >= {"groups", "checked"}
    assert doc["checked"] == len(files_of(library["lib"]))
    twin = {library["identical"]: str(library["lib"] / "trip0" / "photo0.jpg")}  # either copy may be kept
    near = {twin.get(g["keep"], g["keep"]): sorted(g["duplicates"]) for g in doc["groups"] if g["reason"] == "near"}
    assert near == library["families"]  # each family whole, with its original kept, and nothing else grouped
    for group in doc["groups"]:
        assert 0.0 < group["similarity"] <= 1.0 and group["keep_reason"]
        assert set(group) >= {"keep", "duplicates", "similarity", "reason"}
    grouped = {p for g in doc["groups"] for p in [g["keep"], *g["duplicates"]]}
    for first, second in library["shots"]:
        assert first not in grouped and second not in grouped
    identical = [g for g in doc["groups"] if g["reason"] == "identical"]
    assert len(identical) == 1 and identical[0]["similarity"] == 1.0
    pair = sorted([identical[0]["keep"], *identical[0]["duplicates"]])
    assert pair == sorted([library["identical"], str(library["lib"] / "trip0" / "photo0.jpg")])
    table = run(capfd, library["config"], "duplicates", "--threshold", GENEROUS)
    assert table.code == 0 and "keep" in table.out and "highest resolution" not in table.err
    for g in doc["groups"]:
        assert f"keep  {g['keep']}" in table.out


def test_move_then_undo_restores_files_and_points(library, capfd, tmp_path):
    lib, config = library["lib"], library["config"]
    before = files_of(lib)
    points = run(capfd, config, "status", "--json").json()["points"]
    aside = tmp_path / "aside"
    moved = run(capfd, config, "duplicates", "--json", "--threshold", GENEROUS, "--move-to", aside)
    assert moved.code == 0, moved.err
    doc = moved.json()
    manifest = json.loads(Path(doc["manifest"]).read_text())
    assert manifest["state"] == "done"
    pair = {library["identical"], str(lib / "trip0" / "photo0.jpg")}
    sources = {m["from"] for m in manifest["moves"]}
    assert len(sources & pair) == 1  # one of the byte-identical copies stays
    expected = {p for dups in library["families"].values() for p in dups} | (sources & pair)
    assert sources == expected
    for m in manifest["moves"]:  # relative paths kept below DIR, sizes and hashes recorded
        assert m["to"] == str(aside / Path(m["from"]).relative_to(lib))
        assert content_hash(m["to"]) == m["hash"] and Path(m["to"]).stat().st_size == m["size"]
        assert not Path(m["from"]).exists()
    for keep in library["families"]:  # kept: the original, or its byte-identical twin
        assert Path(keep).exists() or Path(library["identical"]).exists()
    assert run(capfd, config, "status", "--json").json()["points"] == points - len(expected)
    again = run(capfd, config, "duplicates", "--json", "--threshold", GENEROUS).json()
    assert again["groups"] == [] and again["checked"] == points - len(expected)
    undone = run(capfd, config, "duplicates", "--undo", doc["manifest"], "--json")
    assert undone.code == 0, undone.err
    assert len(undone.json()["restored"]) == len(expected)
    assert files_of(lib) == before  # every file back, byte for byte
    assert run(capfd, config, "status", "--json").json()["points"] == points
    twice = run(capfd, config, "duplicates", "--undo", doc["manifest"], "--json")
    assert twice.code == 0 and twice.json()["restored"] == [] and files_of(lib) == before


def test_undo_refuses_to_overwrite(library, capfd, tmp_path):
    lib, config = library["lib"], library["config"]
    aside = tmp_path / "aside"
    doc = run(capfd, config, "duplicates", "--json", "--threshold", GENEROUS, "--move-to", aside).json()
    first = json.loads(Path(doc["manifest"]).read_text())["moves"][0]
    Path(first["from"]).write_bytes(b"a new file the user put there")
    moved_now = files_of(aside)
    result = run(capfd, config, "duplicates", "--undo", doc["manifest"])
    assert result.code == 1 and result.err.startswith("clipdex: error: nothing moved back: something is in the way")
    assert len(result.err.strip().splitlines()) == 1
    assert files_of(aside) == moved_now and Path(first["from"]).read_bytes() == b"a new file the user put there"
    assert lib.exists()


def test_dismissed_group_stays_dismissed(library, capfd):
    config = library["config"]
    keep, dups = next(iter(library["families"].items()))
    result = run(capfd, config, "duplicates", "--not-duplicates", keep, *dups, "--json")
    assert result.code == 0, result.err
    for _ in range(2):  # a new process each time reads the decision from the collection
        doc = run(capfd, config, "duplicates", "--json", "--threshold", GENEROUS).json()
        keeps = {g["keep"] for g in doc["groups"] if g["reason"] == "near"}
        assert keep not in keeps and keeps == set(library["families"]) - {keep}
        assert not any(p in dups for g in doc["groups"] for p in g["duplicates"])
    decisions = Path(json.loads(run(capfd, config, "status", "--json").out)["store"]) / "duplicates.json"
    stored = json.loads(decisions.read_text())
    assert stored["not_duplicates"] == [] and len(stored["groups"]) == 1  # 6 files: one group, not 15 pairs
    assert sorted(stored["groups"][0]) == sorted({content_hash(p) for p in [keep, *dups]})
    forgot = run(capfd, config, "duplicates", "--forget-decision", dups[0])
    assert forgot.code == 0 and "forgot 1 decision" in forgot.out, forgot.err
    doc = run(capfd, config, "duplicates", "--json", "--threshold", GENEROUS).json()
    assert any(dups[0] in g["duplicates"] for g in doc["groups"])  # the dismissed group is back


def test_folder_limits_the_search(library, capfd):
    one = library["lib"] / "trip1"
    doc = run(capfd, library["config"], "duplicates", "--json", "--threshold", GENEROUS, "--folder", one).json()
    assert doc["checked"] == 1 + len(ALTERATIONS)
    assert [g["keep"] for g in doc["groups"]] == [str(one / "photo1.jpg")]


def test_bad_input_one_line_each_and_nothing_lost(library, capfd, tmp_path, tiny_model_dir):
    lib, config = library["lib"], library["config"]
    before = files_of(lib)
    empty = write_config(tmp_path / "empty.toml", tiny_model_dir, tmp_path / "store", collection="nothing")
    cases = [
        (config, ["--move-to", lib / "trip0" / "dups"], "inside (or contains) the ingested folder"),
        (config, ["--move-to", lib.parent], "inside (or contains) the ingested folder"),
        (config, ["--undo", tmp_path / "no-such-manifest.json"], "manifest not found"),
        (config, ["--threshold", "1.5"], "Invalid value for '--threshold'"),
        (config, ["--threshold", "0"], "Invalid value for '--threshold'"),
        (empty, [], "holds no vectors"),
        (config, ["--not-duplicates", tmp_path / "nope.jpg", lib / "trip0" / "photo0.jpg"], "not an indexed file"),
        (config, ["--not-duplicates", lib / "trip0" / "photo0.jpg"], "two or more"),
        (config, ["--folder", tmp_path / "missing"], "no such folder"),
        (config, ["--move-to", tmp_path / "x", "--undo", tmp_path / "m.json"], "do not go together"),
    ]
    for cfg, args, message in cases:
        result = run(capfd, cfg, "duplicates", *args)
        assert result.code != 0, args
        lines = result.err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0] and message in lines[0], (args, result.err)
        assert result.out == ""
    assert files_of(lib) == before
    assert not (lib / "trip0" / "dups").exists()
