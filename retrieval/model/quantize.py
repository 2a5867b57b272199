"""Dynamic int8 quantization of open_clip models for CPU inference (``[model] precision = "int8"``).

Every ``nn.Linear`` of both towers becomes an int8 dynamically quantized Linear (weights int8 per
tensor, activations quantized per batch, int32 accumulation through fbgemm/oneDNN), the attention
projections included: open_clip's ``nn.MultiheadAttention`` keeps its in-projection as a bare
weight and reads its out-projection's weight directly, which ``quantize_dynamic`` cannot touch, so
each self-attention module is first swapped for :class:`SelfAttention` (two ``nn.Linear`` and
``scaled_dot_product_attention``; same weights, same result in fp32).
"""

from __future__ import annotations

import torch
from torch import nn


class SelfAttention(nn.Module):
    """``nn.MultiheadAttention`` (self-attention, no dropout) rebuilt from two ``nn.Linear``.

    Same call signature and result as the module it replaces, but both projections are ordinary
    Linear layers that dynamic quantization can convert.
    """

    def __init__(self, mha: nn.MultiheadAttention):
        super().__init__()
        dim = mha.embed_dim
        self.num_heads = mha.num_heads
        self.batch_first = mha.batch_first
        self.in_proj = nn.Linear(dim, 3 * dim, bias=mha.in_proj_bias is not None)
        self.out_proj = nn.Linear(dim, dim, bias=mha.out_proj.bias is not None)
        with torch.no_grad():
            self.in_proj.weight.copy_(mha.in_proj_weight)
            self.out_proj.weight.copy_(mha.out_proj.weight)
            if mha.in_proj_bias is not None:
                self.in_proj.bias.copy_(mha.in_proj_bias)
            if mha.out_proj.bias is not None:
                self.out_proj.bias.copy_(mha.out_proj.bias)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, need_weights: bool = False,
                attn_mask: torch.Tensor | None = None, **_: object) -> tuple[torch.Tensor, None]:
        if key is not query or value is not query:
            raise RuntimeError("SelfAttention handles self-attention only")
        x = query if self.batch_first else query.transpose(0, 1)  # (B, L, D)
        batch, length, dim = x.shape
        q, k, v = self.in_proj(x).view(batch, length, 3, self.num_heads, dim // self.num_heads).permute(
            2, 0, 3, 1, 4)
        out = nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        out = self.out_proj(out.transpose(1, 2).reshape(batch, length, dim))
        return (out if self.batch_first else out.transpose(0, 1)), None


def _swappable(module: nn.Module) -> bool:
    return (isinstance(module, nn.MultiheadAttention) and module._qkv_same_embed_dim
            and module.in_proj_weight is not None and module.bias_k is None and not module.add_zero_attn
            and module.dropout == 0.0)


def swap_attention(model: nn.Module) -> int:
    """Replace every self-attention ``nn.MultiheadAttention`` below ``model``; returns how many."""
    swapped = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if _swappable(child) and type(parent).__name__ == "ResidualAttentionBlock":
                setattr(parent, name, SelfAttention(child))
                swapped += 1
    return swapped


def quantize_int8(model: nn.Module) -> nn.Module:
    """Dynamic int8 quantization (weights int8, activations quantized per batch) of every Linear."""
    import warnings

    engines = torch.backends.quantized.supported_engines
    for engine in ("x86", "fbgemm", "onednn"):
        if engine in engines:
            torch.backends.quantized.engine = engine
            break
    swap_attention(model)
    with warnings.catch_warnings():  # torch.ao.quantization announces its move to torchao; it still works
        warnings.simplefilter("ignore")
        from torch.ao.quantization import quantize_dynamic

        quantized = quantize_dynamic(model.eval(), {nn.Linear}, dtype=torch.qint8, inplace=True)
    for module in quantized.modules():
        if type(module).__name__ == "Linear" and callable(getattr(module, "weight", None)):
            module.int8_original_dtype = torch.float32  # open_clip's get_cast_dtype() reads it
    return quantized


def tower_modules(model: nn.Module, tower: str) -> list[nn.Module]:
    """The submodules that make up ``tower`` ("image" or "text") of an open_clip model."""
    if tower == "image":
        return [model.visual]
    if isinstance(getattr(model, "text", None), nn.Module):
        return [model.text]
    parts = [getattr(model, "transformer", None), getattr(model, "text_projection", None)]
    return [p for p in parts if isinstance(p, nn.Module)]


def quantize_tower(model: nn.Module, tower: str) -> None:
    """Quantize one tower in place, so a text-only search never pays for converting the image tower."""
    for module in tower_modules(model, tower):
        if isinstance(module, nn.Linear):  # a bare Linear projection: replace it on its owner
            for name, child in model.named_children():
                if child is module:
                    setattr(model, name, quantize_int8(nn.Sequential(module))[0])
        else:
            quantize_int8(module)
