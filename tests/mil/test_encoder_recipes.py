"""Published encoder recipes, without downloads: random checkpoints in each published layout load through the
recipe, give the published embedding width, and change the output with the weights.

The layouts are hand-typed manifests in encoder_layouts/ (each says where its key names and shapes come from).
Full-size layouts are checked on the meta device; loading and the forward pass use checkpoints cut short (one
transformer block; two blocks per Swin stage; one per ResNet stage), so every recipe runs in seconds. `-m slow` runs the biggest recipe at full size on one tile.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mil
from mil.encoders import EncoderError, fit_checkpoint, get_recipe, list_recipes, recipe_layout
from tests.mil.published_checkpoints import NAMES, published_state, write_checkpoint

# Fast tests cut every stack of blocks short and build the architecture to match; CTransPath keeps two
# blocks per stage so that a shifted-window block (with its stored attention mask) is still read.
_CUTS = {"ctranspath": (2, {"depths": (2, 2, 2, 2)}), "resnet50_trunc": (1, {"layers": (1, 1, 1, 1)})}
_VIT_CUT = (1, {"depth": 1})


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """checkpoint(name, seed=0): a cut-short random checkpoint in `name`'s published format, written once."""
    folder = tmp_path_factory.mktemp("checkpoints")
    written: dict[tuple[str, int], Path] = {}

    def get(name: str, seed: int = 0) -> Path:
        if (name, seed) not in written:
            written[name, seed] = write_checkpoint(name, folder / f"{name}-{seed}", _cut(name)[0], seed=seed)
        return written[name, seed]

    return get


def _cut(name: str) -> tuple[int, dict]:
    """Blocks kept per stack, and the architecture arguments that build the model cut the same way."""
    return _CUTS.get(name, _VIT_CUT)


def test_every_recipe_has_a_published_layout():
    assert NAMES == sorted(r.name for r in list_recipes())
    names = mil.list_encoders()
    assert set(NAMES) <= set(names) and "stain_stats" in names


def test_list_encoders_details():
    rows = {row.name: row for row in mil.list_encoders(details=True)}
    assert rows["virchow2"].dim == 2560 and rows["uni_v1"].dim == 1024 and rows["resnet50_trunc"].dim == 1024
    assert rows["ctranspath"].mpp == 1.0 and rows["uni_v1"].input_size == 224
    assert "MahmoodLab/UNI" in rows["uni_v1"].source and "NC" in rows["uni_v1"].licence
    assert rows["stain_stats"].input_size is None and rows["stain_stats"].dim == 53
    assert all(row.licence and row.source for row in rows.values())


@pytest.mark.parametrize("name", NAMES)
def test_published_layout_fits_the_full_size_recipe(name):
    recipe = get_recipe(name)
    with torch.device("meta"):
        model = recipe.model()
    _, check = fit_checkpoint(recipe, published_state(name, device="meta"), model)
    assert check.ok, check.message()


@pytest.mark.parametrize("name", NAMES)
def test_recipe_loads_its_published_checkpoint(name, checkpoint):
    overrides = _cut(name)[1]
    tiles = torch.randint(
        0, 256, (1, 3, 256, 256), dtype=torch.uint8, generator=torch.Generator().manual_seed(0)
    )
    outputs = []
    for seed in (0, 1):
        path = checkpoint(name, seed)
        encoder = mil.create_encoder(name, weights=path, **overrides)
        assert encoder.weights_hash != "random-init-seed-0" and not encoder.random_weights
        with torch.inference_mode():
            out = encoder(tiles)
        assert out.shape == (1, get_recipe(name).dim) and torch.isfinite(out).all()
        outputs.append(out)
    assert not torch.allclose(outputs[0], outputs[1]), "the weights file did not change the features"


def test_transformers_attention_is_fused_in_query_key_value_order(checkpoint):
    path = checkpoint("phikon")
    from safetensors.torch import load_file

    state = load_file(str(path))
    encoder = mil.create_encoder("phikon", weights=path, depth=1)
    qkv = encoder.model.blocks[0].attn.qkv.weight
    parts = [state[f"encoder.layer.0.attention.attention.{p}.weight"] for p in ("query", "key", "value")]
    torch.testing.assert_close(qkv, torch.cat(parts))
    torch.testing.assert_close(encoder.model.norm.weight, state["layernorm.weight"])


def test_virchow2_embedding_is_class_token_and_mean_patch_token(checkpoint):
    encoder = mil.create_encoder("virchow2", weights=checkpoint("virchow2"), depth=1)
    x = encoder.preprocess(torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8))
    with torch.inference_mode():
        tokens = encoder.model.model.forward_features(x)  # (1, 1 + 4 registers + 256 patches, 1280)
        out = encoder.model(x)
    assert tokens.shape == (1, 261, 1280)
    torch.testing.assert_close(out[:, :1280], tokens[:, 0])
    torch.testing.assert_close(out[:, 1280:], tokens[:, 5:].mean(1))


def test_checkpoint_of_another_recipe_names_the_recipe_and_the_closest(checkpoint):
    uni2 = checkpoint("uni_v2")
    with pytest.raises(EncoderError, match=r"recipe 'uni_v1'.*unexpected keys \[reg_token\].*uni_v2"):
        mil.create_encoder("uni_v1", weights=uni2, depth=1)
    # A UNI checkpoint under a plain timm name (the example): the keys point to the recipe.
    uni = checkpoint("uni_v1")
    with pytest.raises(EncoderError, match=r"unexpected keys \[.*ls1\.gamma.*match recipe 'uni_v1'"):
        mil.create_encoder("vit_small_patch16_224", weights=uni)
    # A transformers checkpoint where a timm one is expected.
    phikon = checkpoint("phikon")
    with pytest.raises(EncoderError, match=r"recipe 'uni_v1'.*use --encoder phikon"):
        mil.create_encoder("uni_v1", weights=phikon, depth=1)


def test_same_layouts_are_all_named(checkpoint):
    path = checkpoint("hoptimus1")
    with pytest.raises(EncoderError, match=r"match recipe 'hoptimus0' or 'hoptimus1'"):
        mil.create_encoder("gigapath", weights=path, depth=1)


def test_buffers_recomputed_after_a_meta_build_match_a_real_build():
    from mil.encoders.loading import empty_from_meta

    recipe, small = get_recipe("ctranspath"), {"depths": (2, 2, 2, 2), "embed_dim": 48}  # shifted windows too
    real = dict(recipe.model(small).named_buffers())
    with torch.device("meta"):
        meta = recipe.model(small)
    rebuilt = dict(empty_from_meta(meta).named_buffers())
    computed = [k for k in real if "attn_mask" in k or "relative_position_index" in k]
    assert computed and real.keys() == rebuilt.keys()
    for key in computed:
        assert torch.equal(real[key], rebuilt[key]), key


def test_recipes_need_weights_unless_random_is_asked_for():
    message = (r"uni_v1 needs --weights FILE \(a random initialisation gives meaningless features\); pass "
               r"--random-weights to use one anyway, for testing")  # fmt: skip
    with pytest.raises(EncoderError, match=message):
        mil.create_encoder("uni_v1")
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        encoder = mil.create_encoder("lunit_vits8", random_weights=True)
    assert encoder.random_weights and encoder.describe()["random_weights"] is True
    assert encoder.describe()["weights_hash"] == "random-init-seed-0"
    with pytest.raises(EncoderError, match="both weights and random_weights"):
        mil.create_encoder("lunit_vits8", weights="x.pth", random_weights=True)


@pytest.mark.slow
def test_biggest_recipe_runs_on_one_tile_on_cpu():
    name = max(
        list_recipes(), key=lambda r: sum(torch.Size(s).numel() for s in recipe_layout(r).values())
    ).name
    with pytest.warns(UserWarning, match="RANDOM WEIGHTS"):
        encoder = mil.create_encoder(name, random_weights=True)
    with torch.inference_mode():
        out = encoder(torch.randint(0, 256, (1, 3, 224, 224), dtype=torch.uint8))
    assert out.shape == (1, get_recipe(name).dim) and torch.isfinite(out).all()
    peak_kb = int(next(line for line in Path("/proc/self/status").read_text().splitlines()
                       if line.startswith("VmHWM")).split()[1])  # fmt: skip
    assert peak_kb / 1024 < 12_000  # 1.1B float32 parameters are 4.5 GB
