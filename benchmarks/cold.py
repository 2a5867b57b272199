"""Where a cold ``clipdex search`` spends its time: a per-phase profile of fresh processes (issue 27).

Each round starts fresh Python processes against the store ``benchmarks/query.py`` builds (``--config``: its
config, default ``.bench/query-ViT-B-32-auto-auto.toml``; run query.py once first) and times, in wall and
CPU seconds:

* ``python``: an empty interpreter (``python -c pass``): the floor of any process;
* ``import_cli``: ``import retrieval.cli`` and, as the search command does, its search module;
* ``import_index``: ``retrieval.index`` (the stores, the model loader, the search package);
* ``settings``: reading the config;
* ``open_store``: ``Index.open`` (the embedded store, its collection metadata);
* ``encoder``: the query encoder (the export's manifest, the tokenizer);
* ``text_session``: the ONNX Runtime text session (``--no-graph-cache`` removes the cached optimised graph
  before each round, so every session optimises its graph);
* ``encode``: the first text encode; ``search``: the store query and payload fetch;
* ``whole_process``: a whole ``clipdex search TEXT`` process, timed from outside (new text each round;
  ``--repeat-text`` uses the same text, which the on-disk text cache then answers).

Rounds alternate between the phase runner and the whole process (``--variant-env NAME=VALUE``: the whole
process once more with those variables set, e.g. ``CLIPDEX_OPEN_AHEAD=1``). ``--baseline DIR`` times another checkout's
whole process and phases (``PYTHONPATH=DIR``) in the same rounds: before/after, side by side. Prints one JSON
line (per-phase medians and every round); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

PHASES = r"""
import json, sys, time
marks = []
def mark(name):
    marks.append((name, time.perf_counter(), time.process_time()))
mark("start")
import retrieval.cli, retrieval.cli.index_cmds
mark("import_cli")
from retrieval.index import Index
mark("import_index")
from retrieval.settings import load_settings
settings = load_settings(sys.argv[1])
mark("settings")
index = Index.open(settings)
mark("open_store")
encoder = index.encoder
mark("encoder")
encoder._session("text")
mark("text_session")
vector = encoder.encode_texts([sys.argv[2]])
mark("encode")
hits = index.search(text=sys.argv[2], limit=10)
mark("search")
index.close()
out = {name: [round(w - pw, 4), round(c - pc, 4)] for (name, w, c), (_, pw, pc) in zip(marks[1:], marks)}
print(json.dumps(out))
"""


def log(msg: str) -> None:
    print(f"[cold-bench] {msg}", file=sys.stderr, flush=True)


CPU: dict[str, list[float]] = {}
"""CPU seconds (user + system) of each kind of whole process, steadier than wall time on a loaded machine."""


def run(cmd: list[str], tree: Path = REPO, what: str = "", extra: dict[str, str] | None = None) -> tuple[float, str]:
    env = {**os.environ, "PYTHONPATH": str(tree), **(extra or {})}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tree, env=env)
    dt = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if what:
        CPU.setdefault(what, []).append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} failed: {proc.stderr.strip()[-400:]}")
    return dt, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / ".bench" / "query-ViT-B-32-auto-auto.toml")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--no-graph-cache", action="store_true",
                        help="remove the cached optimised ORT graphs before each round")
    parser.add_argument("--repeat-text", action="store_true", help="the same query text every round")
    parser.add_argument("--baseline", type=Path, default=None,
                        help="another checkout (e.g. /work/main): its whole `clipdex search` process is timed too, "
                             "in the same rounds (PYTHONPATH set to it), and the ratio reported")
    parser.add_argument("--variant-env", action="append", default=[], metavar="NAME=VALUE",
                        help="also time this tree's whole process with these environment variables set, in the same "
                             "rounds (e.g. CLIPDEX_OPEN_AHEAD=1)")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)
    variant_env = dict(item.split("=", 1) for item in args.variant_env)

    from benchmarks.machine import byte_compile, machine
    from retrieval.model.onnx_files import find_export
    from retrieval.settings import load_settings

    if not args.config.is_file():
        raise SystemExit(f"no {args.config}: run `python -m benchmarks.query` once first")
    compiled = byte_compile() and (args.baseline is None or byte_compile(args.baseline.resolve()))
    settings = load_settings(args.config)
    export = find_export(settings.model)
    py = sys.executable
    phases: list[dict[str, list[float]]] = []
    whole: list[float] = []
    base: list[float] = []
    base_phases: list[dict[str, list[float]]] = []
    empty: list[float] = []
    variant: list[float] = []
    for r in range(args.rounds):
        text = "a photo of a dog" if args.repeat_text else f"a photo of a dog number {r} {time.time_ns()}"
        if args.no_graph_cache and export is not None:
            shutil.rmtree(export.folder / "optimized", ignore_errors=True)
        order = (["phases", "whole", "variant", "base", "empty"] if r % 2 == 0
                 else ["base", "variant", "whole", "empty", "phases"])
        for what in order:
            if what == "variant":
                if variant_env:
                    variant.append(run([py, "-m", "retrieval.cli", "search", text + " v", "--config",
                                        str(args.config)], what="variant", extra=variant_env)[0])
                continue
            if what == "base":
                if args.baseline is not None:
                    base.append(run([py, "-m", "retrieval.cli", "search", text + " b", "--config",
                                     str(args.config.resolve())], args.baseline.resolve(), "baseline")[0])
                    base_phases.append(json.loads(run([py, "-c", PHASES, str(args.config.resolve()), text + " bp"],
                                                      args.baseline.resolve())[1]))
                continue
            if what == "phases":
                phases.append(json.loads(run([py, "-c", PHASES, str(args.config), text + " p"])[1]))
            elif what == "whole":
                whole.append(run([py, "-m", "retrieval.cli", "search", text, "--config", str(args.config)],
                                 what="whole")[0])
            else:
                empty.append(run([py, "-c", "pass"], what="python")[0])
        log(f"round {r + 1}: whole {whole[-1]:.3f} s, " + (f"baseline {base[-1]:.3f} s, " if base else "")
            + f"python {empty[-1]:.3f} s, "
            + ", ".join(f"{k} {v[0]:.3f}" for k, v in phases[-1].items()))
    names = list(phases[0])
    result = {
        "config": str(args.config), "rounds": args.rounds, "graph_cache": not args.no_graph_cache,
        "repeat_text": args.repeat_text,
        "whole_process_s": round(statistics.median(whole), 3), "whole_process_runs_s": [round(x, 3) for x in whole],
        "baseline": str(args.baseline) if args.baseline else None,
        "baseline_whole_process_s": round(statistics.median(base), 3) if base else None,
        "baseline_runs_s": [round(x, 3) for x in base] or None,
        "round_ratios": [round(w / b, 3) for w, b in zip(whole, base, strict=False)] or None,
        "variant_env": variant_env or None,
        "variant_whole_process_s": round(statistics.median(variant), 3) if variant else None,
        "variant_runs_s": [round(x, 3) for x in variant] or None,
        "variant_round_ratios": [round(v / w, 3) for v, w in zip(variant, whole, strict=False)] or None,
        "python_s": round(statistics.median(empty), 3),
        "cpu_s": {k: round(statistics.median(v), 3) for k, v in CPU.items()},
        "cpu_runs_s": {k: [round(x, 3) for x in v] for k, v in CPU.items()},
        "cpu_ratios": [round(w / b, 3) for w, b in zip(CPU.get("whole", []), CPU.get("baseline", []), strict=False)]
        or None,
        "phase_wall_s": {n: round(statistics.median(p[n][0] for p in phases), 4) for n in names},
        "phase_cpu_s": {n: round(statistics.median(p[n][1] for p in phases), 4) for n in names},
        "phase_runs": phases,
        "baseline_phase_wall_s": {n: round(statistics.median(p[n][0] for p in base_phases), 4) for n in names}
        if base_phases else None,
        "baseline_phase_cpu_s": {n: round(statistics.median(p[n][1] for p in base_phases), 4) for n in names}
        if base_phases else None,
        "baseline_phase_runs": base_phases or None, "byte_compiled": compiled, **machine(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
