"""TransMIL's Nystrom attention under bfloat16 autocast (what `mil.fit` uses on a GPU): the masked pairs are
filled with a value of the products' own dtype. On CUDA the layer norm before the attention gives it float32
tokens while its projections give bfloat16 products; the test feeds float32 tokens the same way."""

import torch

from mil.models.transmil import NystromAttention


def test_nystrom_attention_on_float32_tokens_under_bfloat16_autocast():
    torch.manual_seed(0)
    layer = NystromAttention(dim=32, heads=4, landmarks=16).eval()
    x = torch.randn(1, 300, 32)  # more tokens than landmarks, not a multiple of them: padded pairs are masked
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(x)
    assert out.shape == (1, 300, 32)
    assert torch.isfinite(out.float()).all()
    reference = layer(x)
    assert (out.float() - reference).abs().mean() < 0.05 * reference.abs().mean() + 1e-3
