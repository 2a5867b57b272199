"""clipdex: multimodal image-text retrieval over CLIP encoders and Qdrant."""

from retrieval.errors import ClipdexError
from retrieval.settings import Settings, load_settings

__all__ = ["ClipdexError", "Index", "Settings", "load_settings"]


def __getattr__(name: str):  # Index pulls in torch and open_clip: import it only when asked for
    if name == "Index":
        from retrieval.index import Index

        return Index
    raise AttributeError(name)
