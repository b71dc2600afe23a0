import pytest

import nuclei


@pytest.fixture(scope="session")
def tiny_model():
    """An untrained small model (random init): for shapes, plumbing and I/O, not for quality."""
    import torch

    torch.manual_seed(0)
    return nuclei.create_model(decoder_channels=(16, 16, 8, 8)).eval()
