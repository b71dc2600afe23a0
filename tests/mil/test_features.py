"""extract_features: exact against the encoder, skips what is done, never mixes encoders, reads coords-only."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mil
from tiling import PatchStore, tile_slide

pytestmark = pytest.mark.filterwarnings("ignore:encoder .* RANDOM WEIGHTS")


def _direct(store: PatchStore, encoder) -> np.ndarray:
    images = torch.from_numpy(store.patches[:]).permute(0, 3, 1, 2)
    with torch.inference_mode():
        return encoder(images).numpy().astype(np.float16)


def test_features_equal_the_encoder_on_the_patches(small_store):
    encoder = mil.create_encoder("test_convnext", random_weights=True)
    array = mil.extract_features(small_store, encoder, batch_size=16, device="cpu", name="conv")
    assert array.shape == (len(small_store), encoder.dim) and array.dtype == np.float16
    assert array.chunks[0] >= min(len(small_store), 4096)
    np.testing.assert_allclose(array[:].astype(np.float32), _direct(small_store, encoder).astype(np.float32),
                               rtol=1e-2, atol=1e-2)  # fmt: skip
    description = array.attrs["description"]
    assert description["encoder"] == "test_convnext" and description["weights_hash"] == encoder.weights_hash
    assert array.attrs["complete"] is True


def test_workers_give_the_same_features(small_store):
    encoder = mil.create_encoder("stain_stats")
    a = mil.extract_features(small_store, encoder, batch_size=8, loader_workers=0, name="w0")[:]
    b = mil.extract_features(small_store, encoder, batch_size=8, loader_workers=2, name="w2")[:]
    np.testing.assert_array_equal(a, b)
    with pytest.warns(DeprecationWarning, match="'num_workers' is deprecated.*'loader_workers'"):
        c = mil.extract_features(small_store, encoder, batch_size=8, num_workers=0, name="w0")[:]
    np.testing.assert_array_equal(a, c)


def test_done_features_are_skipped_and_other_weights_recomputed(small_store, tmp_path, monkeypatch):
    encoder = mil.create_encoder("test_vit", random_weights=True)
    first = mil.extract_features(small_store, encoder, name="vit")[:]
    calls = []
    monkeypatch.setattr(
        mil.Encoder, "forward", lambda self, x: calls.append(1) or torch.zeros(len(x), self.dim)
    )
    assert np.array_equal(mil.extract_features(small_store, encoder, name="vit")[:], first)
    assert not calls  # skipped
    monkeypatch.undo()
    state = {k: v + 0.05 for k, v in encoder.model.state_dict().items()}
    torch.save(state, tmp_path / "other.pth")
    other = mil.create_encoder("test_vit", weights=tmp_path / "other.pth")
    second = mil.extract_features(small_store, other, name="vit")
    assert second.attrs["description"]["weights_hash"] == other.weights_hash
    assert not np.array_equal(second[:], first)


def test_coords_only_store_reads_from_the_slide(synthetic_slide, small_store, tmp_path):
    light = tile_slide(synthetic_slide.path, tmp_path / "light.zarr", size=64, mpp=1.0, coords_only=True)
    encoder = mil.create_encoder("stain_stats")
    a = mil.extract_features(light, encoder, name="s")[:]
    b = mil.extract_features(small_store, encoder, name="s")[:]
    np.testing.assert_array_equal(a, b)


def test_cuda_without_a_gpu_is_a_clear_error(small_store):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(RuntimeError, match="no GPU"):
        mil.extract_features(small_store, "stain_stats", device="cuda")


def test_prefetch_keeps_order_and_raises():
    from mil.features import _prefetch

    assert list(_prefetch(range(10))) == list(range(10))

    def broken():
        yield 1
        raise OSError("disk gone")

    with pytest.raises(OSError, match="disk gone"):
        list(_prefetch(broken()))
    early = _prefetch(range(1000))
    assert next(early) == 0
    early.close()  # the consumer stops early: the producer thread ends
