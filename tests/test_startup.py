"""Fast start: `clipdex status` and `clipdex search` import only what they use; the model loads once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.images import pattern

REPO = Path(__file__).resolve().parent.parent

RUNNER = r"""
import json, sys
loads = []
if sys.argv[1] == "search":
    import retrieval.model.torch_backend as enc
    original = enc.TorchEncoder.load.__func__
    enc.TorchEncoder.load = classmethod(lambda cls, s: loads.append(1) or original(cls, s))
from retrieval.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "loads": len(loads), "modules": sorted(sys.modules)}), file=sys.stderr)
"""


def _run(*args: str) -> tuple[str, dict]:
    proc = subprocess.run([sys.executable, "-c", RUNNER, *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["code"] == 0, proc.stderr
    return proc.stdout, report


def _top(modules: list[str]) -> set[str]:
    return {m.split(".")[0] for m in modules} | set(modules)


def test_status_and_search_import_only_what_they_use(clipdex, config: Path, tmp_path: Path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        pattern(i).save(tmp_path / "imgs" / f"{i}.png")
    assert clipdex("ingest", tmp_path / "imgs").code == 0

    out, report = _run("status", "--json", "--config", str(config))
    assert json.loads(out)["points"] == 3
    loaded = _top(report["modules"])
    for heavy in ("torch", "torchvision", "open_clip", "fastapi", "uvicorn", "qdrant_client",
                  "retrieval.training", "retrieval.server", "retrieval.model.torch_backend", "ingest.pipeline"):
        assert heavy not in loaded, f"clipdex status imported {heavy}"

    out, report = _run("search", "a red square", "--json", "--config", str(config))
    assert len(json.loads(out)) == 3
    loaded = _top(report["modules"])
    assert "open_clip" in loaded  # the model is needed here...
    for heavy in ("fastapi", "uvicorn", "qdrant_client", "retrieval.training", "retrieval.server",
                  "retrieval.evaluate", "ingest.pipeline", "ingest.reader"):
        assert heavy not in loaded, f"clipdex search imported {heavy}"
    assert report["loads"] == 1  # ...and loaded once
