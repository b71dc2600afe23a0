"""Recipes for pathology ViTs published as Hugging Face `transformers` checkpoints (ViTModel, Dinov2Model),
read into the equivalent timm ViT without installing `transformers`.

The key map renames `embeddings.*`, `encoder.layer.N.*` and `layernorm.*` to timm's names and concatenates the
separate query / key / value projections into timm's fused `qkv`. Both `transformers` layouts are understood:
ViT (`layernorm_before`, `intermediate.dense`, `output.dense`) and DINOv2 (`norm1`, `mlp.fc1`, `layer_scale1`).
"""

from __future__ import annotations

import re
from functools import partial

import torch
from torch import nn

from mil.encoders.recipe import Recipe
from mil.encoders.registry import register_recipe

__all__ = ["hf_vit_to_timm", "phikon", "phikon_v2"]

_RENAMES = [
    (r"^embeddings\.cls_token$", "cls_token"),
    (r"^embeddings\.position_embeddings$", "pos_embed"),
    (r"^embeddings\.patch_embeddings\.projection\.", "patch_embed.proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"blocks.\1.attn.proj."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"blocks.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"blocks.\1.mlp.fc2."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"blocks.\1.norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"blocks.\1.norm2."),
    (r"^encoder\.layer\.(\d+)\.norm([12])\.", r"blocks.\1.norm\2."),
    (r"^encoder\.layer\.(\d+)\.mlp\.", r"blocks.\1.mlp."),
    (r"^encoder\.layer\.(\d+)\.layer_scale([12])\.lambda1$", r"blocks.\1.ls\2.gamma"),
    (r"^layernorm\.", "norm."),
]
_QKV = re.compile(r"^encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\.(weight|bias)$")
_UNUSED = re.compile(r"^(pooler\.|embeddings\.mask_token$)")  # the pooler head and DINOv2's masking token
_MODEL_PREFIXES = ("vit.", "dinov2.")  # ViTForImageClassification / Dinov2 task models wrap the model


def hf_vit_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A `transformers` ViT / DINOv2 state dict under timm's VisionTransformer names. Keys it does not know
    are kept as they are (and then named as unexpected); a state dict with no `transformers` keys at all is
    a ValueError."""
    for prefix in _MODEL_PREFIXES:
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items()}
    if not any(k.startswith(("embeddings.", "encoder.layer.")) for k in state):
        raise ValueError("no transformers ViT keys (embeddings.*, encoder.layer.N.*)")
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[str, str], dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if _UNUSED.match(key):
            continue
        match = _QKV.match(key)
        if match:
            layer, part, kind = match.groups()
            qkv.setdefault((layer, kind), {})[part] = value
            continue
        for pattern, replacement in _RENAMES:
            new, n = re.subn(pattern, replacement, key)
            if n:
                key = new
                break
        out[key] = value
    for (layer, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            missing = sorted({"query", "key", "value"} - set(parts))
            raise ValueError(f"layer {layer} has no attention {kind} for {missing}")
        out[f"blocks.{layer}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]])
    return out


@register_recipe
def phikon() -> Recipe:
    """Phikon (Owkin, 2023): ViT-B/16, iBOT on 40M TCGA tiles, `transformers` ViTModel; class token."""
    return Recipe(
        "vit_base_patch16_224", 768, {"img_size": 224, "norm_layer": partial(nn.LayerNorm, eps=1e-12)},
        licence="Owkin non-commercial licence", source="huggingface.co/owkin/phikon (model.safetensors)",
        checkpoint="transformers ViTModel state dict", key_map=hf_vit_to_timm,
    )  # fmt: skip


@register_recipe
def phikon_v2() -> Recipe:
    """Phikon-v2 (Owkin, 2024): ViT-L/16, DINOv2 on 460M tiles, `transformers` Dinov2Model; class token."""
    return Recipe(
        "vit_large_patch16_224", 1024, {"img_size": 224, "init_values": 1e-5},
        licence="Owkin non-commercial licence", source="huggingface.co/owkin/phikon-v2 (model.safetensors)",
        checkpoint="transformers Dinov2Model state dict", key_map=hf_vit_to_timm,
    )  # fmt: skip
