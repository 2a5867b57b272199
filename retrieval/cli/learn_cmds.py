"""``clipdex train``, ``clipdex distill`` and ``clipdex eval``: thin shells over retrieval.training and
retrieval.evaluate."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from retrieval.cli.common import Run, cli, collection_option, common_options, echo
from retrieval.errors import ClipdexError
from retrieval.settings import ModelSettings

_PATH_FIELDS = ("data", "coco_images", "output", "checkpoint_dir")


def _cwd_path(value: str | None) -> str | None:
    """A path argument made absolute against the working directory ("" and None stay as they are)."""
    if not value:
        return value
    try:
        return str(Path(value).expanduser().resolve())
    except OSError as exc:  # a link that cannot be followed (/proc/1/root), a name too long
        raise ClipdexError(f"cannot use {value}: {exc.strerror or exc}") from None


def _cwd_paths(values: dict[str, Any]) -> dict[str, Any]:
    return {k: (_cwd_path(v) if k in _PATH_FIELDS and isinstance(v, str) else v) for k, v in values.items()}


def _schedule_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """The optimisation schedule options `train` and `distill` share (their [train]/[distill] keys)."""
    for option in reversed((
        click.option("--epochs", type=float, default=None),
        click.option("--steps", "max_steps", type=int, default=None,
                     help="Total optimizer steps (overrides --epochs)."),
        click.option("--batch-size", type=int, default=None),
        click.option("--lr", type=float, default=None),
        click.option("--warmup-steps", type=int, default=None),
        click.option("--seed", type=int, default=None),
    )):
        fn = option(fn)
    return fn


@cli.command("train")
@common_options
@click.option("--source", type=click.Choice(["fashion-mnist", "captions", "coco", "images"]), default=None,
              help="Data source [train.source].")
@click.option("--data", default=None, help="Folder or file with the training data [train.data].")
@click.option("--coco-images", default=None, help="Image folder of a COCO captions JSON (default: its folder).")
@click.option("--objective", type=click.Choice(["auto", "clip", "simclr"]), default=None,
              help="clip: image-text; simclr: image-image (two augmentations); auto: by source.")
@click.option("-o", "--output", default=None, help="Model folder to write [train.output].")
@click.option("--arch", default=None, help="open_clip architecture or local-dir:PATH to start from.")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file for --arch.")
@_schedule_options
@click.option("--freeze-image/--train-image", default=None, help="Freeze the image tower (LiT-style).")
@click.option("--freeze-text/--train-text", default=None, help="Freeze the text tower.")
@click.option("--checkpoint-every", type=int, default=None, help="Save a resumable checkpoint every N steps.")
@click.option("--checkpoint-dir", default=None, help="Where resumable checkpoints go.")
@click.option("--threads", type=int, default=None, help="CPU threads (0 = all cores).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--stop-after", type=int, default=None, help="Checkpoint and stop after N steps (then --resume).")
@click.option("--save-init", is_flag=True, help="Write the untrained (initial) model and stop: a baseline.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def train_cmd(run: Run, resume: bool, stop_after: int | None, save_init: bool, quiet: bool,
              **overrides: Any) -> None:
    """Train or fine-tune a model by contrastive learning; writes a folder `local-dir:` can load."""
    from retrieval.training import train

    if stop_after is not None and stop_after < 1:
        raise ClipdexError("--stop-after must be at least 1")
    settings = run.settings.with_overrides(train=_cwd_paths(overrides))

    def log(msg: str) -> None:
        if not quiet:
            echo(f"clipdex train: {msg}", err=True)

    result = train(settings.train, resume=resume, stop_after=stop_after, init_only=save_init,
                   progress=not quiet and sys.stderr.isatty(), log=log)
    _emit_loop_result(run, result, "trained")


def _emit_loop_result(run: Run, result: Any, verb: str, **extra: Any) -> None:
    """What `train` and `distill` print: the model folder and how to use it, or where a stopped run is."""
    obj = {"output": str(result.output) if result.output else None, "steps": result.steps,
           "total_steps": result.total_steps, "loss": result.loss if result.loss == result.loss else None,
           "seconds": round(result.seconds, 1), **extra}

    def human() -> None:
        if result.output is None:
            echo(f"stopped at step {result.steps}/{result.total_steps}; continue with --resume")
        else:
            echo(f"{verb} {result.steps} steps in {result.seconds:.0f}s (loss {result.loss:.4f}); "
                       f"model folder: {result.output}")
            echo(f'use it with [model] name = "local-dir:{result.output}", pretrained = ""')

    run.emit(obj, human)


def _model_name(value: str | None) -> str | None:
    """A model folder given as a plain path means ``local-dir:`` that folder."""
    if value and not value.startswith("local-dir:") and Path(value).expanduser().is_dir():
        return f"local-dir:{Path(value).expanduser().resolve()}"
    if value and value.startswith("local-dir:"):
        return f"local-dir:{Path(value[len('local-dir:'):]).expanduser().resolve()}"
    return value


@cli.command("distill")
@common_options
@click.option("--teacher", default=None, help="Teacher: open_clip architecture, local-dir:PATH or a model folder.")
@click.option("--teacher-pretrained", default=None, help="Pretrained tag or checkpoint file of an architecture.")
@click.option("--student", default=None,
              help="Student: open_clip architecture or local-dir:PATH (default: the [distill.student_cfg] table).")
@click.option("--student-pretrained", default=None, help="Pretrained tag or checkpoint file to start the student from.")
@click.option("--project/--no-project", default=None,
              help="Let a student with another output size learn a projection to the teacher's.")
@click.option("--source", type=click.Choice(["images", "fashion-mnist"]), default=None,
              help="images: every image below --data; fashion-mnist: its training split (IDX folder).")
@click.option("--data", multiple=True, help="Image folder (repeatable) [distill.data].")
@click.option("--from-collection", default=None, callback=collection_option,
              help="Take the teacher's vectors from this clipdex collection (of the teacher): no teacher pass.")
@click.option("-o", "--output", default=None, help="Model folder to write [distill.output].")
@click.option("--views", type=int, default=None, help="Cached teacher views per image: itself + augmented crops.")
@_schedule_options
@click.option("--checkpoint-every", type=int, default=None, help="Save a resumable checkpoint every N steps.")
@click.option("--checkpoint-dir", default=None, help="Where resumable checkpoints and teacher vectors go.")
@click.option("--threads", type=int, default=None, help="CPU threads (0 = all cores).")
@click.option("--resume", is_flag=True, help="Continue an interrupted run from its last checkpoint.")
@click.option("--stop-after", type=int, default=None, help="Checkpoint and stop after N steps (then --resume).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def distill_cmd(run: Run, resume: bool, stop_after: int | None, quiet: bool, data: tuple[str, ...],
                **overrides: Any) -> None:
    """Train a small image tower to reproduce a teacher's image vectors (no labels needed); the
    model folder pairs it with the teacher's text tower."""
    from retrieval.training.distill import distill

    if stop_after is not None and stop_after < 1:
        raise ClipdexError("--stop-after must be at least 1")
    overrides["teacher"] = _model_name(overrides["teacher"])
    overrides["student"] = _model_name(overrides["student"])
    overrides["data"] = [str(Path(d).expanduser().resolve()) for d in data] if data else None
    settings = run.settings.with_overrides(distill=_cwd_paths(overrides))

    def log(msg: str) -> None:
        if not quiet:
            echo(f"clipdex distill: {msg}", err=True)

    result = distill(settings.distill, settings, resume=resume, stop_after=stop_after,
                     progress=not quiet and sys.stderr.isatty(), log=log)
    _emit_loop_result(run, result, "distilled", teacher_pass=result.teacher_pass)


def _eval_set(dataset: str, data: str | None, coco_images: str | None, split: str):
    from retrieval import datasets

    if dataset == "fashion-mnist":
        return datasets.fashion_mnist(data or None, split)
    if not data:
        raise ClipdexError(f"--data is required for --dataset {dataset}")
    if dataset == "captions":
        return datasets.captioned_folder(data)
    if dataset == "coco":
        return datasets.coco_captions(data, coco_images)
    return datasets.labelled_folder(data)


@cli.command("eval")
@common_options
@click.option("--dataset", type=click.Choice(["fashion-mnist", "captions", "coco", "labelled-folder"]),
              default="fashion-mnist", show_default=True,
              help="fashion-mnist (IDX), captions (captioned folder), coco (captions JSON), "
                   "labelled-folder (one sub-folder per class).")
@click.option("--data", default=None, help="Dataset folder or file (fashion-mnist: the IDX folder).")
@click.option("--coco-images", default=None, help="Image folder of a COCO captions JSON (default: its folder).")
@click.option("--split", type=click.Choice(["train", "test"]), default="test", show_default=True)
@click.option("--limit", type=click.IntRange(min=0), default=0, help="Only the first N images (0 = all).")
@click.option("--model", "model_name", default=None,
              help="Model to evaluate: open_clip name, local-dir:PATH or a model folder [model.name].")
@click.option("--pretrained", default=None, help="Pretrained tag or checkpoint file [model.pretrained].")
@click.option("-o", "--output", "out_file", default=None, help="Also write the metrics JSON to this file.")
@click.option("--probes/--no-probes", default=True, show_default=True,
              help="Labelled sets: k-NN and linear-probe accuracy (fashion-mnist: learnt from the train split; "
                   "labelled-folder: from 4 of every 5 images per class, scored on the 5th).")
def eval_cmd(run: Run, dataset: str, data: str | None, coco_images: str | None, split: str, limit: int,
             model_name: str | None, pretrained: str | None, out_file: str | None, probes: bool) -> None:
    """Measure retrieval quality (recall@K, zero-shot accuracy, precision@10, mAP) and, where labels
    exist, representation probes (k-NN, linear) of a model."""
    from retrieval.evaluate import evaluate
    from retrieval.model.torch_backend import TorchEncoder

    data, coco_images, out_file = (_cwd_path(p) for p in (data, coco_images, out_file))  # resolved once, here
    model = run.settings.model
    if model_name is not None:
        if not model_name.startswith("local-dir:") and Path(model_name).is_dir():
            model_name = f"local-dir:{Path(model_name).resolve()}"
        model = ModelSettings(**{**model.model_dump(), "name": model_name,
                                 "pretrained": "" if model_name.startswith("local-dir:") else model.pretrained})
    if pretrained is not None:
        model = ModelSettings(**{**model.model_dump(), "pretrained": pretrained})
    if out_file and (Path(out_file).is_dir() or not Path(out_file).resolve().parent.is_dir()):
        raise ClipdexError(f"--output must be a file in an existing folder: {out_file}")
    encoder = TorchEncoder.load(model)  # the model first: a bad --model is reported before any data is read
    eval_set = _eval_set(dataset, data, coco_images, split).subset(limit)
    train_set = None
    if probes and dataset == "fashion-mnist" and split == "test":
        train_set = _eval_set(dataset, data, coco_images, "train")
    holdout = probes and dataset == "labelled-folder"
    metrics = {k: round(v, 6) for k, v in evaluate(encoder, eval_set, train=train_set, holdout=holdout).items()}
    if out_file:
        target = Path(out_file)
        fd, tmp = tempfile.mkstemp(dir=target.parent if str(target.parent) else ".", prefix=".eval-")
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps(metrics, indent=2) + "\n")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)

    def human() -> None:
        echo(f"{encoder.identity.describe()} on {eval_set.name} ({len(eval_set)} images)")
        for key, value in metrics.items():
            echo(f"  {key:<20} {value:.4f}")

    run.emit(metrics, human)
