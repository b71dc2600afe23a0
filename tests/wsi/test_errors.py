"""Bad input: every failure is a wsi.SlideError subclass whose message names the file."""

from __future__ import annotations

import pytest

import wsi
from tests.conftest import OPENSLIDE_DATA


def test_missing_file(tmp_path):
    path = tmp_path / "nope.svs"
    with pytest.raises(wsi.SlideNotFoundError, match="nope.svs"):
        wsi.open_slide(path)


def test_directory(tmp_path):
    with pytest.raises(wsi.SlideNotFoundError, match="directory"):
        wsi.open_slide(tmp_path)


@pytest.mark.parametrize("backend", [None, "openslide", "tiffslide"])
def test_text_file_named_svs(tmp_path, backend):
    path = tmp_path / "notes.svs"
    path.write_text("this is not a slide\n")
    with pytest.raises(wsi.UnsupportedSlideError, match="notes.svs"):
        wsi.open_slide(path, backend=backend)


@pytest.mark.parametrize("backend", [None, "openslide", "tiffslide"])
def test_unopenable(backend):
    with pytest.raises(wsi.UnsupportedSlideError, match=r"unopenable\.tiff.*52479"):
        wsi.open_slide(OPENSLIDE_DATA / "unopenable.tiff", backend=backend)


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_unreadable_names_region(backend):
    with wsi.open_slide(OPENSLIDE_DATA / "unreadable.svs", backend=backend) as slide:
        with pytest.raises(
            wsi.UnreadableSlideError, match=r"unreadable\.svs.*region \(0, 0\) level 0 size \(8, 8\)"
        ):
            slide.read_region((0, 0), 0, (8, 8))


def test_boxes_has_no_usable_mpp():
    path = OPENSLIDE_DATA / "boxes.tiff"
    with wsi.open_slide(path) as slide:
        assert slide.meta.mpp is None  # 72 dpi default: 352.8 um/px is not a scan resolution
        assert slide.read_region((0, 0), 0, (10, 10)).shape == (10, 10, 3)  # level reads need no mpp
        with pytest.raises(wsi.MissingMppError, match=r"boxes\.tiff.*--slide-mpp.*slide_mpp="):
            slide.read((0, 0), (100, 100), mpp=1.0)


def test_boxes_reads_once_slide_mpp_is_given():
    with wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff", slide_mpp=0.5) as slide:
        assert slide.meta.mpp == 0.5
        assert slide.read((0, 0), (100, 100), mpp=1.0).shape == (50, 50, 3)


def test_old_mpp_keyword_still_works_once_with_a_warning():
    with pytest.warns(DeprecationWarning, match="'mpp' is deprecated.*'slide_mpp'"):
        slide = wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff", mpp=0.5)
    with slide:
        assert slide.meta.mpp == 0.5
    with pytest.raises(TypeError, match="both 'mpp'"):
        wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff", mpp=0.5, slide_mpp=0.5)


def test_implausible_mpp_override_is_rejected():
    with pytest.raises(ValueError, match="plausible"):
        wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff", slide_mpp=352.8)


def test_unknown_backend():
    with pytest.raises(ValueError, match="unknown slide backend"):
        wsi.open_slide(OPENSLIDE_DATA / "small.svs", backend="bioformats")


def _missing_mpp():
    with wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff") as slide:
        slide.read((0, 0), (10, 10), mpp=1.0)


def _unreadable():
    with wsi.open_slide(OPENSLIDE_DATA / "unreadable.svs") as slide:
        slide.read_region((0, 0), 0, (8, 8))


@pytest.mark.parametrize(
    ("provoke", "cls", "name"),
    [
        (lambda: wsi.open_slide(OPENSLIDE_DATA / "nope.svs"), wsi.SlideNotFoundError, "nope.svs"),
        (
            lambda: wsi.open_slide(OPENSLIDE_DATA / "unopenable.tiff"),
            wsi.UnsupportedSlideError,
            "unopenable.tiff",
        ),
        (_unreadable, wsi.UnreadableSlideError, "unreadable.svs"),
        (_missing_mpp, wsi.MissingMppError, "boxes.tiff"),
    ],
)
def test_each_failure_is_caught_as_a_slide_error_naming_the_file(provoke, cls, name):
    """What a batch catches (`except wsi.SlideError`) is what the readers raise, with the file in `.path`."""
    with pytest.raises(wsi.SlideError) as caught:
        provoke()
    assert type(caught.value) is cls
    assert caught.value.path == str(OPENSLIDE_DATA / name) and str(caught.value).startswith(caught.value.path)
