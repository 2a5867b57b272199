"""benchmarks/gpu.py is known to run: its CPU smoke mode (tiny model, a few JPEGs it writes) through the real
ingest, one JSON line with the figures the GPU run reports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_runs_in_cpu_smoke_mode(tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "benchmarks.gpu", "--cpu-smoke", "--folder", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1, proc.stdout
    result = json.loads(lines[0])
    assert result["mode"] == "cpu-smoke" and result["device"] == "cpu" and result["images"] == 48
    assert result["img_per_s"] > 0 and result["model_only_img_per_s"] > 0 and result["workers"] == 2
    assert "gpu_util_mean" in result and result["cpu"] is not None
    jpegs = list((tmp_path / "jpegs-48-96x72").rglob("*.jpg"))
    assert len(jpegs) == 48 and len({p.read_bytes() for p in jpegs}) == 48  # distinct files: every one encoded
