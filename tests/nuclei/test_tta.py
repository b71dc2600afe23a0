"""Test-time augmentation (four flips) in `segment`, the slide segmenter and the CLI: what runs, what it gives."""

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import nuclei
from nuclei.inference import forward_maps, predict_maps
from nuclei.segmenters import CnnSegmenter
from nuclei.slide import make_segmenter
from slidestream.cli import main


@pytest.fixture()
def counted(tiny_model):
    """The tiny model with a counter of its forward passes (a hook, removed afterwards)."""
    calls = []
    handle = tiny_model.register_forward_hook(lambda module, inputs, output: calls.append(inputs[0].shape))
    yield tiny_model, calls
    handle.remove()


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(3).integers(0, 255, (64, 96, 3), dtype=np.uint8)


def test_tta_runs_the_network_on_four_flips(counted, image):
    model, calls = counted
    plain = nuclei.segment(image, mpp=0.5, model=model, device="cpu")
    assert len(calls) == 1
    calls.clear()
    flipped = nuclei.segment(image, mpp=0.5, model=model, device="cpu", tta=True)
    assert len(calls) == 4 and plain.shape == flipped.shape == image.shape[:2]


def test_tta_maps_are_the_mean_of_the_flipped_back_maps(tiny_model, image):
    x = tiny_model.normalise(torch.from_numpy(image).permute(2, 0, 1)[None])
    with torch.no_grad():
        prob, hv, types = forward_maps(tiny_model, x, tta=True, types=True)
        p1, hv1, t1 = forward_maps(tiny_model, x, types=True)
    assert prob.shape == p1.shape and hv.shape == hv1.shape and types.shape == t1.shape
    # An untrained net is not flip-invariant: TTA changes the maps.
    assert not torch.allclose(prob, p1, atol=1e-4)
    # By hand: each flip's maps flipped back, HV x negated under a column flip and y under a row flip.
    ps, hvs = [], []
    with torch.no_grad():
        for rows, cols in ((False, False), (False, True), (True, False), (True, True)):
            dims = [d for d, f in ((2, rows), (3, cols)) if f]
            out = tiny_model(torch.flip(x, dims) if dims else x)
            p, v = torch.sigmoid(out.logits[:, 0]), out.hv
            if dims:
                p, v = torch.flip(p, [d - 1 for d in dims]), torch.flip(v, dims)
            ps.append(p)
            hvs.append(v * torch.tensor([-1.0 if cols else 1.0, -1.0 if rows else 1.0]).view(1, 2, 1, 1))
    torch.testing.assert_close(prob, torch.stack(ps).mean(0), atol=1e-5, rtol=0)
    torch.testing.assert_close(hv, torch.stack(hvs).mean(0), atol=1e-5, rtol=0)
    np.testing.assert_allclose(types.sum(1).numpy(), 1.0, atol=1e-5)  # still probabilities
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) batch, got \(3, 64, 96\)"):
        forward_maps(tiny_model, x[0], tta=True)


def test_slide_segmenter_tta_matches_predict_maps_and_is_recorded(counted, image):
    model, calls = counted
    plain, tta = CnnSegmenter(model, device="cpu"), make_segmenter(model, device="cpu", tta=True)
    assert "tta" not in plain.describe() and tta.describe()["tta"] is True  # old results keep their identity
    batch = image[None, :64, :64]
    work = tta.maps(batch)[0]
    assert len(calls) == 4
    prob, hv = predict_maps(model, np.ascontiguousarray(batch[0]), tta=True)
    np.testing.assert_allclose(work.prob, prob, atol=1e-5)
    np.testing.assert_allclose(work.hv, hv, atol=1e-5)
    assert work.types.shape[1:] == (64, 64)
    with pytest.raises(ValueError, match="tta applies to the CNN"):
        make_segmenter("classical", tta=True)


def test_cli_segment_and_evaluate_take_tta(tmp_path, tiny_model, capsys, monkeypatch):
    folder = nuclei.save_model(tiny_model, tmp_path / "m")
    seen, original = [], nuclei.segment  # what ran, not what the JSON says ran

    def spy(*args, **kwargs):
        seen.append(kwargs.get("tta"))
        return original(*args, **kwargs)

    monkeypatch.setattr(nuclei, "segment", spy)
    tile = nuclei.datasets.synthetic_tiles(1, size=64, seed=9).images[0]
    Image.fromarray(tile).save(tmp_path / "tile.png")
    for flag in ([], ["--tta"]):
        out = tmp_path / f"labels{len(flag)}.tif"
        assert main(["nuclei", "segment", str(tmp_path / "tile.png"), "--mpp", "0.5", "--model", str(folder),
                     "--device", "cpu", "-o", str(out), *flag]) == 0  # fmt: skip
        assert tifffile.imread(out).shape == (64, 64)
    assert seen == [False, True]
    seen.clear()
    with pytest.raises(SystemExit, match="--tta applies to the CNN, not to --classical"):
        main(["nuclei", "segment", str(tmp_path / "tile.png"), "--mpp", "0.5", "--classical", "--tta", "-o",
              str(tmp_path / "c.tif")])  # fmt: skip
    scores = tmp_path / "scores.json"
    assert main(["nuclei", "evaluate", "--synthetic", "1", "--model", str(folder), "--device", "cpu", "--tta",
                 "--json", str(scores)]) == 0  # fmt: skip
    assert json.loads(scores.read_text())["tta"] is True
    assert seen and all(tta is True for tta in seen)  # every CNN call of evaluate ran with the flips
    assert "test-time augmentation (4 flips)" in capsys.readouterr().out


def test_counts_benchmark_counts_what_the_thresholds_let_through(tmp_path, tiny_model, capsys):
    from benchmarks.nuclei_counts import count_nuclei
    from benchmarks.nuclei_counts import main as counts_main

    flat = nuclei.create_model(decoder_channels=(16, 16, 8, 8)).eval()
    flat.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():
        flat.np_head.weight.zero_()
        flat.np_head.bias.fill_(1.0)  # probability 0.73 everywhere
    image = np.full((64, 64, 3), 200, np.uint8)
    assert count_nuclei(flat, image)["foreground_share"] == 1.0  # 0.73 > the default foreground 0.5
    flat.postprocess = nuclei.PostprocessConfig(foreground=0.9)
    none = count_nuclei(flat, image)
    assert none["nuclei"] == 0 and none["foreground_share"] == 0.0
    folder = nuclei.save_model(flat, tmp_path / "m")
    slide = Path(__file__).resolve().parents[1] / "data" / "CMU-1-Small-Region.svs"
    figures = counts_main(["--model", str(folder), "--slide", str(slide), "--size", "200", "--tta"])
    assert set(figures) == {str(folder), f"{folder} tta"} and figures[str(folder)]["nuclei"] == 0
    assert "level-0 box 200 x 200 px" in capsys.readouterr().out


def test_tta_benchmark_scores_with_and_without_and_refuses_nothing_to_score(tmp_path, tiny_model, capsys):
    from benchmarks.nuclei_tta import main as tta_main

    folder = str(nuclei.save_model(tiny_model, tmp_path / "m"))
    figures = tta_main(["--model", folder, "--synthetic", "2", "--synthetic-seed", "5", "--threads", "1"])
    synthetic = figures["synthetic"]
    assert set(synthetic) == {"plain_pq", "tta_pq", "time_ratio", "pq_gain_per_image"}
    assert len(synthetic["pq_gain_per_image"]) == 2 and synthetic["time_ratio"] > 0
    out = capsys.readouterr().out
    assert "synthetic tiles, seed 5: 2 images" in out and "PQ gain per image" in out
    with pytest.raises(SystemExit, match="--synthetic must be 0 or more"):
        tta_main(["--model", folder, "--synthetic", "-1"])
    with pytest.raises(SystemExit, match="nothing to score"):
        tta_main(["--model", folder, "--synthetic", "0"])
