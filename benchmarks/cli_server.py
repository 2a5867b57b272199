"""Whole-process time of ``clipdex search`` answered by a running server, beside one that opens the store itself
(issue 23: "a whole clipdex search process answered by a running server takes <= 0.4 s").

Ingests ``samples/fashion-mnist`` with the bundled model (``configs/demo.toml``) into two temporary stores:
``served`` is held by a real ``clipdex serve`` (so the CLI asks it), ``alone`` by nobody (so the CLI opens it,
loads the query encoder and searches). Then ``--rounds`` rounds, each running one ``clipdex search`` process
against each store, in alternating order; every process is timed from spawn to exit.

Prints one JSON line on stdout: medians and every round's wall-clock seconds for both, the same for the CPU time
each process used (user + system: what a quiet machine's wall clock would be close to for this single-threaded
client, and far less disturbed by other load), and the CPU, load average and core count; progress on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "samples" / "fashion-mnist"


def log(msg: str) -> None:
    print(f"[cli-server-bench] {msg}", file=sys.stderr, flush=True)


def clipdex(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "retrieval.cli", *map(str, args)]


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds: user + system) of one process, from spawn to exit."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {proc.stderr.strip()}")
    return seconds, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def cpu() -> dict[str, object]:
    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    name = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), "?")
    flags = next((line for line in info.splitlines() if line.startswith("flags")), "")
    return {"cpu": name, "cores": os.cpu_count(), "avx512_bf16": "avx512_bf16" in flags,
            "amx_bf16": "amx_bf16" in flags, "load_avg": [round(x, 2) for x in os.getloadavg()]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--config", default=str(REPO / "configs" / "demo.toml"))
    parser.add_argument("--query", default="a pair of trousers")
    args = parser.parse_args()
    if str(REPO) not in sys.path:  # run as a script: `python benchmarks/X.py`
        sys.path.insert(0, str(REPO))
    from benchmarks.server_process import free_port, wait_until_up

    env = os.environ | {"PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="clipdex-cli-server-") as tmp:
        stores = {name: Path(tmp) / name for name in ("served", "alone")}
        for name, store in stores.items():
            log(f"ingesting {SAMPLES} into {name}")
            subprocess.run(clipdex("ingest", SAMPLES, "--config", args.config, "--store", store), check=True,
                           capture_output=True, env=env, cwd=REPO)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen(clipdex("serve", "--config", args.config, "--store", stores["served"], "--port",
                                          str(port), "--log-level", "warning"), env=env, cwd=REPO,
                                  stderr=subprocess.DEVNULL)
        try:
            wait_until_up(url, server)
            search = {name: clipdex("search", args.query, "--config", args.config, "--store", store)
                      for name, store in stores.items()}
            for cmd in search.values():  # warm the file cache and the ONNX export once, untimed
                timed(cmd, env)
            rounds: dict[str, list[float]] = {"served": [], "alone": []}
            cpu_s: dict[str, list[float]] = {"served": [], "alone": []}
            for i in range(args.rounds):
                order = ["served", "alone"] if i % 2 == 0 else ["alone", "served"]
                for name in order:
                    wall, used = timed(search[name], env)
                    rounds[name].append(round(wall, 3))
                    cpu_s[name].append(round(used, 3))
                log(f"round {i + 1}: served {rounds['served'][-1]} s ({cpu_s['served'][-1]} s CPU), "
                    f"alone {rounds['alone'][-1]} s ({cpu_s['alone'][-1]} s CPU)")
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
    served, alone = statistics.median(rounds["served"]), statistics.median(rounds["alone"])
    print(json.dumps({"served_median_s": served, "alone_median_s": alone, "speedup": round(alone / served, 2),
                      "served_s": rounds["served"], "alone_s": rounds["alone"],
                      "served_cpu_median_s": statistics.median(cpu_s["served"]),
                      "alone_cpu_median_s": statistics.median(cpu_s["alone"]),
                      "served_cpu_s": cpu_s["served"], "alone_cpu_s": cpu_s["alone"], "rounds": args.rounds,
                      "query": args.query} | cpu()))


if __name__ == "__main__":
    main()
