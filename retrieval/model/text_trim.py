"""Text towers at the real token length instead of the padded context.

A CLIP text tower under a causal mask lets token *i* attend only to tokens ``<= i``, and it pools
the features of one token (the end-of-text token for ``argmax``/``eos`` pooling, the first for
``first``). Everything after the pooled token therefore cannot change the result: cutting the
context right after it (with the positional embedding and the mask sliced to match) gives the same
vector, and a 6-token query costs 6/77 of the padded one. Towers that attend both ways, pool the
mean or the last position, append a class token (CoCa) or are not open_clip's own (Hugging Face
text models) are run at full length, unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EXACT_POOLS = ("argmax", "eos", "first")


@dataclass(frozen=True)
class TextTower:
    """The parts of an open_clip text tower that a trimmed forward pass needs."""

    owner: nn.Module  # the CLIP model itself, or its ``text`` TextTransformer
    pool_type: str
    eos_id: int | None

    def pooled_positions(self, tokens: torch.Tensor) -> torch.Tensor:
        """The index of the pooled token in each row, as open_clip's ``text_global_pool`` picks it."""
        if self.pool_type == "argmax":
            return tokens.argmax(dim=-1)
        if self.pool_type == "eos":
            return (tokens == self.eos_id).int().argmax(dim=-1)
        return torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features of ``tokens`` (padded rows), computed on the shortest exact prefix."""
        length = min(int(self.pooled_positions(tokens).max()) + 1, tokens.shape[1])
        return self.encode_prefix(tokens[:, :length])

    def encode_prefix(self, tokens: torch.Tensor) -> torch.Tensor:
        """Text features of rows already cut after their pooled token (any length up to the context; the
        ONNX export traces this, with the length as a dynamic axis)."""
        from open_clip.transformer import text_global_pool

        tower = self.owner
        length = tokens.shape[1]
        cast = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(tokens).to(cast) + tower.positional_embedding[:length].to(cast)
        x = tower.transformer(x, attn_mask=tower.attn_mask[:length, :length])
        x = tower.ln_final(x)
        x = text_global_pool(x, tokens, self.pool_type, eos_token_id=self.eos_id)
        projection = tower.text_projection
        if projection is None:
            return x
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection


def text_tower(model: nn.Module) -> TextTower | None:
    """The trimmable text tower of ``model``, or None where only the full context is exact."""
    text = getattr(model, "text", None)
    if text is not None:
        if type(text).__name__ != "TextTransformer" or getattr(text, "cls_emb", None) is not None \
                or getattr(text, "use_pad_mask", False):
            return None  # HF text models, CoCa's appended class token, bidirectional padding masks
        owner, pool, eos = text, text.pool_type, getattr(text, "eos_id", None)
    elif all(hasattr(model, a) for a in ("transformer", "token_embedding", "positional_embedding", "ln_final")):
        owner, pool, eos = model, getattr(model, "text_pool_type", "argmax"), getattr(model, "text_eos_id", None)
    else:
        return None
    mask = getattr(owner, "attn_mask", None)
    if not isinstance(mask, torch.Tensor) or mask.ndim != 2 or pool not in EXACT_POOLS:
        return None  # not causal, or pooled over every position: the padding takes part
    if not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)):
        return None  # some other mask than the causal one
    return TextTower(owner, pool, eos)


def encode_text(model: nn.Module, tower: TextTower | None, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, trimmed to the real length where that is exact."""
    return model.encode_text(tokens) if tower is None else tower.encode(tokens)
