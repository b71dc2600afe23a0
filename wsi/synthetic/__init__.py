"""Synthetic H&E-like whole-slide images with exact ground truth (tissue, tumor, nuclei), written as SVS-like TIFFs.

spec = SyntheticSpec(20_000, 20_000, mpp=0.25, seed=0, tumor=True)
written = write_slide("slide.svs", spec)       # slide + slide.truth.json, masks, nuclei GeoJSON
truth = load_truth("slide.svs")
"""

from wsi.synthetic.content import Nuclei, SyntheticSpec, field_at, nuclei_in_box, render_region
from wsi.synthetic.truth import SyntheticTruth, load_truth
from wsi.synthetic.writer import SyntheticSlide, pyramid_sizes, truth_downsample, write_slide

__all__ = [
    "Nuclei",
    "SyntheticSlide",
    "SyntheticSpec",
    "SyntheticTruth",
    "field_at",
    "load_truth",
    "nuclei_in_box",
    "pyramid_sizes",
    "render_region",
    "truth_downsample",
    "write_slide",
]
