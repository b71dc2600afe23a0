"""Slides a lab brings that are not 8-bit RGB or not whole (issue 14): each gets a clear answer, never a traceback."""

from __future__ import annotations

import builtins
import os
import signal
import warnings

import numpy as np
import pytest

import wsi
from tests.conftest import CMU
from tests.wsi import bad_files
from wsi.samples import WINDOW_PERCENTILES, IntensityWindow


@pytest.fixture
def no_hang():
    """Fail (instead of hanging the suite) when something blocks for more than 10 s."""

    def timeout(*_):
        raise TimeoutError("blocked for more than 10 s")

    previous = signal.signal(signal.SIGALRM, timeout)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.mark.parametrize("tiled", [False, True])
def test_gray16_reads_as_rgb_through_the_documented_window(tmp_path, tiled):
    path = tmp_path / "gray16.tif"
    image = bad_files.gray16_tiff(path, size=(1024, 768), tiled=tiled)  # small: the window sees every pixel
    with wsi.open_slide(path) as slide:
        assert slide.meta.backend == "tiffslide" and slide.meta.channels == 1
        assert slide.meta.modality == "brightfield" and slide.meta.intensity.startswith("uint16: linear")
        region = slide.read_region((0, 0), 0, (1024, 768))
        assert region.dtype == np.uint8 and region.shape == (768, 1024, 3)
        assert (region[..., 0] == region[..., 1]).all() and (region[..., 1] == region[..., 2]).all()
        lo, hi = np.percentile(image, WINDOW_PERCENTILES)
        expected = np.clip(np.rint((image.astype(np.float32) - lo) * (255 / (hi - lo))), 0, 255)
        assert np.abs(region[..., 0].astype(int) - expected).max() <= 1
        assert region[..., 0].min() == 0 and region[..., 0].max() == 255  # the window spans the stored range
        assert slide.read((100, 100), (200, 200), mpp=1.0).shape == (100, 100, 3)
        assert slide.thumbnail(128).shape == (96, 128, 3)
    # openslide would keep only the high byte: it declines, and says why when it is forced.
    with pytest.raises(wsi.UnsupportedSlideError, match=r"gray16\.tif.*uint16"):
        wsi.open_slide(path, backend="openslide")


def test_large_levels_set_the_window_from_a_grid_of_boxes(tmp_path):
    path = tmp_path / "big16.tif"
    image = bad_files.gray16_tiff(path, size=(2000, 1500), tiled=True)
    with wsi.open_slide(path) as slide:
        region = slide.read_region((0, 0), 0, (2000, 1500))[..., 0]
    dark, bright = image <= np.percentile(image, 1), image >= np.percentile(image, 99)
    # Sampled boxes may miss the very darkest pixels: near, not at, the full window's 0 and 255.
    assert region[dark].max() <= 25 and region[bright].min() >= 250


def test_intensity_window_is_per_channel_and_checks_its_shape():
    sample = np.stack([np.arange(1000), np.arange(1000) * 10], axis=-1).reshape(10, 100, 2).astype(np.uint16)
    window = IntensityWindow.from_sample(sample)
    assert window.lo[1] == pytest.approx(10 * window.lo[0]) and window.hi[1] == pytest.approx(
        10 * window.hi[0]
    )
    mapped = window.apply(sample)
    assert (mapped[..., 0] == mapped[..., 1]).all() and mapped.min() == 0 and mapped.max() == 255
    with pytest.raises(ValueError, match=r"\(H, W, 2\)"):
        window.apply(sample[..., :1])


def test_multiplex_qptiff_meta_pixels_and_refused_tissue_detection(tmp_path):
    import tiling

    path = tmp_path / "multiplex.qptiff"
    planes = bad_files.qptiff(path)
    with wsi.open_slide(path) as slide:
        meta = slide.meta
        assert (meta.channels, meta.channel_names, meta.modality) == (3, bad_files.CHANNELS, "fluorescence")
        assert meta.to_dict()["channel_names"] == list(bad_files.CHANNELS) and meta.level_count == 2
        # The documented display: channels 0, 1, 2 as red, green, blue.
        region = slide.read_region((300, 200), 0, (64, 32))
        assert np.array_equal(region, np.stack([p[200:232, 300:364] for p in planes], axis=-1))
        half = slide.read_region((0, 0), 1, (16, 16))
        assert np.array_equal(half[..., 1], planes[1][::2, ::2][:16, :16])
        with pytest.raises(
            wsi.ModalityError, match=r"multiplex\.qptiff.*fluorescence.*DAPI, CD8, PanCK.*--roi"
        ):
            tiling.detect_tissue(slide)
    with pytest.raises(wsi.UnsupportedSlideError, match="3 channel planes"):
        wsi.open_slide(path, backend="openslide")  # it would read the first channel only


@pytest.mark.parametrize("fraction", [0.5, 0.9])
@pytest.mark.parametrize("backend", [None, "openslide", "tiffslide"])
def test_truncated_svs_is_unreadable_and_says_so(tmp_path, caplog, fraction, backend):
    path = bad_files.truncated_copy(tmp_path / "cut.svs", CMU, fraction)
    with pytest.raises(
        wsi.UnreadableSlideError, match=r"cut\.svs: looks truncated.*beyond the end"
    ) as caught:
        wsi.open_slide(path, backend=backend)
    assert caught.value.path == str(path) and str(caught.value).count("invalid") == 1
    assert not [r for r in caplog.records if r.name == "tifffile"]  # in the message; never reaches a handler


def test_tifffile_complaints_become_one_slide_warning_each(tmp_path, caplog):
    path = bad_files.complaining_tiff(tmp_path / "odd.tif")
    for backend in (None, "tiffslide"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with wsi.open_slide(path, backend=backend) as slide:
                assert slide.read_region((0, 0), 0, (4, 4))[0, 0].tolist() == [240, 240, 240]
                slide.thumbnail(64)
        said = [str(w.message) for w in caught if issubclass(w.category, wsi.SlideWarning)]
        assert (
            len(said) == 1 and said[0].startswith(f"{path}: tifffile: ") and "invalid value offset" in said[0]
        )
        assert "@" not in said[0]  # no object address
    assert not [r for r in caplog.records if r.name == "tifffile"]  # never reaches a handler (the console)


def test_fifo_is_refused_without_being_opened(tmp_path, no_hang):
    path = bad_files.fifo(tmp_path / "x.svs")
    for backend in (None, "openslide", "tiffslide"):
        with pytest.raises(
            wsi.UnsupportedSlideError, match=r"x\.svs: is a named pipe \(FIFO\), not a regular"
        ):
            wsi.open_slide(path, backend=backend)
    assert wsi.file_kind(path) == "named pipe (FIFO)"


def test_dangling_link_and_directory(tmp_path):
    link = bad_files.dangling_link(tmp_path / "gone.svs")
    with pytest.raises(
        wsi.SlideNotFoundError, match=r"gone\.svs: dangling symbolic link to .*gone-forever\.svs"
    ):
        wsi.open_slide(link)
    (tmp_path / "folder.svs").mkdir()
    with pytest.raises(wsi.SlideNotFoundError, match="is a directory"):
        wsi.open_slide(tmp_path / "folder.svs")


def test_permission_denied_is_reported_as_such(tmp_path, monkeypatch):
    path = tmp_path / "locked.svs"
    path.write_bytes(CMU.read_bytes())
    if os.geteuid() != 0:  # root reads anything: simulate what another user sees
        path.chmod(0)
    else:

        def denied(file, *args, **kwargs):
            if str(file) == str(path):
                raise PermissionError(13, "Permission denied", str(file))
            return builtins.open(file, *args, **kwargs)

        monkeypatch.setattr(wsi.files, "open", denied, raising=False)
    with pytest.raises(wsi.UnreadableSlideError, match=r"locked\.svs: permission denied"):
        wsi.open_slide(path)


def test_a_lone_dicom_that_is_no_slide_fails_naming_it(tmp_path):
    path = bad_files.lone_dicom(tmp_path / "scan.dcm")
    with pytest.raises(wsi.UnsupportedSlideError, match=r"scan\.dcm: not a supported slide"):
        wsi.open_slide(path)


def test_float_samples_with_alpha_are_shown_through_their_window():
    """Float RGBA samples (a float TIFF with an extra sample): alpha in 0-1 becomes 0-255, no integer-only call."""
    from wsi.samples import to_display

    rgba = np.zeros((2, 2, 4), np.float32)
    rgba[..., :3] = [[[0.0]], [[1.0]]]
    rgba[..., 3] = 0.5
    window = IntensityWindow((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    out = to_display(rgba, window=window, planar_channels=False, has_alpha=True, min_is_white=False)
    assert out.shape == (2, 2, 4) and out.dtype == np.uint8
    assert (out[..., 3] == 127).all() and out[0, 0, 0] == 0 and out[1, 0, 0] == 255


def test_intensity_windows_of_slides_opened_in_threads_at_once(tmp_path, monkeypatch):
    """16-bit slides opened by many tiling threads while the per-file window cache is full and evicting."""
    from concurrent.futures import ThreadPoolExecutor

    from wsi.backends import tiffslide_reader

    paths = [tmp_path / f"g{i}.tif" for i in range(6)]
    for i, path in enumerate(paths):
        bad_files.gray16_tiff(path, size=(256, 192), hi=5000 + 100 * i)
    monkeypatch.setattr(tiffslide_reader, "_WINDOWS", {("old", i): None for i in range(64)})  # full

    def intensity(path):
        with wsi.open_slide(path) as slide:
            return slide.meta.intensity

    with ThreadPoolExecutor(8) as pool:
        seen = list(pool.map(intensity, paths * 8))
    assert all(text.startswith("uint16: linear") for text in seen)
    assert len(tiffslide_reader._WINDOWS) == 64
    assert sum(key[0] == "old" for key in tiffslide_reader._WINDOWS) == 64 - len(paths)  # one entry per file
