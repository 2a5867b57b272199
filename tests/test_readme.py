"""The tested examples of README.md and docs/*.md run as written (the rule is in the README, "Tests").

A ```sh block right after the line ``<!-- tested -->`` is extracted, from the README first and then from the
docs pages in name order; its ``clipdex`` lines run through the real CLI from the repository root with this
test's own store, its ``curl`` lines against a live ``clipdex serve --config configs/demo.toml`` on a free
port of 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
MARKER = "<!-- tested -->"
DOC_PORT = "127.0.0.1:8000"


def marked_lines(text: str) -> list[str]:
    """The command lines of every ```sh block that directly follows the marker line, in order."""
    lines = text.splitlines()
    commands: list[str] = []
    for i, line in enumerate(lines):
        if line.strip() != MARKER:
            continue
        assert i + 1 < len(lines) and lines[i + 1].strip() == "```sh", f"README line {i + 1}: marker without a block"
        for body in lines[i + 2:]:
            if body.strip() == "```":
                break
            if body.strip() and not body.lstrip().startswith("#"):
                commands.append(body.strip())
    return commands


def tested_lines() -> list[str]:
    """The tested command lines of every page, README first."""
    return [line for page in PAGES for line in marked_lines(page.read_text())]


def _clipdex_argv(line: str) -> list[str]:
    words = shlex.split(line, comments=True)
    assert words[0] in ("clipdex", ".venv/bin/clipdex"), line
    return words[1:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_until_serving(server: subprocess.Popen[str], port: int, limit_s: float = 180.0) -> None:
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"clipdex serve exited: {server.stderr.read() if server.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.3)
    pytest.fail("clipdex serve did not start listening")


def _run_curl(line: str, port: int, out_dir: Path) -> tuple[int, str]:
    """Run a README curl line as written (port swapped), returning the HTTP status and the body."""
    words = shlex.split(line.replace(DOC_PORT, f"127.0.0.1:{port}"))
    assert words[0] == "curl", line
    if "-o" in words:  # keep written files out of the repository
        words[words.index("-o") + 1] = str(out_dir / Path(words[words.index("-o") + 1]).name)
    proc = subprocess.run([*words, "--max-time", "60", "-w", "\n%{http_code}"], cwd=REPO, capture_output=True,
                          text=True, timeout=90)
    assert proc.returncode == 0, f"{line}: curl exit {proc.returncode}: {proc.stderr}"
    body, _, code = proc.stdout.rpartition("\n")
    return int(code), body


def test_the_rule_finds_the_examples_it_should():
    lines = tested_lines()
    kinds = [" ".join(_clipdex_argv(x)[:1]) if not x.startswith("curl") else "curl" for x in lines]
    assert {"ingest", "search", "status", "eval"} <= set(kinds) and kinds.count("curl") >= 3
    assert kinds.index("ingest") < kinds.index("search")  # README order is run order


@pytest.mark.slow
def test_readme_examples_run(clipdex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    if shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    lines = tested_lines()
    store = tmp_path / "store"
    monkeypatch.setenv("CLIPDEX_STORE", str(store))
    monkeypatch.chdir(REPO)
    for line in (x for x in lines if not x.startswith("curl")):
        result = clipdex(*_clipdex_argv(line), with_config=False)
        assert result.code == 0, f"{line}\n{result.err}"
        assert result.out.strip(), line
        if "--json" in line:
            json.loads(result.out)
    assert (store / "fashion-mnist" / "clipdex.json").is_file()  # the examples used the test's store

    port = _free_port()
    env = {**os.environ, "CLIPDEX_STORE": str(store)}
    server = subprocess.Popen([sys.executable, "-m", "retrieval.cli", "serve", "--config", "configs/demo.toml",
                               "--port", str(port), "--log-level", "warning"], cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _wait_until_serving(server, port)
        for line in (x for x in lines if x.startswith("curl")):
            status, body = _run_curl(line, port, tmp_path)
            assert 200 <= status < 300, f"{line}: HTTP {status}: {body[:300]}"
            if "-o" not in shlex.split(line):
                answer = json.loads(body)
                if re.search(r"/api/search", line):
                    assert isinstance(answer, list) and answer, line
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_the_slow_marker_is_declared_and_used():
    """`pytest -m "not slow"` (README) must deselect something real, and only a declared marker."""
    import tomllib

    config = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert any(m.startswith("slow:") for m in config["markers"])
    used = [f.name for f in (REPO / "tests").glob("test_*.py") if "@pytest.mark.slow" in f.read_text()]
    assert used
