"""The CLI beside a running ``clipdex serve``: real server process, real CLI processes.

Every read command is run once alone (before the server starts) and once while the server holds the store;
the outputs must be identical, and the served run must not load numpy, onnxruntime or torch.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import write_config
from tests.images import pattern, write_library, write_near_duplicates
from tests.test_server import _free_port, run_cli

ROOT = Path(__file__).resolve().parent.parent
WAIT_S = 90.0
KEY = "s3cret"
KEYED = {"Authorization": f"Bearer {KEY}"}
HEAVY = ("numpy", "onnxruntime", "torch", "qdrant_edge", "PIL")
# A `clipdex ...` process that also reports which heavy modules it loaded (on stderr, last line).
PROBE = ("import sys, json\nfrom retrieval.cli import main\ncode = main(sys.argv[1:])\n"
         f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)), file=sys.stderr)\nsys.exit(code)\n")


def cli(*args: str | os.PathLike[str], env: dict[str, str] | None = None) -> tuple[int, str, str, list[str]]:
    """A real ``clipdex`` process: (exit code, stdout, stderr without the probe line, heavy modules loaded)."""
    proc = subprocess.run([sys.executable, "-c", PROBE, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=(env or os.environ) | {"PYTHONPATH": str(ROOT)})
    *err, loaded = proc.stderr.rstrip("\n").split("\n")
    return proc.returncode, proc.stdout, "".join(f"{line}\n" for line in err), json.loads(loaded)


def wait_until(check, what: str, timeout: float = WAIT_S):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@dataclass
class Served:
    url: str
    pid: int
    config: Path
    lib: Path
    alone: dict[str, tuple[int, str, str]]


COMMANDS: dict[str, list[str]] = {
    "search": ["search", "a photo", "--limit", "5"],
    "search-json": ["search", "a photo", "--limit", "5", "--json"],
    "search-paths": ["search", "a photo", "--paths", "--folder", "{lib}/photos"],
    "search-image": ["search", "--image", "{lib}/photos/a/one.png", "--json"],
    "search-like": ["search", "--like", "{lib}/photos/a/two.jpg", "--json", "--min-score", "0.1"],
    "search-camera": ["search", "a photo", "--camera", "Canon EOS 5D", "--json"],
    "search-missing-like": ["search", "--like", "{lib}/nothing.png"],
    "status": ["status"],
    "status-json": ["status", "--json"],
    "duplicates": ["duplicates"],
    "duplicates-json": ["duplicates", "--json"],
}


def _args(name: str, lib: Path) -> list[str]:
    return [a.replace("{lib}", str(lib)) for a in COMMANDS[name]]


def _status(url: str) -> dict | None:
    try:
        return httpx.get(f"{url}/api/status", timeout=5, headers=KEYED).json()
    except httpx.TransportError:
        return None


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_model_dir: Path) -> Iterator[Served]:
    tmp = tmp_path_factory.mktemp("cli-server")
    lib = tmp / "lib"
    write_library(lib / "photos")
    write_near_duplicates(lib / "dups")
    config = write_config(tmp / "clipdex.toml", tiny_model_dir, tmp / "store")
    with config.open("a") as fh:
        fh.write(f'[duplicates]\nmove_to = "{tmp / "aside"}"\n[serve]\ndebounce_s = 0.2\n')
    (tmp / "keyless.toml").write_text(config.read_text())
    with config.open("a") as fh:
        fh.write(f'api_key = "{KEY}"\n')  # the CLI finds the server's key in the settings it is given
    code, _, err = run_cli("ingest", lib, "--config", config)
    assert code == 0, err
    code, _, err = run_cli("search", "warm up", "--config", config)  # (exports the model to ONNX once)
    assert code == 0, err
    alone = {name: run_cli(*_args(name, lib), "--config", config) for name in COMMANDS}  # (in this process: quicker)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "retrieval.cli", "serve", "--port", str(port), "--config",
                               str(config), "--watch", str(lib), "--log-level", "warning"], cwd=ROOT,
                              env=os.environ | {"PYTHONPATH": str(ROOT)}, stderr=subprocess.PIPE, text=True)
    try:
        wait_until(lambda: server.poll() is not None or (_status(url) or {}).get("sync", {}).get("syncs"),
                   "the server's first sync")
        assert server.poll() is None, server.stderr.read() if server.stderr else ""
        yield Served(url, server.pid, config, lib, alone)
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


@pytest.mark.parametrize("name", list(COMMANDS))
def test_a_read_command_answered_by_the_server_prints_what_it_prints_alone(served: Served, name: str):
    code, out, err, loaded = cli(*_args(name, served.lib), "--config", served.config)
    expected = served.alone[name]
    if name == "duplicates-json":  # (the same, but for how long each stage took)
        out = json.dumps(json.loads(out) | {"seconds": None})
        expected = (expected[0], json.dumps(json.loads(expected[1]) | {"seconds": None}), expected[2])
    assert (code, out, err) == expected
    assert not {"numpy", "onnxruntime", "torch", "qdrant_edge"} & set(loaded), loaded


def test_a_served_search_loads_nothing_heavy(served: Served):
    code, out, err, loaded = cli("search", "a photo", "--config", served.config)
    assert code == 0, err
    assert loaded == [], f"a search answered by the server loaded {loaded}"
    assert out.count("\n") >= 1


def test_the_server_is_really_asked_with_its_key(served: Served, tmp_path: Path):
    """The server's API key comes from the settings or from CLIPDEX_API_KEY; without it, one line says so."""
    keyless = served.config.parent / "keyless.toml"
    code, _, err, _ = cli("status", "--config", keyless)
    assert code == 1 and "needs its API key" in err and "CLIPDEX_API_KEY" in err and err.count("\n") == 1, err
    code, out, err, _ = cli("status", "--config", keyless, "--json", env=os.environ | {"CLIPDEX_API_KEY": KEY})
    assert code == 0 and json.loads(out)["collection"] == "test", err
    code, _, err, _ = cli("status", "--config", served.config, env=os.environ | {"CLIPDEX_API_KEY": "wrong"})
    assert code == 1 and "wrong API key" in err, err  # the environment wins over the file, as everywhere
    held = json.loads((served.config.parent / "store" / "test" / "clipdex.lock").read_text())
    assert held["pid"] == served.pid and served.url in held["owner"]
    commands = httpx.get(f"{served.url}/api/status", timeout=10, headers=KEYED).json()["commands"]  # for the page
    assert commands == {"ingest": f"clipdex ingest DIR --config {served.config}",
                        "watch": f"clipdex serve --watch DIR --config {served.config}"}


def test_ingest_goes_through_the_server_and_rebuild_says_how(served: Served):
    new = served.lib / "photos" / "new.png"
    pattern(99, (40, 30)).save(new)
    code, out, err, loaded = cli("ingest", served.lib / "photos", "--config", served.config)
    assert code == 0, err
    assert out.startswith("indexed ") and "unchanged" in out, out  # (the watch may have been quicker)
    assert "numpy" not in loaded
    code, out, err, _ = cli("search", "--like", new, "--limit", "1", "--config", served.config, "--json")
    assert code == 0 and json.loads(out)[0]["path"] == str(new), err
    code, _, err, _ = cli("ingest", served.lib.parent, "--config", served.config)
    assert code == 1 and "watches" in err and "--watch" in err and err.count("\n") == 1, err
    code, _, err, _ = cli("ingest", served.lib, "--workers", "2", "--config", served.config)
    assert code == 1 and "--workers" in err, err
    code, _, err, _ = cli("rebuild", "--config", served.config)
    assert code == 1 and "stop the server" in err and served.url in err, err
    code, _, err, _ = cli("status", "--check", "--config", served.config)
    assert code == 1 and "stop the server" in err, err


def test_duplicates_are_resolved_through_the_server(served: Served, tmp_path: Path):
    code, out, err, _ = cli("duplicates", "--json", "--config", served.config)
    assert code == 0, err
    groups = json.loads(out)["groups"]
    assert groups, "the library has near-duplicates"
    files = [groups[0]["keep"], *groups[0]["duplicates"]]
    code, out, err, _ = cli("duplicates", "--not-duplicates", *files, "--config", served.config)
    assert code == 0 and out.startswith(f"remembered: {len(files)} files"), err
    code, out, _, _ = cli("duplicates", "--json", "--config", served.config)
    still = [sorted([g["keep"], *g["duplicates"]]) for g in json.loads(out)["groups"]]
    assert not any(len(set(files) & set(g)) > 1 for g in still)
    code, _, err, _ = cli("duplicates", "--move-to", tmp_path / "aside", "--config", served.config)
    assert code == 1 and "move_to" in err and err.count("\n") == 1, err  # not the server's folder: refused
    assert all(Path(f).exists() for f in files)
    aside = served.config.parent / "aside"
    code, out, err, _ = cli("duplicates", "--move-to", aside, "--config", served.config, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["moved"] and all(not Path(row["from"]).exists() and Path(row["to"]).exists()
                                   for row in result["moved"])
    assert Path(result["manifest"]).parent == aside and "--undo" in result["undo"]
    assert all(Path(f).exists() for f in files)  # the dismissed group stayed


def test_a_stale_server_lock_is_taken_over(tmp_path: Path, tiny_model_dir: Path):
    """A lock record naming a server whose pid is dead: the command opens the store itself."""
    lib = tmp_path / "lib"
    lib.mkdir()
    for i in range(3):
        pattern(i).save(lib / f"{i}.png")
    config = write_config(tmp_path / "c.toml", tiny_model_dir, tmp_path / "store")
    code, _, err, _ = cli("ingest", lib, "--config", config)
    assert code == 0, err
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    record = {"pid": dead.pid, "command": "clipdex serve", "owner": f"clipdex serve at http://127.0.0.1:{_free_port()}"}
    (tmp_path / "store" / "test" / "clipdex.lock").write_text(json.dumps(record))
    code, out, err, _ = cli("search", "a photo", "--config", config, "--json")
    assert code == 0, err
    assert len(json.loads(out)) == 3
    shutil.rmtree(lib)
