"""What a benchmark ran on: CPU model, the flags that pick fast paths, cores and load (one dict for the JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from retrieval.model.precision import cpu_flags, cpu_image_precision

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    """The CPU model, its fast-path flags, what ``precision = "auto"`` picks on it, cores and load average."""
    try:
        info = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        info = ""
    name = next((line.partition(":")[2].strip() for line in info.splitlines() if line.startswith("model name")), "")
    flags = cpu_flags(info)
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"cpu": name, "cpu_flags": [f for f in FLAGS if f in flags], "amx_bf16": "amx_bf16" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "avx512_vnni": "avx512_vnni" in flags,
            "auto_image_precision": cpu_image_precision(flags), "cores": os.cpu_count(), "loadavg": " ".join(load)}


def byte_compile(root: Path | None = None) -> bool:
    """Write the ``.pyc`` files of clipdex's own packages, as ``pip install`` does for an installed package
    (and as rclip's wheel has them), so a timed process does not compile clipdex's sources while the peer's
    are read compiled. ``compileall`` writes them even under ``PYTHONDONTWRITEBYTECODE``. True when all
    compiled."""
    import compileall

    base = root or Path(__file__).resolve().parent.parent
    return all(compileall.compile_dir(str(base / package), quiet=1) for package in ("retrieval", "ingest"))
