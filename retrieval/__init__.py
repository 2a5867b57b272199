"""clipdex: multimodal image-text retrieval over CLIP encoders and Qdrant."""

import os

# OpenMP threads that sleep instead of spinning while they wait: on a CPU shared with other work, spinning
# threads steal the cores the other thread needs (a text query at 2 threads: 500 ms spinning, 13 ms passive;
# README, Performance). Read by libgomp when torch first loads, so it is set before anything imports torch.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
# clipdex uses no pydantic plugin, and looking for them reads the metadata of every installed package (torch's
# venv: ~0.05 s of CPU in every command, a third of a `clipdex search` answered by a server). Set it to "" to
# have plugins of your own loaded.
os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")

# First of all: on CPU-only torch, torchvision (and so open_clip) imports only after this shim (an import
# hook that runs when torchvision is first imported, so a `clipdex status` never imports torch).
from retrieval import _torchvision_shim  # noqa: F401  isort: skip
from retrieval.errors import ClipdexError
from retrieval.settings import Settings, load_settings

__all__ = ["ClipdexError", "Index", "Settings", "load_settings"]


def __getattr__(name: str):  # Index pulls in open_clip and the stores: import it only when asked for
    if name == "Index":
        from retrieval.index import Index

        return Index
    raise AttributeError(name)
