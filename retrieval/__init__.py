"""clipdex: multimodal image-text retrieval over CLIP encoders and Qdrant."""

from retrieval.errors import ClipdexError
from retrieval.settings import Settings, load_settings

__all__ = ["ClipdexError", "Settings", "load_settings"]
