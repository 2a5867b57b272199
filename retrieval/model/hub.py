"""The Hugging Face Hub side of model loading, through huggingface_hub's own cache and offline logic.

Cached files load without any network access. Anything else needs a download: with
``HF_HUB_OFFLINE`` set, or when one quick request to the hub (``HF_ENDPOINT``, proxies from the
environment, no retries) fails, loading stops at once with one line saying how to use a local model.
"""

from __future__ import annotations

from pathlib import Path

from retrieval.errors import ClipdexError, first_line

HF_HUB = "hf-hub:"
CONFIG_FILE = "open_clip_config.json"
WEIGHT_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
PROBE_TIMEOUT_S = 5.0
FIX = ('set model.pretrained to a local checkpoint file, or model.name to "local-dir:PATH" (a folder with '
       f"{CONFIG_FILE} and {WEIGHT_FILES[0]}: copy them from the model's Hugging Face page on a machine that can "
       "reach it; docs/models.md); or try the bundled model, which needs no download: `clipdex ingest "
       "samples/fashion-mnist --config configs/demo.toml` (`make demo`)")
"""How to go on without a download: the weights put in place by hand, or the demo model that ships with clipdex."""


def cached_file(repo: str, filenames: tuple[str, ...]) -> Path | None:
    """The first of ``filenames`` in the local cache of ``repo`` (main revision), or None."""
    from huggingface_hub import try_to_load_from_cache

    for filename in filenames:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    return None


def cached_snapshot(repo: str) -> Path | None:
    """A cached snapshot folder of an open_clip hub model (config + weights): loads like ``local-dir:``."""
    config = cached_file(repo, (CONFIG_FILE,))
    weights = cached_file(repo, WEIGHT_FILES)
    if config is None or weights is None or config.parent != weights.parent:
        return None
    return config.parent


def require_download(repo: str, what: str, probe: str) -> None:
    """Raise a one-line :class:`ClipdexError` unless ``repo`` can be downloaded from now.

    ``what`` names the weights in the message; ``probe`` is a file of the repo asked for once, with a
    short timeout and no retries (a missing file still proves the hub answers).
    """
    from huggingface_hub import constants, get_hf_file_metadata, hf_hub_url
    from huggingface_hub.errors import EntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    if constants.HF_HUB_OFFLINE:
        raise ClipdexError(f"{what} are not cached and HF_HUB_OFFLINE is set; {FIX}")
    try:
        get_hf_file_metadata(hf_hub_url(repo, probe), timeout=PROBE_TIMEOUT_S)
    except RepositoryNotFoundError:
        raise ClipdexError(f"{what}: no model repository '{repo}' at {constants.ENDPOINT}; {FIX}") from None
    except EntryNotFoundError:
        return  # the hub answered; open_clip looks for the files it needs
    except OfflineModeIsEnabled:
        raise ClipdexError(f"{what} are not cached and HF_HUB_OFFLINE is set; {FIX}") from None
    except Exception as exc:  # connection refused, DNS, proxy, timeout, HTTP errors: all one line
        reason = first_line(exc)
        raise ClipdexError(f"{what} need a download from {constants.ENDPOINT}, which failed "
                           f"({reason[:200]}); {FIX}") from None
