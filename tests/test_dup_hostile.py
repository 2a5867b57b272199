"""The duplicate mover under attack (issue 26, round 4): each case reproduced on a real store, real files and
a real server (uvicorn), and what must hold instead. Never mocked: the CLI, the store, the server, the disk.

The libraries here are made of byte copies (``identical`` groups need no pixel check, so each test stays
quick); the near-duplicate path shares every move, undo and check with them.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from ingest.decode import content_hash
from retrieval.index import Index
from retrieval.server import create_app
from retrieval.settings import load_settings
from tests.conftest import write_config
from tests.photos import SMALL, render
from tests.test_duplicates import run
from tests.test_server import assert_error, serving

KEY = "k3y"


def photos(folder: Path, seeds: range, copies: Path | None = None) -> list[tuple[Path, Path | None]]:
    """Distinct photos ``photo{seed}.jpg`` in ``folder``, each with a byte copy in ``copies`` if given."""
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for seed in seeds:
        original = folder / f"photo{seed}.jpg"
        render(seed, size=(SMALL[0] // 2, SMALL[1] // 2)).save(original, "JPEG", quality=90)
        copy = None
        if copies is not None:
            copies.mkdir(parents=True, exist_ok=True)
            copy = copies / original.name
            shutil.copyfile(original, copy)
        made.append((original, copy))
    return made


def setup(tmp: Path, tiny: Path, capfd: pytest.CaptureFixture[str], *roots: Path, move_to: Path | None = None) -> Path:
    config = write_config(tmp / "clipdex.toml", tiny, tmp / "store")
    with config.open("a") as fh:
        fh.write("[duplicates]\nthreshold = 0.2\n" + (f'move_to = "{move_to}"\n' if move_to else ""))
    for root in roots:
        result = run(capfd, config, "ingest", root)
        assert result.code == 0, result.err
    return config


def tree(folder: Path) -> dict[str, str]:
    """Every file below ``folder`` (links not followed) and its content hash: what the disk holds."""
    out = {}
    for dirpath, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(dirpath, name)
            if os.path.isfile(path) and not os.path.islink(path):
                out[os.path.relpath(path, folder)] = content_hash(path)
    return out


def one_line_error(result: Any, *needles: str) -> str:
    assert result.code != 0, result.out
    lines = result.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("clipdex: error:"), result.err
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


@contextmanager
def served(config: Path) -> Iterator[httpx.Client]:
    with Index.open(load_settings(config)) as index:
        app = create_app(index, api_key=KEY)
        with serving(app) as url, httpx.Client(base_url=url, timeout=120,
                                               headers={"Authorization": f"Bearer {KEY}"}) as http:
            yield http


def groups_of(http: httpx.Client) -> list[dict[str, Any]]:
    response = http.get("/api/duplicates", params={"limit": 100, "refresh": "true"})
    assert response.status_code == 200, response.text
    return response.json()["groups"]


# -- case 1: every move in a manifest nothing overwrites; resolves serialised --------------------------------

def test_quick_and_concurrent_resolves_each_keep_their_manifest(tmp_path, tiny_model_dir, capfd):
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    photos(lib / "a", range(6), lib / "b")
    before = tree(lib)
    config = setup(tmp_path, tiny_model_dir, capfd, lib, move_to=aside)
    with served(config) as http:
        found = groups_of(http)
        assert len(found) == 6
        bodies = [{"action": "move", "keep": g["keep"], "paths": g["duplicates"]} for g in found]
        answers = [http.post("/api/duplicates/resolve", json=b) for b in bodies[:3]]  # within one second
        assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
        threaded: list[httpx.Response] = []
        workers = [threading.Thread(target=lambda b=b: threaded.append(http.post("/api/duplicates/resolve", json=b)))
                   for b in bodies[3:]]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        assert sorted(a.status_code for a in threaded) == [200] * 3, [a.text for a in threaded]
        manifests = [a.json()["manifest"] for a in answers + threaded]
    assert len(set(manifests)) == 6  # one manifest per resolve, none overwritten
    listed = [json.loads(Path(m).read_text())["moves"] for m in manifests]
    assert all(len(rows) == 1 for rows in listed)
    assert {n for n in os.listdir(aside) if n.startswith("clipdex-moves-")} == set(map(os.path.basename, manifests))
    assert not [n for n in os.listdir(aside) if n.endswith(".tmp")]
    assert len(tree(lib)) == 6  # one copy of each photo stayed
    for manifest in manifests:
        result = run(capfd, config, "duplicates", "--undo", manifest)
        assert result.code == 0, result.err
    assert tree(lib) == before  # every file back: no move went unrecorded


# -- case 2: a folder ingested twice (directly and through a link) ------------------------------------------

def test_a_root_and_its_alias_never_lose_a_file(tmp_path, tiny_model_dir, capfd):
    lib = tmp_path / "lib"
    made = photos(lib, range(5))
    shutil.copyfile(made[0][0], lib / "twin.jpg")  # one real byte copy
    alias = tmp_path / "alias"
    alias.symlink_to(lib, target_is_directory=True)
    before = tree(lib)
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    points = run(capfd, config, "status", "--json").json()["points"]
    one_line_error(run(capfd, config, "ingest", alias), "reached through a link")  # a root is its real folder
    assert run(capfd, config, "status", "--json").json()["points"] == points
    # the same files under a second name all the same (hard links; or a store an older clipdex filled through
    # a link): a file is never a copy of itself, and its one other name is never moved with it
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    for file in sorted(lib.iterdir()):
        os.link(file, mirror / file.name)
    assert run(capfd, config, "ingest", mirror).code == 0
    doc = run(capfd, config, "duplicates", "--json").json()
    for group in doc["groups"]:
        files = [group["keep"], *group["duplicates"]]
        assert len({os.stat(f).st_ino for f in files}) == len(files), group
    assert len(doc["groups"]) == 1 and len(doc["groups"][0]["duplicates"]) == 1
    moved = run(capfd, config, "duplicates", "--move-to", tmp_path / "aside", "--json")
    assert moved.code == 0, moved.err
    assert len(moved.json()["moved"]) == 1
    after = tree(lib)
    assert len(after) == len(before) - 1 and set(after.values()) == set(before.values())  # every photo still there


# -- case 3: a folder on the path swapped for a link to outside ---------------------------------------------

def test_resolve_never_moves_a_file_from_outside_the_roots(tmp_path, tiny_model_dir, capfd):
    lib, outside, aside = tmp_path / "lib", tmp_path / "outside", tmp_path / "aside"
    photos(lib / "sub", range(2), lib / "keep")
    config = setup(tmp_path, tiny_model_dir, capfd, lib, move_to=aside)
    with served(config) as http:
        found = groups_of(http)
        group = found[0]  # kept: keep/photoN.jpg (first by path); its duplicate: sub/photoN.jpg
        victim = Path(group["duplicates"][0])
        folder = victim.parent
        outside.mkdir()
        shutil.copyfile(victim, outside / victim.name)  # same name, same bytes, outside every root
        os.rename(folder, tmp_path / "was-sub")
        folder.symlink_to(outside, target_is_directory=True)
        answer = http.post("/api/duplicates/resolve", json={"action": "move", "keep": group["keep"],
                                                            "paths": group["duplicates"]})
        assert_error(answer, 400, "nothing moved", "outside the ingested folders")
        assert http.get("/api/image", params={"path": str(victim)}).status_code == 404
    assert (outside / victim.name).exists() and not aside.exists()
    result = run(capfd, config, "duplicates", "--move-to", aside)  # the CLI: the same check
    one_line_error(result, "nothing moved")
    assert (outside / victim.name).exists() and not aside.exists()


# -- case 4: stale groups ------------------------------------------------------------------------------------

def test_stale_groups_move_nothing_wrong(tmp_path, tiny_model_dir, capfd):
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    made = photos(lib / "a", range(3), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib, move_to=aside)
    with served(config) as http:
        found = {g["keep"]: g for g in groups_of(http)}
        first, second, third = (found.get(str(o)) or found[str(c)] for o, c in made)
        render(99, size=(10, 10)).save(first["duplicates"][0], "JPEG")  # replaced by another picture
        os.unlink(second["keep"])  # the keeper deleted: its duplicate is now the only copy
        for group in (first, second):
            answer = http.post("/api/duplicates/resolve", json={"action": "move", "keep": group["keep"],
                                                                "paths": group["duplicates"]})
            assert_error(answer, 400, "nothing moved")
        assert Path(first["duplicates"][0]).exists() and Path(second["duplicates"][0]).exists()
        ok = http.post("/api/duplicates/resolve", json={"action": "move", "keep": third["keep"],
                                                        "paths": third["duplicates"]})
        assert ok.status_code == 200 and len(ok.json()["moved"]) == 1
    # the CLI, on a fresh search (the store still holds the old hashes): the same checks refuse both
    one_line_error(run(capfd, config, "duplicates", "--move-to", aside), "nothing moved")
    assert Path(second["duplicates"][0]).exists() and Path(first["duplicates"][0]).exists()


def test_a_selection_moves_through_the_same_checks(tmp_path, tiny_model_dir, capfd):
    """A user's own selection (the page's "move aside", no duplicate group): the same mover, manifest and undo;
    a selected file swapped for a link to outside, or changed since it was indexed, stays."""
    from retrieval import duplicates as dups

    lib, aside, outside = tmp_path / "lib", tmp_path / "aside", tmp_path / "outside"
    made = [o for o, _ in photos(lib / "a", range(3))]
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    outside.mkdir()
    shutil.copyfile(made[1], outside / "x.jpg")
    made[1].unlink()
    made[1].symlink_to(outside / "x.jpg")
    render(55, size=(12, 12)).save(made[2], "JPEG")
    with Index.open(load_settings(config)) as index:
        result = dups.move_files(index, dups.selection_moves(index, [str(p) for p in made]), str(aside))
    assert [m["from"] for m in result["moved"]] == [str(made[0])]
    assert {row["path"] for row in result["skipped"]} == {str(made[1]), str(made[2])}
    assert (outside / "x.jpg").exists() and made[2].exists() and not made[0].exists()
    assert run(capfd, config, "duplicates", "--undo", result["manifest"]).code == 0 and made[0].exists()


def test_cli_rechecks_each_group_at_move_time(tmp_path, tiny_model_dir, capfd):
    """The CLI's search and move are one run; a file changed between them is caught by the move's own hash."""
    from retrieval import duplicates as dups

    lib = tmp_path / "lib"
    made = photos(lib / "a", range(2), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    with Index.open(load_settings(config)) as index:
        found = dups.find_in(index, dups.options_of(index.settings))
        moves = dups.group_moves(found.groups)
        changed = Path(found.groups[0].duplicates[0].path)
        render(77, size=(12, 12)).save(changed, "JPEG")
        os.unlink(found.groups[1].keep.path)
        with pytest.raises(Exception, match="nothing moved"):
            dups.move_files(index, moves, str(tmp_path / "aside"))
    assert changed.exists() and len(tree(lib)) == 3 and not (tmp_path / "aside").exists()
    assert made


# -- case 5: the resolve API moves only a group's files, and keeps one --------------------------------------

def test_resolve_moves_only_files_of_one_found_group(tmp_path, tiny_model_dir, capfd):
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    made = photos(lib / "a", range(2), lib / "b")
    lone = photos(lib / "lone", range(10, 11))[0][0]
    before = tree(lib)
    config = setup(tmp_path, tiny_model_dir, capfd, lib, move_to=aside)
    with served(config) as http:
        g1, g2 = groups_of(http)
        attacks = [
            {"keep": g1["keep"], "paths": [str(lone)]},  # a file in no group
            {"keep": g1["keep"], "paths": [*g1["duplicates"], g2["keep"]]},  # another group's keeper
            {"keep": g2["keep"], "paths": [g1["keep"], *g1["duplicates"]]},  # every copy of a photo
            {"paths": g1["duplicates"]},  # no keeper named
            {"keep": g1["keep"], "paths": [g1["keep"]]},  # the keeper itself
        ]
        for body in attacks:
            answer = http.post("/api/duplicates/resolve", json={"action": "move", **body})
            assert answer.status_code in (409, 422), (body, answer.text)
        mixed = {"action": "move", "groups": [{"keep": g2["keep"], "paths": g2["duplicates"]},
                                              {"keep": g1["keep"], "paths": [str(lone)]}]}
        assert http.post("/api/duplicates/resolve", json=mixed).status_code == 409  # one bad group: nothing moves
        assert tree(lib) == before and not aside.exists()
        both = http.post("/api/duplicates/resolve", json={"action": "move", "groups": [
            {"keep": g2["keep"], "paths": g2["duplicates"]}]})
        assert both.status_code == 200 and [m["from"] for m in both.json()["moved"]] == g2["duplicates"]
        swapped = http.post("/api/duplicates/resolve", json={"action": "move", "keep": g1["duplicates"][0],
                                                             "paths": [g1["keep"]]})  # the user picks the keeper
        assert swapped.status_code == 200 and [m["from"] for m in swapped.json()["moved"]] == [g1["keep"]]
    assert Path(g1["duplicates"][0]).exists() and made


# -- case 6: --undo trusts nothing in the manifest -----------------------------------------------------------

@pytest.mark.parametrize("attack", ["into-home", "from-elsewhere", "dot-dot", "inside-library"])
def test_undo_moves_only_from_the_manifest_folder_into_a_root(tmp_path, tiny_model_dir, capfd, attack):
    lib, aside, home = tmp_path / "lib", tmp_path / "aside", tmp_path / "home"
    photos(lib / "a", range(2), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    moved = run(capfd, config, "duplicates", "--move-to", aside, "--json")
    assert moved.code == 0, moved.err
    manifest = Path(moved.json()["manifest"])
    planted = aside / "authorized_keys"
    planted.write_text("ssh-ed25519 AAAA attacker\n")
    elsewhere = tmp_path / "elsewhere.jpg"
    elsewhere.write_bytes(b"not the user's to move")
    row = {"size": planted.stat().st_size, "hash": content_hash(str(planted)), "root": str(home)}
    if attack == "into-home":
        row |= {"from": str(home / ".ssh" / "authorized_keys"), "to": str(planted)}
    elif attack == "from-elsewhere":
        row |= {"from": str(lib / "a" / "x.jpg"), "to": str(elsewhere), "size": elsewhere.stat().st_size,
                "hash": content_hash(str(elsewhere))}
    elif attack == "dot-dot":
        row |= {"from": str(lib / ".." / "home" / "authorized_keys"), "to": str(planted)}
    doc = json.loads(manifest.read_text())
    if attack == "inside-library":  # a manifest planted in the library, moving one of its photos elsewhere in it
        photo = lib / "a" / "photo0.jpg"
        doc["moves"] = [{"from": str(lib / "renamed" / "x.jpg"), "to": str(photo), "root": str(lib),
                         "size": photo.stat().st_size, "hash": content_hash(str(photo))}]
        manifest = lib / "a" / "clipdex-moves-planted.json"
    else:
        doc["moves"].append(row)
    manifest.write_text(json.dumps(doc))
    aside_before, lib_before = tree(aside), tree(lib)
    result = run(capfd, config, "duplicates", "--undo", manifest)
    one_line_error(result, "nothing moved back")
    assert not home.exists() and elsewhere.exists() and planted.exists() and not (lib / "renamed").exists()
    assert tree(aside) == aside_before
    assert tree(lib) == lib_before


# -- case 7: JSON bodies are capped while they stream in -----------------------------------------------------

def test_json_body_is_capped_before_parsing(tmp_path, tiny_model_dir, capfd):
    lib = tmp_path / "lib"
    photos(lib, range(2))
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    big = b'{"action": "move", "paths": [' + b",".join([b"[]"] * 1_000_000) + b"]}"  # ~3 MB of empty lists
    with served(config) as http:
        assert_error(http.post("/api/duplicates/resolve", content=big, headers={"content-type": "application/json"}),
                     413, "larger than 1 MiB")

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
            for start in range(0, len(big), 64 << 10):
                yield big[start:start + (64 << 10)]

        assert_error(http.post("/api/duplicates/resolve", content=chunks(),
                               headers={"content-type": "text/plain"}), 413)
        small = b'{"action": "move", "paths": [' + b",".join([b"[]"] * 300_000) + b"]}"  # under the cap
        answer = http.post("/api/duplicates/resolve", content=small, headers={"content-type": "application/json"})
        assert answer.status_code == 422 and len(answer.content) < 10_000  # a short answer, not 300,000 errors
        assert http.get("/api/status").status_code == 200


# -- case 8: a FIFO at an indexed path -----------------------------------------------------------------------

def cli_process(config: Path, *args: str | Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "retrieval.cli", "duplicates", *map(str, args), "--config",
                           str(config)], capture_output=True, text=True, timeout=timeout, env=env)


def test_a_fifo_at_an_indexed_path_hangs_nothing(tmp_path, tiny_model_dir, capfd):
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    made = photos(lib / "a", range(3), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib, move_to=aside)
    for original, copy in made[:2]:  # a keeper's path and a duplicate's path
        target = original if original.name.endswith("0.jpg") else copy
        target.unlink()
        os.mkfifo(target)
    listed = cli_process(config, "--json")
    assert listed.returncode == 0, listed.stderr
    moved = cli_process(config, "--move-to", aside, "--json")
    assert moved.returncode == 0, moved.stderr
    doc = json.loads(moved.stdout)
    assert all(not Path(m["from"]).exists() for m in doc["moved"])
    assert len(doc["moved"]) == 1 and all(os.path.lexists(p) for o, c in made for p in (o, c)
                                          if str(p) != doc["moved"][0]["from"])  # the FIFOs too
    with served(config) as http:
        response = http.get("/api/duplicates", params={"refresh": "true"}, timeout=60)
        assert response.status_code == 200
    os.mkfifo(Path(run(capfd, config, "status", "--json").json()["store"]) / "duplicates.json")  # the decisions
    refused = cli_process(config)
    assert refused.returncode == 1 and "not a regular file" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1


# -- case 9: refreshes coalesce, the queue is bounded, searches stay free ------------------------------------

def test_refresh_storm_joins_one_search_and_searches_stay_quick(tmp_path, tiny_model_dir, capfd, monkeypatch):
    from retrieval.serving import duplicates as routes

    lib = tmp_path / "lib"
    photos(lib / "a", range(3), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    gate, calls = threading.Event(), []
    real = routes.dups.find_in

    def held(*args: Any, **kwargs: Any) -> Any:  # the real search, held until every request is in
        calls.append(time.monotonic())
        assert gate.wait(120)
        return real(*args, **kwargs)

    monkeypatch.setattr(routes.dups, "find_in", held)
    answers: list[httpx.Response] = []
    with served(config) as http:
        storm = [threading.Thread(target=lambda: answers.append(
            http.get("/api/duplicates", params={"refresh": "true"}))) for _ in range(60)]
        for t in storm:
            t.start()
        deadline = time.monotonic() + 60
        waiting = getattr(routes, "MAX_WAITING", 16)
        while len(answers) < 60 - waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        started = time.monotonic()
        try:
            search = http.get("/api/search", params={"q": "a photo", "limit": 2}, timeout=20)
            assert search.status_code == 200 and time.monotonic() - started < 10
        finally:
            gate.set()
            for t in storm:
                t.join(120)
    assert len(calls) == 1  # 60 refreshes, one search
    codes = sorted(a.status_code for a in answers)
    assert codes.count(200) == waiting and set(codes) == {200, 429}
    for a in answers:
        if a.status_code == 429:
            assert a.headers["Retry-After"] and "try again" in a.json()["error"]
    first = [a.json() for a in answers if a.status_code == 200]
    assert all(doc == first[0] for doc in first)


# -- case 15: odd file names ---------------------------------------------------------------------------------

def test_odd_names_move_and_come_back(tmp_path, tiny_model_dir, capfd):
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    made = photos(lib / "a", range(3))
    odd = [os.fsdecode(bytes(lib / "b") + b"/caf\xe9.jpg"), str(lib / "b" / "lit\\x41.jpg"),
           str(lib / "b" / "plain.jpg")]
    (lib / "b").mkdir()
    for (original, _), name in zip(made, odd, strict=True):
        shutil.copyfile(original, name)
    before = tree(lib)
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    moved = run(capfd, config, "duplicates", "--move-to", aside, "--json")
    assert moved.code == 0, moved.err
    assert len(moved.json()["moved"]) == 3 and len(tree(lib)) == 3
    undone = run(capfd, config, "duplicates", "--undo", moved.json()["manifest"], "--json")
    assert undone.code == 0, undone.err
    assert tree(lib) == before and all(os.path.exists(n) for n in odd)
    again = run(capfd, config, "duplicates", "--json").json()
    assert len(again["groups"]) == 3  # the store holds them again, by their own keys


# -- case 16: the destination never leads back into a root ---------------------------------------------------

def test_move_to_never_leads_back_into_a_root(tmp_path, tiny_model_dir, capfd):
    lib, aside = tmp_path / "lib", tmp_path / "aside"
    photos(lib / "a", range(2), lib / "b")
    (lib / "other").mkdir()
    alias = tmp_path / "alias"
    alias.symlink_to(lib, target_is_directory=True)
    config = setup(tmp_path, tiny_model_dir, capfd, alias)  # ingested through its alias only
    before = tree(lib)
    one_line_error(run(capfd, config, "duplicates", "--move-to", lib / "aside"), "inside (or contains)")
    aside.mkdir()
    for sub in ("a", "b"):  # whichever folder the duplicates come from leads into the library
        (aside / sub).symlink_to(lib / "other", target_is_directory=True)
    one_line_error(run(capfd, config, "duplicates", "--move-to", aside), "nothing moved")
    assert tree(lib) == before and not (lib / "aside").exists()
    assert sorted(os.listdir(aside)) == ["a", "b"]  # no manifest left behind


# -- case 17: the table is escaped, by one mechanism ---------------------------------------------------------

def test_duplicates_table_shows_names_escaped(tmp_path, tiny_model_dir, capfd):
    lib = tmp_path / "lib"
    made = photos(lib / "a", range(1))
    forged = lib / "b\n  keep  " / "etc" / "passwd.jpg"  # printed whole, its path would forge a row
    osc = lib / "b" / "y\x1b]0;pwned\x07.jpg"
    for name in (forged, osc):
        name.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(made[0][0], name)
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    table = run(capfd, config, "duplicates")
    assert table.code == 0, table.err
    assert "\x1b" not in table.out and "\x07" not in table.out
    assert not any(line.startswith("  keep  /etc/passwd") for line in table.out.splitlines())
    assert "b\\n  keep  /etc/passwd.jpg" in table.out and "y\\x1b]0;pwned\\x07.jpg" in table.out


def test_cli_text_output_goes_through_one_escaping_helper():
    """The mechanism: no command module prints text any other way than ``retrieval.cli.common.echo``."""
    import ast

    cli_dir = Path(__file__).resolve().parents[1] / "retrieval" / "cli"
    offenders = []
    for module in sorted(cli_dir.glob("*.py")):
        if module.name in ("common.py", "paths.py"):  # the helper itself; exact paths for pipes, its own check
            continue
        for node in ast.walk(ast.parse(module.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "echo"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id == "click"
                    and not all(isinstance(a, ast.Constant) for a in node.args)):
                offenders.append(f"{module.name}:{node.lineno}")
    assert offenders == []


# -- case 19: outcome and message agree; nothing written when refusing ---------------------------------------

def test_cross_device_move_writes_nothing(tmp_path, tiny_model_dir, capfd):
    shm = Path("/dev/shm")
    if not shm.is_dir() or os.stat(shm).st_dev == os.stat(tmp_path).st_dev:
        pytest.skip("needs /dev/shm on another file system than the tests' temporary folder")
    lib = tmp_path / "lib"
    photos(lib / "a", range(2), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    before = tree(lib)
    dest = shm / f"clipdex-test-{os.getpid()}" / "aside"
    one_line_error(run(capfd, config, "duplicates", "--move-to", dest), "nothing moved", "another file system")
    assert not dest.parent.exists() and tree(lib) == before


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (root only: skipped elsewhere)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs to mount a small tmpfs (root)")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_full_disk_before_the_manifest_moves_nothing(tmp_path, tiny_model_dir, capfd, small_disk):
    lib, aside = small_disk / "lib", small_disk / "aside"
    photos(lib / "a", range(2), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    before = tree(lib)
    stats = os.statvfs(small_disk)
    with (small_disk / "filler").open("wb") as fh:  # not one page left
        fh.write(b"\0" * (stats.f_bavail * stats.f_frsize))
    one_line_error(run(capfd, config, "duplicates", "--move-to", aside), "nothing moved", "cannot write the manifest")
    assert tree(lib) == before and not aside.exists()


def test_a_move_that_fills_the_disk_says_what_happened(tmp_path, tiny_model_dir, capfd, small_disk):
    lib, aside = small_disk / "lib", small_disk / "aside"
    photos(lib / "a", range(3), lib / "b")
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    points = run(capfd, config, "status", "--json").json()["points"]
    stats = os.statvfs(small_disk)
    with (small_disk / "filler").open("wb") as fh:  # leave one page: the manifest fits once, not twice
        fh.write(b"\0" * (stats.f_bavail * stats.f_frsize - stats.f_frsize))
    moved = run(capfd, config, "duplicates", "--move-to", aside, "--json")
    assert moved.code == 0, moved.err
    assert len(moved.json()["moved"]) == 3 and "could not be brought up to date" in moved.json()["warning"]
    assert not [n for n in os.listdir(aside) if n.endswith(".tmp")]
    assert run(capfd, config, "status", "--json").json()["points"] == points - 3
    (small_disk / "filler").unlink()
    undone = run(capfd, config, "duplicates", "--undo", moved.json()["manifest"], "--json")
    assert undone.code == 0 and len(undone.json()["restored"]) == 3, undone.err
    assert run(capfd, config, "status", "--json").json()["points"] == points


# -- issue 23, items 3b and 8: the undo line works as printed; nothing to move is no failure ------------------

def test_printed_undo_line_works_as_printed(tmp_path, tiny_model_dir, capfd, monkeypatch):
    import shlex

    from retrieval.cli import main

    lib = tmp_path / "lib"
    photos(lib / "a", range(2), lib / "b")
    before = tree(lib)
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    points = run(capfd, config, "status", "--json").json()["points"]
    capfd.readouterr()
    assert main(["duplicates", "--move-to", str(tmp_path / "aside"), "--config", str(config)]) == 0
    line = capfd.readouterr().out.strip().splitlines()[0]
    words = shlex.split(line.split("undo with: ", 1)[1])
    assert words[:3] == ["clipdex", "duplicates", "--undo"]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.delenv("CLIPDEX_CONFIG", raising=False)
    monkeypatch.delenv("CLIPDEX_STORE", raising=False)
    assert main(words[1:]) == 0, capfd.readouterr().err
    assert tree(lib) == before
    assert run(capfd, config, "status", "--json").json()["points"] == points  # the store was brought back too


def test_nothing_to_move_is_said_and_exits_zero(tmp_path, tiny_model_dir, capfd):
    lib = tmp_path / "lib"
    photos(lib, range(3))
    config = setup(tmp_path, tiny_model_dir, capfd, lib)
    result = run(capfd, config, "duplicates", "--move-to", tmp_path / "aside")
    assert result.code == 0 and result.err == "" and "nothing moved" in result.out
    assert not (tmp_path / "aside").exists()
