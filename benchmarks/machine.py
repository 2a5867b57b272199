"""What a benchmark ran on: CPU model, the flags that pick fast paths, cores and load (one dict for the JSON)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def machine() -> dict[str, Any]:
    """``{"cpu": ..., "cpu_flags": [...], "cores": N, "loadavg": "..."}`` from /proc (empty where not Linux)."""
    model, flags = "", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and not model:
                model = value.strip()
            elif key.strip() == "flags" and not flags:
                flags = set(value.split())
    except OSError:
        pass
    try:
        load = Path("/proc/loadavg").read_text().split()[:3]
    except OSError:
        load = []
    return {"cpu": model, "cpu_flags": [f for f in FLAGS if f in flags], "amx_bf16": "amx_bf16" in flags,
            "cores": os.cpu_count(), "loadavg": " ".join(load)}
