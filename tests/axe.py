"""axe-core (npm) for the page's accessibility check: installed once into ``.cache/axe`` (``make browser`` does
it too), skipped with the reason when npm is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

AXE_VERSION = "4.14.1"
CACHE = Path(os.environ.get("CLIPDEX_AXE_DIR", Path(__file__).resolve().parent.parent / ".cache" / "axe"))
AXE_JS = CACHE / "node_modules" / "axe-core" / "axe.min.js"


def axe_source() -> str:
    """The text of axe.min.js (npm-installed on first use)."""
    if not AXE_JS.is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.skip("npm is missing: install nodejs/npm (or run make browser) for the axe-core accessibility check")
        CACHE.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(CACHE), "--no-save", "--no-audit", "--no-fund",
                               "--loglevel=error", f"axe-core@{AXE_VERSION}"], capture_output=True, text=True,
                              timeout=300)
        if done.returncode != 0 or not AXE_JS.is_file():
            pytest.fail(f"npm install axe-core@{AXE_VERSION} failed: {done.stderr.strip()[-500:]}")
    return AXE_JS.read_text(encoding="utf-8")


def serious_violations(driver: Any, source: str) -> list[str]:
    """axe-core's serious and critical violations on the page now shown: "rule: target" lines."""
    driver.execute_script(source)  # injected through WebDriver: the page's CSP does not apply to it
    found = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "axe.run(document, {resultTypes: ['violations']}).then(r => done(r.violations.map(v => "
        "({id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.map(n => n.target.join(' '))}))))"
        ".catch(e => done([{id: 'axe-error', impact: 'critical', help: String(e), nodes: []}]));")
    return [f"{v['id']} ({v['impact']}): {v['help']}: {', '.join(v['nodes'][:5])}" for v in found
            if v["impact"] in ("serious", "critical")]
