"""Where a run keeps its state and how its result lands: resumable checkpoints and the model folder.

A checkpoint (model, optimizer, AMP scaler, RNG states, step) is written atomically to the run's
checkpoint folder. The model folder is written under a temporary name and swapped into place, and
only over a folder that is empty or that clipdex wrote: ``-o`` never deletes anything else.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from retrieval.errors import ClipdexError
from retrieval.model.torch_backend import CONFIG_NAME, WEIGHTS_NAME, save_model_folder

CHECKPOINT_NAME = "last.pt"
MODEL_FILES = {CONFIG_NAME, WEIGHTS_NAME, "eval.json"}
"""What a model folder clipdex wrote holds (``eval.json``: the metrics `make model` adds)."""


def fingerprint(settings: dict[str, Any], free: set[str], **extra: Any) -> str:
    """A short hash of the settings that must match for ``--resume`` (``free`` ones may differ)."""
    data = {k: v for k, v in settings.items() if k not in free}
    data.update(extra)
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def checkpoint_folder(output: str, checkpoint_dir: str) -> Path:
    if checkpoint_dir:
        return Path(checkpoint_dir).expanduser()
    out = Path(output).expanduser()
    return out.parent / f".{out.name}.checkpoints"


def private_folder(folder: Path) -> Path:
    """Create a folder for training state, with a ``.gitignore`` that keeps it out of git."""
    folder.mkdir(parents=True, exist_ok=True)
    ignore = folder / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")  # training state never belongs in git
    return folder


def atomic_save(obj: Any, file: Path) -> None:
    """``torch.save`` to a temporary file beside ``file``, then rename it into place."""
    private_folder(file.parent)
    fd, tmp = tempfile.mkstemp(dir=file.parent, prefix=f".{file.stem}-", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, file)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(folder: Path, state: dict[str, Any]) -> None:
    atomic_save(state, folder / CHECKPOINT_NAME)


def load_checkpoint(folder: Path, expected_fingerprint: str) -> dict[str, Any]:
    file = folder / CHECKPOINT_NAME
    if not file.is_file():
        raise ClipdexError(f"--resume: no checkpoint at {file}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=False)
    except Exception as exc:  # a truncated or foreign file
        raise ClipdexError(f"--resume: cannot read {file}: {exc}") from None
    if not isinstance(state, dict) or state.get("fingerprint") != expected_fingerprint:
        raise ClipdexError(f"--resume: {file} was written with different settings or data")
    return state


def check_output(output: Path, what: str = "--output") -> None:
    """Refuse an output path whose current content clipdex did not write (it would be replaced), or
    one whose folder cannot take a new folder (checked before training, not after it)."""
    check_writable(output, what)
    if not os.path.lexists(output):
        return
    if output.is_symlink() or not output.is_dir():
        raise ClipdexError(f"{what} {output} exists and is not a folder; choose another path")
    entries = sorted(p.name for p in output.iterdir())
    if not entries:
        return
    foreign = [name for name in entries if name not in MODEL_FILES]
    config = output / CONFIG_NAME
    try:
        written_by_clipdex = config.is_file() and "clipdex" in json.loads(config.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        written_by_clipdex = False
    if foreign or not written_by_clipdex:
        shown = ", ".join(foreign[:3]) + (" …" if len(foreign) > 3 else "") if foreign else "no clipdex model"
        raise ClipdexError(f"{what} {output} is not empty and not a clipdex model folder ({shown}); "
                           "choose a new or empty folder (it would be replaced)")


def check_writable(output: Path, what: str = "--output") -> None:
    """Make and remove a folder where ``output`` would be written (in its nearest existing parent): a path
    in /proc, a read-only disk or a name too long is a :class:`ClipdexError` now."""
    parent = Path(os.path.abspath(output)).parent
    try:
        while not parent.exists() and parent.parent != parent:
            parent = parent.parent
        os.rmdir(tempfile.mkdtemp(dir=parent, prefix=f".{output.name[:64]}.probe-"))
    except OSError as exc:
        raise ClipdexError(f"cannot write {what} {output}: {exc.strerror or exc} (in {parent})") from None


def publish(model: torch.nn.Module, model_cfg: dict, preprocess_cfg: dict, extra: dict, output: Path) -> None:
    """Write the model folder under a temporary name, then swap it into place (over a clipdex folder only)."""
    check_output(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=output.parent, prefix=f".{output.name}.tmp-"))
    old = output.parent / f".{output.name}.old-{os.getpid()}"
    try:
        save_model_folder(model, model_cfg, tmp, preprocess_cfg, extra)
        os.chmod(tmp, 0o755)  # mkdtemp makes it private; a model folder is meant to be shared
        for file in tmp.iterdir():
            os.chmod(file, 0o644)
        if output.exists():
            os.replace(output, old)
        os.replace(tmp, output)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
