"""clipdex against rclip 3.3.0, whole process from cold (issue 8: "benchmarks/peers.py --json").

Everything lives under a cache folder (``.bench/peers`` by default) and is made once:

* ``rclip-venv/``: a virtual environment with ``rclip==3.3.0`` from PyPI (ONNX Runtime inside);
* ``vit-b-32-256/``: an open_clip ViT-B-32-256 with random weights (seed 0) as a ``local-dir:`` folder;
* ``rclip-data/``: the same weights exported to ONNX where rclip looks for its model
  (``$RCLIP_DATADIR/ViT-B-32-256-datacomp_s34b_b86k/{visual,textual}.onnx`` and
  ``$RCLIP_DATADIR/tokenizer/bpe_simple_vocab_16e6.txt.gz``): with all files present rclip downloads
  nothing. The export needs the ``onnx`` package, installed with pip into ``onnx-export/`` for this
  script only (clipdex itself does not use it).

Each round runs, in rotating order, ``rclip QUERY`` in the image folder (index from an empty database,
then one search), ``clipdex ingest`` into an empty store at the default settings, and the same at
``precision = "fp32"`` and ``"int8"`` and with ``ingest_engine = "torch"`` (``clipdex_torch``: the image tower on
torch where auto picks OpenVINO; auto is bf16 images on a CPU with AMX or AVX512-BF16); images/s = images / wall
time of the whole process. The model is exported (``clipdex model export``) before the first round, as a first
search would do: an export is made once per model and serves both queries and the OpenVINO ingest engine.
After the rounds, the search-only runs: ``rclip -n QUERY`` and ``clipdex search QUERY`` on the indexes just
built (median of 3).
The clipdex model is exported to ONNX Runtime (``clipdex model export``) before the search-only runs, as
its first search would do; ``--search-only`` skips the ingest rounds (each tool indexes once, untimed)
and runs ``--rounds`` alternating search-only rounds instead.
Prints one JSON line on stdout (with the CPU's flags); progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

RCLIP_VERSION = "3.3.0"
RCLIP_MODEL_SUBDIR = "ViT-B-32-256-datacomp_s34b_b86k"  # rclip.model_download.MODEL_SUBDIR
RCLIP_VOCAB = "tokenizer/bpe_simple_vocab_16e6.txt.gz"  # rclip.model_download.TOKENIZER_VOCAB
ARCH = "ViT-B-32-256"
QUERY = "a photo of a dog"


def log(msg: str) -> None:
    print(f"[peers-bench] {msg}", file=sys.stderr, flush=True)


def ensure_rclip(cache: Path) -> Path:
    """``rclip`` 3.3.0 in its own virtual environment; returns its executable."""
    venv = cache / "rclip-venv"
    exe = venv / "bin" / "rclip"
    if exe.is_file():
        return exe
    log(f"installing rclip=={RCLIP_VERSION} into {venv}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"rclip=={RCLIP_VERSION}"], check=True)
    return exe


def ensure_models(cache: Path) -> tuple[Path, Path]:
    """The random-init ViT-B-32-256 as a clipdex model folder and as rclip's ONNX files (same weights)."""
    model_dir, data_dir = cache / "vit-b-32-256", cache / "rclip-data"
    onnx_dir = data_dir / RCLIP_MODEL_SUBDIR
    vocab = data_dir / RCLIP_VOCAB
    if (model_dir / "open_clip_model.safetensors").is_file() and (onnx_dir / "textual.onnx").is_file() \
            and vocab.is_file():
        return model_dir, data_dir
    import torch

    from retrieval.model.torch_backend import open_clip, save_model_folder

    log(f"saving a random-init {ARCH} to {model_dir} and exporting it to ONNX in {onnx_dir}")
    torch.manual_seed(0)
    model = open_clip.create_model(ARCH).eval()
    cfg = open_clip.get_model_config(ARCH)
    preprocess = {"size": 256, "mode": "RGB", "mean": list(open_clip.OPENAI_DATASET_MEAN),
                  "std": list(open_clip.OPENAI_DATASET_STD), "interpolation": "bicubic", "resize_mode": "shortest"}
    save_model_folder(model, cfg, model_dir, preprocess)
    _export_onnx(model, onnx_dir, cache / "onnx-export")
    vocab.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz", vocab)
    return model_dir, data_dir


def _export_onnx(model: object, folder: Path, onnx_pkgs: Path) -> None:
    """``visual.onnx`` (input [N,3,256,256]) and ``textual.onnx`` (input [N,77] int64), named as rclip runs them."""
    import importlib.util
    import warnings

    import torch

    if importlib.util.find_spec("onnx") is None and not (onnx_pkgs / "onnx").is_dir():  # clipdex pins onnx now
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--target", str(onnx_pkgs), "onnx"], check=True)
    sys.path.append(str(onnx_pkgs))  # after the venv's own packages: only `onnx` itself comes from here

    class Tower(torch.nn.Module):
        def __init__(self, fn: object):
            super().__init__()
            self.model, self.fn = model, fn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fn(x)

    folder.mkdir(parents=True, exist_ok=True)
    axes = {"input": {0: "n"}, "output": {0: "n"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, fn, example in (("visual", model.encode_image, torch.randn(1, 3, 256, 256)),
                                  ("textual", model.encode_text, torch.zeros(1, 77, dtype=torch.long))):
            tmp = folder / f"{name}.onnx.tmp"
            torch.onnx.export(Tower(fn), (example,), str(tmp), input_names=["input"], output_names=["output"],
                              dynamic_axes=axes, dynamo=False, opset_version=17)
            os.replace(tmp, folder / f"{name}.onnx")


def write_config(path: Path, model_dir: Path, store: Path, precision: str, ingest_engine: str = "auto") -> Path:
    path.write_text("\n".join(["[model]", f'name = "local-dir:{model_dir}"', 'pretrained = ""',
                               f'precision = "{precision}"', f'ingest_engine = "{ingest_engine}"', "[store]",
                               f'path = "{store}"', 'collection = "peers"', ""]))
    return path


def timed(cmd: list[str], **kw: object) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)  # type: ignore[call-overload]
    dt = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:3])} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    return dt, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=REPO / ".bench" / "peers")
    parser.add_argument("--folder", type=Path, default=REPO / ".bench" / "jpegs-1024x768")
    parser.add_argument("--search-only", action="store_true", help="time only the one-shot search processes")
    parser.add_argument("--json", action="store_true", help="print one JSON line (always printed)")
    args = parser.parse_args(argv)

    from benchmarks.ingest import ensure_images
    from benchmarks.machine import byte_compile, machine

    compiled = byte_compile()  # as an installed clipdex (and rclip's wheel) has its .pyc files
    cache = args.cache.resolve()
    cache.mkdir(parents=True, exist_ok=True)
    rclip = ensure_rclip(cache)
    model_dir, data_dir = ensure_models(cache)
    folder = ensure_images(args.folder.resolve(), args.images)
    rclip_env = {**os.environ, "RCLIP_DATADIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    clipdex = [sys.executable, "-m", "retrieval.cli"]
    first_query = {**os.environ, "CLIPDEX_TEXT_CACHE": "0"}  # every round a first query, as rclip's (no text cache)
    work = Path(tempfile.mkdtemp(prefix="clipdex-peers-"))
    configs = {p: write_config(work / f"{p}.toml", model_dir, work / f"store-{p}", p) for p in ("auto", "fp32", "int8")}
    configs["torch"] = write_config(work / "torch.toml", model_dir, work / "store-torch", "auto", "torch")

    def run_rclip() -> float:
        for db in data_dir.glob("db.sqlite3*"):
            db.unlink()
        dt, out = timed([str(rclip), "-f", QUERY], cwd=folder, env=rclip_env)
        if len(out.strip().splitlines()) != 10:
            raise RuntimeError(f"rclip printed no results: {out[:200]!r}")
        return dt

    def run_clipdex(precision: str) -> float:
        """One whole ``clipdex ingest`` process; ``precision``: a config's name (auto, fp32, int8, or torch: auto
        with ``ingest_engine = "torch"``)."""
        shutil.rmtree(work / f"store-{precision}", ignore_errors=True)
        dt, out = timed([*clipdex, "ingest", str(folder), "--config", str(configs[precision]), "--json"], cwd=REPO)
        if json.loads(out)["indexed"] != args.images:
            raise RuntimeError(f"clipdex indexed {out}")
        return dt

    def search_rounds(rounds: int) -> dict[str, list[float]]:
        """One-shot search processes on the indexes built, alternating who goes first."""
        timed([*clipdex, "model", "export", "--config", str(configs["auto"])], cwd=REPO)  # as a first search would
        runs: dict[str, list[float]] = {"rclip": [], "clipdex": []}
        search = {"rclip": lambda: timed([str(rclip), "-n", "-f", QUERY], cwd=folder, env=rclip_env)[0],
                  "clipdex": lambda: timed([*clipdex, "search", QUERY, "--config", str(configs["auto"])], cwd=REPO,
                                           env=first_query)[0]}
        for r in range(rounds):
            for name in (["rclip", "clipdex"] if r % 2 == 0 else ["clipdex", "rclip"]):
                runs[name].append(search[name]())
            log(f"search round {r + 1}: rclip {runs['rclip'][-1]:.2f} s, clipdex {runs['clipdex'][-1]:.2f} s")
        return runs

    if args.search_only:
        try:
            run_rclip()
            run_clipdex("auto")
            search = search_rounds(args.rounds)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        rclip_s, clipdex_s = statistics.median(search["rclip"]), statistics.median(search["clipdex"])
        print(json.dumps({"images": args.images, "model": f"{ARCH} (random init)", "query": QUERY,
                          "rclip_search_s": round(rclip_s, 3), "clipdex_search_s": round(clipdex_s, 3),
                          "search_ratio": round(clipdex_s / rclip_s, 3),
                          "round_ratios": [round(c / r, 3) for c, r in zip(search["clipdex"], search["rclip"],
                                                                          strict=True)],
                          "search_runs_s": {k: [round(x, 3) for x in v] for k, v in search.items()},
                          "byte_compiled": compiled, **machine()}), flush=True)
        return 0

    tools = {"rclip": run_rclip, "clipdex": lambda: run_clipdex("auto"), "clipdex_fp32": lambda: run_clipdex("fp32"),
             "clipdex_int8": lambda: run_clipdex("int8"), "clipdex_torch": lambda: run_clipdex("torch")}
    timed([*clipdex, "model", "export", "--config", str(configs["auto"])], cwd=REPO)  # made once, before the clock

    names = list(tools)
    seconds: dict[str, list[float]] = {n: [] for n in names}
    rounds = []
    try:
        for r in range(args.rounds):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                seconds[name].append(tools[name]())
                log(f"round {r + 1} {name}: {args.images / seconds[name][-1]:.2f} img/s")
            rounds.append({n: round(args.images / seconds[n][-1], 2) for n in names})
        search = search_rounds(3)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    rate = {n: args.images * len(s) / sum(s) for n, s in seconds.items()}
    result = {
        "images": args.images, "model": f"{ARCH} (random init)", "rounds": rounds,
        "rclip_img_per_s": round(rate["rclip"], 2), "clipdex_img_per_s": round(rate["clipdex"], 2),
        "ratio": round(rate["clipdex"] / rate["rclip"], 3),
        "clipdex_fp32_img_per_s": round(rate["clipdex_fp32"], 2),
        "ratio_fp32": round(rate["clipdex_fp32"] / rate["rclip"], 3),
        "round_ratios": [round(r["clipdex"] / r["rclip"], 3) for r in rounds],
        "round_ratios_fp32": [round(r["clipdex_fp32"] / r["rclip"], 3) for r in rounds],
        "clipdex_int8_img_per_s": round(rate["clipdex_int8"], 2),
        "ratio_int8": round(rate["clipdex_int8"] / rate["rclip"], 3),
        "round_ratios_int8": [round(r["clipdex_int8"] / r["rclip"], 3) for r in rounds],
        "clipdex_torch_img_per_s": round(rate["clipdex_torch"], 2),
        "ratio_torch": round(rate["clipdex_torch"] / rate["rclip"], 3),
        "round_ratios_torch": [round(r["clipdex_torch"] / r["rclip"], 3) for r in rounds],
        "goal_ratio": 3.0 if machine()["amx_bf16"] else 2.0 if machine()["avx512_bf16"] else 1.5,
        "byte_compiled": compiled, **machine(),
        "rclip_search_s": round(statistics.median(search["rclip"]), 2),
        "clipdex_search_s": round(statistics.median(search["clipdex"]), 2),
        "search_runs_s": {k: [round(x, 2) for x in v] for k, v in search.items()},
        "search_ratio": round(statistics.median(search["clipdex"]) / statistics.median(search["rclip"]), 3),
        "cpu_count": os.cpu_count(), **machine(),
    }
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
