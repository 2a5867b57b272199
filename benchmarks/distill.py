"""Distillation, measured: quality on Fashion-MNIST and image-tower speed at real-photo scale.

Quality: a teacher (``--teacher``, default the folder configs/fmnist-teacher.toml trains), a student
with the bundled model's architecture (``[train.model_cfg]`` of configs/fmnist-tiny.toml) distilled
from it by ``clipdex distill``, and the same student trained from scratch by ``clipdex train`` with
the same budget (epochs, batch, lr, seed), all scored on the full test split: zero-shot accuracy,
t2i/i2i precision@10, and the k-NN / linear probes learnt from the training split.

Speed: image-tower images/s at 224 px, random weights, through clipdex's TorchEncoder (the CPU path of
``[model] precision = auto``), for ViT-B-32 (the teacher) and students, in alternating rounds.

    .venv/bin/python benchmarks/distill.py --json                 # both parts
    .venv/bin/python benchmarks/distill.py --json --part speed    # speed only (no dataset needed)

Prints one JSON line with ``--json``. Trained models and teacher vectors are kept under .bench/distill/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from retrieval import datasets  # noqa: E402
from retrieval.evaluate import evaluate  # noqa: E402
from retrieval.model.torch_backend import WEIGHTS_NAME, TorchEncoder, open_clip, save_model_folder  # noqa: E402
from retrieval.settings import DistillSettings, ModelSettings, load_settings  # noqa: E402
from retrieval.training.targets import TARGETS_NAME  # noqa: E402

BENCH = REPO / ".bench" / "distill"
METRICS = ("zero_shot_accuracy", "t2i_precision@10", "i2i_precision@10", "knn_accuracy", "linear_probe_accuracy")
_TINY_TEXT = {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 1}
STUDENTS = {  # open_clip image towers to time against the teacher, ViT-B-32
    "ViT-S-32": "ViT-S-32",
    "ViT-Ti-32 (width 192, [distill.student_cfg])": {"embed_dim": 512, "vision_cfg": {
        "image_size": 224, "patch_size": 32, "width": 192, "layers": 12, "head_width": 64}, "text_cfg": _TINY_TEXT},
    "MobileCLIP2-S0 (reparameterised)": "MobileCLIP2-S0",
    "timm efficientnet_b0 trunk": {"embed_dim": 512, "vision_cfg": {
        "timm_model_name": "efficientnet_b0", "timm_model_pretrained": False, "timm_pool": "avg",
        "timm_proj": "linear", "image_size": 224}, "text_cfg": _TINY_TEXT},
}


def _log(msg: str) -> None:
    print(f"[distill bench] {msg}", file=sys.stderr, flush=True)


# --- quality -------------------------------------------------------------------------------------

def scores(model_dir: Path, train_set, test_set) -> dict[str, float]:
    """The five metrics of one model folder (fp32, the training arithmetic), cached beside its weights."""
    weights = model_dir / WEIGHTS_NAME
    key = f"{weights.stat().st_size}:{weights.stat().st_mtime_ns}"
    cache = model_dir / "bench-scores.json"
    if cache.is_file() and (cached := json.loads(cache.read_text())).get("key") == key:
        return cached["scores"]
    enc = TorchEncoder.load(ModelSettings(name=f"local-dir:{model_dir}", pretrained="", device="cpu", precision="fp32"))
    torch.set_num_threads(1)
    out = evaluate(enc, test_set, train=train_set)
    result = {k: round(out[k], 4) for k in METRICS}
    cache.write_text(json.dumps({"key": key, "scores": result}))
    return result


def _train_seconds(folder: Path) -> float | None:
    """The training time a model folder records (its first run; the teacher pass is not included)."""
    config = json.loads((folder / "open_clip_config.json").read_text())
    return config.get("clipdex", {}).get("train_seconds")


def quality(args: argparse.Namespace) -> dict:
    from retrieval.training import train
    from retrieval.training.distill import distill

    tiny = load_settings(REPO / "configs" / "fmnist-tiny.toml").train
    teacher = Path(args.teacher)
    if not (teacher / "open_clip_config.json").is_file():
        _log(f"training the teacher (configs/fmnist-teacher.toml) into {teacher}")
        cfg = load_settings(REPO / "configs" / "fmnist-teacher.toml").train
        train(cfg.model_copy(update={"output": str(teacher)}), progress=False, log=_log)
    budget = {"epochs": args.epochs, "batch_size": tiny.batch_size, "lr": tiny.lr, "seed": tiny.seed,
              "warmup_steps": tiny.warmup_steps, "threads": 1, "weight_decay": tiny.weight_decay}
    seed = tiny.seed if args.distill_seed is None else args.distill_seed
    loss = {"lr": args.distill_lr or tiny.lr, "contrastive_weight": args.contrastive_weight,
            "temperature": args.temperature, "seed": seed}
    student = BENCH / (f"student-e{args.epochs:g}-v{args.views}-lr{loss['lr']:g}"
                       f"-cw{args.contrastive_weight:g}-t{args.temperature:g}"
                       + (f"-s{seed}" if seed != tiny.seed else ""))
    if not (student / "open_clip_config.json").is_file() or args.retrain:
        ckpt = BENCH / f".{student.name}.checkpoints"
        shared = BENCH / f"teacher-vectors-v{args.views}.pt"  # one teacher pass serves every student variant
        if shared.is_file() and not (ckpt / TARGETS_NAME).is_file():
            ckpt.mkdir(parents=True, exist_ok=True)
            shutil.copy(shared, ckpt / TARGETS_NAME)  # used only if its key (teacher, files, views) matches
        dcfg = DistillSettings(teacher=f"local-dir:{teacher}", student_cfg=tiny.model_cfg, source="fashion-mnist",
                               output=str(student), checkpoint_dir=str(ckpt), views=args.views,
                               aug_scale_min=tiny.aug_scale_min, aug_flip=tiny.aug_flip, checkpoint_every=500,
                               **(budget | loss))
        distill(dcfg, progress=False, log=_log)
        if not shared.is_file():
            shutil.copy(ckpt / TARGETS_NAME, shared)
    scratch_budget = budget | ({"lr": args.scratch_lr} if args.scratch_lr else {})
    scratch = Path(args.scratch) if args.scratch else BENCH / (
        f"scratch-e{args.epochs:g}" + (f"-lr{args.scratch_lr:g}" if args.scratch_lr else ""))
    if not (scratch / "open_clip_config.json").is_file() or (args.retrain and not args.scratch):
        train(tiny.model_copy(update={**scratch_budget, "output": str(scratch), "checkpoint_dir": ""}),
              progress=False, log=_log)
    train_set, test_set = datasets.fashion_mnist(None, "train"), datasets.fashion_mnist(None, "test")
    result = {}
    for name, folder in (("teacher", teacher), ("distilled", student), ("scratch", scratch)):
        _log(f"evaluating {name} ({folder})")
        result[name] = scores(folder, train_set, test_set)
    result["distilled_minus_teacher"] = {k: round(result["distilled"][k] - result["teacher"][k], 4) for k in METRICS}
    result["distilled_minus_scratch"] = {k: round(result["distilled"][k] - result["scratch"][k], 4) for k in METRICS}
    result["budget"] = {**budget, "views": args.views, "distill_loss": loss, "scratch_lr": scratch_budget["lr"],
                        "train_seconds": {name: _train_seconds(folder) for name, folder in
                                          (("teacher", teacher), ("distilled", student), ("scratch", scratch))}}
    result["goals"] = {
        "distilled_within_1pt_of_teacher": all(v >= -0.01 for v in result["distilled_minus_teacher"].values()),
        "distilled_beats_scratch_zero_shot": result["distilled_minus_scratch"]["zero_shot_accuracy"] > 0}
    return result


# --- speed ---------------------------------------------------------------------------------------

def _encoder(spec: str | dict, folder: Path) -> TorchEncoder:
    if isinstance(spec, str):
        return TorchEncoder.load(ModelSettings(name=spec, pretrained="", device="cpu"))
    torch.manual_seed(0)
    save_model_folder(open_clip.CLIP(**spec), spec, folder)
    return TorchEncoder.load(ModelSettings(name=f"local-dir:{folder}", pretrained="", device="cpu"))


def _cpu() -> str:
    """The CPU model and core count: int8 speed depends on the instruction set (VNNI or not)."""
    try:
        name = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name"))
    except (OSError, StopIteration):
        name = platform.processor() or platform.machine()
    return f"{name}, {os.cpu_count()} cores"


def speed(args: argparse.Namespace) -> dict:
    from timm.utils.model import reparameterize_model

    with tempfile.TemporaryDirectory() as tmp:
        encoders = {"ViT-B-32 (teacher)": _encoder("ViT-B-32", Path(tmp))}
        for i, (label, spec) in enumerate(STUDENTS.items()):
            enc = _encoder(spec, Path(tmp) / str(i))
            if "MobileCLIP" in label:
                enc.model.visual = reparameterize_model(enc.model.visual.eval())
            encoders[label] = enc
        torch.set_num_threads(args.threads)
        pixels = torch.randn(args.images, 3, 224, 224)
        rounds: dict[str, list[float]] = {name: [] for name in encoders}
        for enc in encoders.values():  # warm-up
            enc.encode_images(pixels[:2])
        for r in range(args.rounds):
            order = list(encoders) if r % 2 == 0 else list(reversed(encoders))
            for name in order:
                t0 = time.perf_counter()
                encoders[name].encode_images(pixels)
                rounds[name].append(round(args.images / (time.perf_counter() - t0), 2))
            _log(f"round {r + 1}: {json.dumps({k: v[-1] for k, v in rounds.items()})}")
        teacher = "ViT-B-32 (teacher)"
        mean = {k: round(sum(v) / len(v), 2) for k, v in rounds.items()}
        ratio = {k: round(mean[k] / mean[teacher], 2) for k in rounds if k != teacher}
        pair = {k: [round(a / b, 2) for a, b in zip(rounds[k], rounds[teacher], strict=True)]
                for k in rounds if k != teacher}
        precision = {k: e.precision for k, e in encoders.items()}
        return {"cpu": _cpu(), "images": args.images, "rounds": args.rounds, "threads": args.threads, "img_per_s": mean,
                "per_round": rounds, "speedup_vs_teacher": ratio, "per_round_speedup": pair,
                "precision": precision, "goal_3x": any(v >= 3 for v in ratio.values())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print one JSON line")
    parser.add_argument("--part", choices=["all", "quality", "speed"], default="all")
    parser.add_argument("--teacher", default=str(BENCH / "fmnist-teacher"), help="teacher model folder")
    parser.add_argument("--scratch", default="", help="an existing from-scratch student with this budget")
    parser.add_argument("--epochs", type=float, default=6.0, help="student budget (distilled and from scratch)")
    parser.add_argument("--views", type=int, default=4, help="cached teacher views per training image")
    parser.add_argument("--distill-seed", type=int, default=None,
                        help="the distilled student's seed (default: the recipe's)")
    parser.add_argument("--distill-lr", type=float, default=0.01,
                        help="the distilled student's learning rate (0 = the from-scratch recipe's)")
    parser.add_argument("--scratch-lr", type=float, default=0.0,
                        help="the from-scratch student's learning rate (0 = the bundled recipe's)")
    parser.add_argument("--contrastive-weight", type=float, default=0.0, help="[distill] contrastive_weight")
    parser.add_argument("--temperature", type=float, default=0.05, help="[distill] temperature")
    parser.add_argument("--retrain", action="store_true", help="retrain students even if present")
    parser.add_argument("--images", type=int, default=32, help="speed: images per timed batch")
    parser.add_argument("--rounds", type=int, default=3, help="speed: alternating rounds")
    parser.add_argument("--threads", type=int, default=2, help="speed: torch threads")
    args = parser.parse_args()
    out: dict = {}
    if args.part in ("all", "speed"):
        out["speed"] = speed(args)
    if args.part in ("all", "quality"):
        out["quality"] = quality(args)
    print(json.dumps(out) if args.json else json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
