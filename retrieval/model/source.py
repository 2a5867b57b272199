"""Where a model comes from (an open_clip tag, a checkpoint, a ``local-dir:`` folder, an ``hf-hub:`` repo).

Checked and read without loading the model; only an architecture name needs open_clip to be checked.
"""

from __future__ import annotations

import json
from pathlib import Path

from retrieval.errors import ClipdexError
from retrieval.model import hub
from retrieval.model.weights import LOCAL_DIR
from retrieval.settings import ModelSettings

CONFIG_NAME = "open_clip_config.json"


def check_source(settings: ModelSettings) -> None:
    """Fail fast, with a fix in the message, before open_clip tries anything slow."""
    name, pretrained = settings.name, settings.pretrained
    if name.startswith(LOCAL_DIR):
        folder = Path(name[len(LOCAL_DIR) :])
        if not (folder / CONFIG_NAME).is_file():
            raise ClipdexError(f"model folder {folder} has no {CONFIG_NAME} (expected a folder written by "
                               "`clipdex train` or open_clip's save_for_hf)")
        return
    if name.startswith(hub.HF_HUB):
        repo = name[len(hub.HF_HUB) :].strip("/")
        if hub.cached_snapshot(repo) is None:
            hub.require_download(repo, f"weights of {name}", hub.CONFIG_FILE)
        return
    import open_clip  # importable: retrieval/__init__.py ran the torchvision shim first

    if name.replace("/", "-") not in open_clip.list_models():
        raise ClipdexError(f"unknown open_clip architecture '{name}' (see open_clip.list_models(), "
                           "\"hf-hub:ORG/REPO\", or name = \"local-dir:PATH\" for a saved model folder)")
    if not pretrained:
        return
    tags = [tag for arch, tag in open_clip.list_pretrained() if arch == name]
    if pretrained in tags:
        repo = (open_clip.get_pretrained_cfg(name, pretrained).get("hf_hub") or "").strip("/")
        if repo and hub.cached_file(repo, hub.WEIGHT_FILES) is None:
            hub.require_download(repo, f"pretrained weights '{pretrained}' for {name}", hub.WEIGHT_FILES[0])
        return
    if not Path(pretrained).expanduser().is_file():
        raise ClipdexError(f"model.pretrained '{pretrained}' is neither a pretrained tag of {name} "
                           f"({', '.join(tags) or 'none known'}) nor an existing checkpoint file")


def open_clip_name(settings: ModelSettings) -> str:
    """What open_clip is asked to load: a cached hub model loads from its snapshot folder, offline."""
    if settings.name.startswith(hub.HF_HUB):
        snapshot = hub.cached_snapshot(settings.name[len(hub.HF_HUB) :].strip("/"))
        if snapshot is not None:
            return f"{LOCAL_DIR}{snapshot}"
    return settings.name


def model_folder(settings: ModelSettings) -> Path | None:
    """The folder holding the model's config and weights (``local-dir:`` or a cached hub snapshot), or None."""
    name = open_clip_name(settings)
    return Path(name[len(LOCAL_DIR) :]) if name.startswith(LOCAL_DIR) else None


def folder_config(settings: ModelSettings) -> dict:
    """The ``open_clip_config.json`` of the model's folder ({} where there is none or it cannot be read)."""
    folder = model_folder(settings)
    if folder is None:
        return {}
    try:
        config = json.loads((folder / CONFIG_NAME).read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def student_of(settings: ModelSettings) -> str:
    """The ``student_of`` a ``clipdex distill`` model folder records in its config ("" elsewhere)."""
    extra = folder_config(settings).get("clipdex")
    value = extra.get("student_of", "") if isinstance(extra, dict) else ""
    return value if isinstance(value, str) else ""
