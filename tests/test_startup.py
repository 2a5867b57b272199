"""Fast start: `clipdex status` and `clipdex search` import only what they use; the model loads once."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from tests.images import pattern

REPO = Path(__file__).resolve().parent.parent

RUNNER = r"""
import json, sys
loads = []
if sys.argv[1] == "search":  # count the model loads on torch: a query's, or an export's
    import retrieval.model.loader as loader
    for name in ("load_ingest_encoder", "_export"):
        original = getattr(loader, name)
        setattr(loader, name, lambda *a, _f=original, **k: loads.append(1) or _f(*a, **k))
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
    assert len(json.loads(out)) == 3  # the first search of a model may export it to ONNX (that needs torch)
    assert report["loads"] <= 1
    fresh = f"a blue circle, new to the text cache ({uuid.uuid4().hex})"  # other tests share the session's cache
    out, report = _run("search", fresh, "--json", "--config", str(config))
    assert len(json.loads(out)) == 3
    loaded = _top(report["modules"])
    assert "onnxruntime" in loaded  # the model runs here...
    for heavy in ("torch", "torchvision", "open_clip", "fastapi", "uvicorn", "qdrant_client", "retrieval.training",
                  "retrieval.server", "retrieval.evaluate", "ingest.pipeline", "ingest.reader",
                  "retrieval.model.torch_backend", "PIL", "ingest.decode", "urllib.request", "http.client"):
        assert heavy not in loaded, f"clipdex search imported {heavy}"  # a text search reads no picture or URL
    assert report["loads"] == 0  # ...and torch never loaded a model
    again, report = _run("search", fresh, "--json", "--config", str(config))
    assert json.loads(again) == json.loads(out)  # a repeated text: its vector from the on-disk text cache,
    assert "onnxruntime" not in _top(report["modules"])  # so no session at all (retrieval.model.text_cache)


SEARCHES = r"""
import json, sys
from retrieval.cli import main
config, image, like = sys.argv[1:4]
codes = [main(["search", "a red square", "--json", "--config", config]),
         main(["search", "--image", image, "--json", "--config", config]),
         main(["search", "--like", like, "--json", "--config", config])]
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "open_clip"))
print(json.dumps({"codes": codes, "heavy": heavy}), file=sys.stderr)
"""


def test_text_image_and_like_searches_import_no_torch(clipdex, config: Path, tmp_path: Path):
    (tmp_path / "imgs").mkdir()
    for i in range(3):
        pattern(i).save(tmp_path / "imgs" / f"{i}.png")
    assert clipdex("ingest", tmp_path / "imgs").code == 0
    assert clipdex("model", "export").code == 0  # ahead of time: no search process needs torch
    query = tmp_path / "query.png"
    pattern(1).save(query)
    proc = subprocess.run([sys.executable, "-c", SEARCHES, str(config), str(query), str(tmp_path / "imgs" / "2.png")],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    report = json.loads(proc.stderr.strip().splitlines()[-1])
    assert report["codes"] == [0, 0, 0], proc.stderr
    hits = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [len(h) for h in hits] == [3, 3, 3]
    assert hits[1][0]["path"] == str(tmp_path / "imgs" / "1.png")  # the query image's own picture first
    assert hits[2][0]["path"] == str(tmp_path / "imgs" / "2.png")
    assert report["heavy"] == []  # not torch, torchvision or open_clip: not even imported
