"""Memory of a real ``clipdex serve`` while it takes example-image uploads (issue 19, hostile case 3).

Ingests ``samples/fashion-mnist`` with the bundled model (``configs/demo.toml``) into a temporary store,
starts the real command (``python -m retrieval.cli serve``, with its own ``TMPDIR``) on 127.0.0.1, and
posts ``POST /api/search`` uploads of PNGs of zeros: 7900×7900 (the issue's 60 KB file, 62 MP) and
4800×4800 (23 MP, under the query-image cap), one at a time and ``--concurrent`` at once.

For each round it reports the server process's peak RSS above its idle RSS (``VmHWM`` after resetting it
through ``/proc/PID/clear_refs``), the peak RSS of the server with its decoder workers (sampled every
5 ms), the server's RSS left over afterwards, the answers' statuses and any files left in its ``TMPDIR``.
Prints one JSON line on stdout; progress goes to stderr. Run it against other code with PYTHONPATH.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve import SAMPLES, clipdex, free_port, log, wait_until_up  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
MB = 1 << 20


def status_kb(pid: int, key: str) -> int:
    """A ``/proc/PID/status`` field in kB (0 once the process is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            with contextlib.suppress(OSError):
                todo += [int(c) for c in (task / "children").read_text().split()]
    return found


def png_of_zeros(side: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (side, side)).save(out, "PNG")
    return out.getvalue()


def measure(url: str, pid: int, tmpdir: Path, data: bytes, concurrent: int) -> dict[str, Any]:
    """Post ``concurrent`` uploads of ``data`` at once; the server's memory around it."""
    time.sleep(0.5)
    idle = status_kb(pid, "VmRSS")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    tree_idle = sum(status_kb(p, "VmRSS") for p in tree(pid))
    peak, done = [tree_idle], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], sum(status_kb(p, "VmRSS") for p in tree(pid)))
            time.sleep(0.005)

    statuses: list[int] = []

    def upload() -> None:
        try:
            response = httpx.post(f"{url}/api/search", files={"image": ("zeros.png", data, "image/png")},
                                  data={"limit": "3"}, timeout=120)
            statuses.append(response.status_code)
        except httpx.HTTPError:
            statuses.append(0)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    threads = [threading.Thread(target=upload) for _ in range(concurrent)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    time.sleep(0.3)
    done.set()
    sampler.join()
    return {"concurrent": concurrent, "statuses": sorted(statuses), "seconds": round(seconds, 2),
            "server_peak_mb": round((status_kb(pid, "VmHWM") - idle) / 1024, 1),
            "with_workers_peak_mb": round((peak[0] - tree_idle) / 1024, 1),
            "server_left_mb": round((status_kb(pid, "VmRSS") - idle) / 1024, 1),
            "tmp_left": sorted(p.name for p in tmpdir.iterdir())[:5]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrent", type=int, default=4)
    parser.add_argument("--json", action="store_true", help="(the only output format; kept for symmetry)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="clipdex-servemem-") as tmp:
        work = Path(tmp)
        config, store = REPO / "configs" / "demo.toml", work / "store"
        env = dict(os.environ, HF_HUB_OFFLINE="1")
        log("ingesting samples")
        subprocess.run(clipdex("ingest", SAMPLES, "--config", config, "--store", store), check=True, env=env,
                       stdout=subprocess.DEVNULL)
        server_tmp = work / "server-tmp"
        server_tmp.mkdir()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(clipdex("serve", "--port", port, "--config", config, "--store", store,
                                          "--log-level", "warning"),
                                  env=env | {"TMPDIR": str(server_tmp)})
        rounds = []
        try:
            wait_until_up(url, server)
            for side in (7900, 4800):
                data = png_of_zeros(side)
                for concurrent in (1, args.concurrent):
                    log(f"{side}x{side} PNG ({len(data) // 1024} KB) x {concurrent}")
                    rounds.append({"png": f"{side}x{side}", "png_kb": len(data) // 1024,
                                   **measure(url, server.pid, server_tmp, data, concurrent)})
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(30)
    print(json.dumps({"rounds": rounds, "code": os.environ.get("PYTHONPATH", str(REPO)),
                      "load": Path("/proc/loadavg").read_text().split()[0]}))


if __name__ == "__main__":
    main()
