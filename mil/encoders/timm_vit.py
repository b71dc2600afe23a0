"""Recipes for pathology ViTs published as timm state dicts (keys as timm names them: no mapping needed).

Architectures and keyword arguments are those of each model card's `timm.create_model` call.
"""

from __future__ import annotations

from dataclasses import replace

from torch import nn

from mil._timm_import import import_timm
from mil.encoders.recipe import Recipe, timm_model
from mil.encoders.registry import register_recipe

__all__ = ["gigapath", "hoptimus0", "hoptimus1", "lunit_vits8", "uni_v1", "uni_v2", "virchow2"]

_HOPTIMUS_MEAN = (0.707223, 0.578729, 0.703617)
_HOPTIMUS_STD = (0.211883, 0.230117, 0.177517)
_LUNIT_MEAN = (0.70322989, 0.53606487, 0.66096631)
_LUNIT_STD = (0.21716536, 0.26081574, 0.20723464)
_NON_COMMERCIAL = "CC-BY-NC-ND-4.0 (gated; non-commercial)"


def _swiglu():
    return import_timm().layers.SwiGLUPacked


def _swiglu_vit(architecture: str, kwargs) -> nn.Module:
    """A timm ViT with a packed SwiGLU MLP and SiLU, as UNI2-h and Virchow2 pass them to `create_model`
    (the classes are resolved here so that importing the recipes does not import timm)."""
    return timm_model(architecture, {**kwargs, "mlp_layer": _swiglu(), "act_layer": nn.SiLU})


@register_recipe
def uni_v1() -> Recipe:
    """UNI (Mahmood Lab, 2024): ViT-L/16, DINOv2 on 100k H&E slides; class token."""
    return Recipe(
        "vit_large_patch16_224", 1024, {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": True},
        licence=_NON_COMMERCIAL, source="huggingface.co/MahmoodLab/UNI (pytorch_model.bin)",
    )  # fmt: skip


@register_recipe
def uni_v2() -> Recipe:
    """UNI2-h (Mahmood Lab, 2025): ViT-H/14 with SwiGLU and 8 register tokens; class token."""
    return Recipe(
        "vit_giant_patch14_224", 1536,
        {"img_size": 224, "patch_size": 14, "depth": 24, "num_heads": 24, "init_values": 1e-5, "embed_dim": 1536,
         "mlp_ratio": 2.66667 * 2, "no_embed_class": True, "reg_tokens": 8, "dynamic_img_size": True},
        licence=_NON_COMMERCIAL, source="huggingface.co/MahmoodLab/UNI2-h (pytorch_model.bin)", build=_swiglu_vit,
    )  # fmt: skip


@register_recipe
def virchow2() -> Recipe:
    """Virchow2 (Paige, 2024): ViT-H/14 with SwiGLU and 4 register tokens; class token ++ mean patch token."""
    return Recipe(
        "vit_huge_patch14_224", 2560,
        {"img_size": 224, "init_values": 1e-5, "mlp_ratio": 5.3375, "reg_tokens": 4, "global_pool": "",
         "dynamic_img_size": True},
        licence=_NON_COMMERCIAL, source="huggingface.co/paige-ai/Virchow2 (pytorch_model.bin)",
        pooling="class+mean patch", build=_swiglu_vit,
    )  # fmt: skip


@register_recipe
def hoptimus0() -> Recipe:
    """H-optimus-0 (Bioptimus, 2024): ViT-g/14 with 4 register tokens, DINOv2 on 500k slides; class token."""
    return Recipe(
        "vit_giant_patch14_reg4_dinov2", 1536, {"img_size": 224, "init_values": 1e-5, "dynamic_img_size": False},
        mean=_HOPTIMUS_MEAN, std=_HOPTIMUS_STD, licence="Apache-2.0",
        source="huggingface.co/bioptimus/H-optimus-0 (pytorch_model.bin)",
    )  # fmt: skip


@register_recipe
def hoptimus1() -> Recipe:
    """H-optimus-1 (Bioptimus, 2025): H-optimus-0's ViT-g/14 trained on over 1M slides; class token."""
    return replace(hoptimus0(), licence="non-commercial (Bioptimus licence; gated)",
                   source="huggingface.co/bioptimus/H-optimus-1 (pytorch_model.bin)")  # fmt: skip


@register_recipe
def gigapath() -> Recipe:
    """Prov-GigaPath tile encoder (Microsoft / Providence, 2024): DINOv2 ViT-g with 16 px patches; class token."""
    return Recipe(
        "vit_giant_patch14_dinov2", 1536,
        {"img_size": 224, "in_chans": 3, "patch_size": 16, "embed_dim": 1536, "depth": 40, "num_heads": 24,
         "init_values": 1e-5, "mlp_ratio": 5.33334},
        licence="Apache-2.0 (gated)", source="huggingface.co/prov-gigapath/prov-gigapath (pytorch_model.bin)",
    )  # fmt: skip


@register_recipe
def lunit_vits8() -> Recipe:
    """Lunit DINO ViT-S/8 (Kang et al., CVPR 2023): 19M TCGA + in-house patches; class token."""
    return Recipe(
        "vit_small_patch8_224", 384, {"img_size": 224}, mean=_LUNIT_MEAN, std=_LUNIT_STD,
        licence="non-commercial (Lunit benchmark licence)",
        source="github.com/lunit-io/benchmark-ssl-pathology releases (dino_vit_small_patch8_ep200.torch)",
    )  # fmt: skip
