"""The nuclei CNN: a timm encoder (`features_only`), a U-Net decoder, and HoVer-Net style heads.

    model = nuclei.create_model()                       # default config, random init
    model = nuclei.load_model("weights/dir")            # config.json + model.safetensors, never unpickled
    nuclei.save_model(model, "out_dir", provenance={...})
    model.postprocess                                   # thresholds shipped with the weights, or None

config.json holds `format`, `config` (ModelConfig), `provenance` and, optionally, `postprocess`: the
post-processing thresholds chosen for these weights (`PostprocessConfig` fields; missing keys take the
defaults). `segment`, `predict_instances` and the slide segmenter use them when the caller passes no
PostprocessConfig; folders without them use `PostprocessConfig()`.

Heads: nucleus probability (1 logit), horizontal / vertical distance maps (2, tanh) and, when `n_types` > 0,
per-pixel nucleus type logits (PanNuke classes, index 0 background). Input is a normalised float batch
(B, 3, H, W) with H and W multiples of 32 (`NucleiNet.stride`); `predict_maps` handles uint8 images of any size.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from mil._timm_import import import_timm
from nuclei.postprocess import PostprocessConfig

__all__ = [
    "ModelConfig",
    "ModelError",
    "NucleiNet",
    "NucleiOutput",
    "create_model",
    "load_model",
    "read_postprocess",
    "save_model",
    "thresholds",
    "write_postprocess",
    "transfer_weights",
]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT = "slidestream.nuclei/1"


class ModelError(Exception):
    """A nuclei model cannot be built or loaded: bad config, missing files, weights for another architecture."""


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and preprocessing of a nuclei model (saved beside its weights as JSON)."""

    encoder: str = "regnetx_002"
    decoder_channels: tuple[int, ...] = (64, 48, 32, 24)  # strides 16, 8, 4, 2 (+ 1 if full_resolution)
    full_resolution: bool = (
        False  # a stride-1 decoder stage (5 decoder_channels); off: heads at stride 2, upsampled
    )
    n_types: int = (
        6  # PanNuke: background + neoplastic, inflammatory, connective, dead, epithelial; 0 = no head
    )
    mpp: float = 0.5
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    classes: tuple[str, ...] = (
        "background",
        "neoplastic",
        "inflammatory",
        "connective",
        "dead",
        "epithelial",
    )

    def __post_init__(self):
        n = 5 if self.full_resolution else 4
        if len(self.decoder_channels) != n:
            raise ValueError(f"decoder_channels needs {n} entries (strides 16..{1 if n == 5 else 2}), got "
                             f"{self.decoder_channels}")  # fmt: skip
        if self.n_types and len(self.classes) != self.n_types:
            raise ValueError(f"classes must name n_types={self.n_types} classes, got {len(self.classes)}")
        if not 0.05 <= self.mpp <= 10:
            raise ValueError(f"mpp must be between 0.05 and 10, got {self.mpp}")

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        for k in ("decoder_channels", "mean", "std", "classes"):
            if k in known:
                known[k] = tuple(known[k])
        return cls(**known)


@dataclass
class NucleiOutput:
    """Raw head outputs at input resolution: (B, 1, H, W) logits, (B, 2, H, W) HV in [-1, 1], type logits."""

    logits: torch.Tensor
    hv: torch.Tensor
    types: torch.Tensor | None


class _Block(nn.Sequential):
    """`convs` x (3x3 conv, batch norm, ReLU)."""

    def __init__(self, cin: int, cout: int, convs: int = 2):
        layers: list[nn.Module] = []
        for i in range(convs):
            layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]  # fmt: skip
        super().__init__(*layers)


class NucleiNet(nn.Module):
    """U-Net on a timm encoder; heads at stride 2 upsampled, or at stride 1 with a full-resolution stem skip."""

    stride = 32

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.postprocess: PostprocessConfig | None = None  # thresholds shipped with the weights (load_model)
        timm = import_timm()
        try:
            self.encoder = timm.create_model(config.encoder, pretrained=False, features_only=True)
        except Exception as exc:  # timm raises RuntimeError / KeyError for unknown names
            raise ModelError(f"cannot build timm encoder {config.encoder!r}: {exc}") from exc
        reductions = self.encoder.feature_info.reduction()
        if reductions[-5:] != [2, 4, 8, 16, 32]:
            raise ModelError(f"encoder {config.encoder!r} must give strides 2..32, gives {reductions}")
        enc = self.encoder.feature_info.channels()[-5:]
        dec = config.decoder_channels
        skips = [enc[3], enc[2], enc[1], enc[0]]  # strides 16, 8, 4, 2
        self.stem = None
        if config.full_resolution:  # a stride-1 skip from the image itself
            stem = dec[-1]
            self.stem = nn.Sequential(
                nn.Conv2d(3, stem, 3, padding=1, bias=False), nn.BatchNorm2d(stem), nn.ReLU(True)
            )
            skips.append(stem)
        blocks, cin = [], enc[4]
        # One conv at strides 2 and 1, where pixels are many and a CPU spends most of its time.
        for i, (skip, cout) in enumerate(zip(skips, dec, strict=True)):
            blocks.append(_Block(cin + skip, cout, convs=2 if i < 3 else 1))
            cin = cout
        self.decoder = nn.ModuleList(blocks)
        self.np_head = nn.Conv2d(cin, 1, 1)
        self.hv_head = nn.Conv2d(cin, 2, 1)
        self.type_head = nn.Conv2d(cin, config.n_types, 1) if config.n_types else None
        self.register_buffer("mean", torch.tensor(config.mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> NucleiOutput:
        """`x`: (B, 3, H, W) normalised floats, H and W multiples of 32."""
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % self.stride or x.shape[3] % self.stride:
            raise ValueError(
                f"expected (B, 3, H, W) with H, W multiples of {self.stride}, got {tuple(x.shape)}"
            )
        feats = self.encoder(x)[-5:]
        skips = [feats[3], feats[2], feats[1], feats[0]]
        if self.stem is not None:
            skips.append(self.stem(x))
        y = feats[4]
        for block, skip in zip(self.decoder, skips, strict=True):
            y = F.interpolate(y, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            y = block(torch.cat([y, skip], dim=1))
        heads = [self.np_head(y), self.hv_head(y)]
        if self.type_head is not None:
            heads.append(self.type_head(y))
        if self.stem is None:
            heads = [F.interpolate(h, size=x.shape[-2:], mode="bilinear", align_corners=False) for h in heads]
        types = heads[2] if self.type_head is not None else None
        return NucleiOutput(logits=heads[0], hv=torch.tanh(heads[1]), types=types)

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) -> normalised float input."""
        return (images.float() / 255.0 - self.mean) / self.std


def create_model(config: ModelConfig | None = None, **overrides) -> NucleiNet:
    """A randomly initialised model from `config` (default `ModelConfig()`), with checked field overrides."""
    config = config or ModelConfig()
    unknown = set(overrides) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise ModelError(f"unknown ModelConfig fields {sorted(unknown)}")
    if overrides:
        config = ModelConfig.from_dict({**asdict(config), **overrides})
    return NucleiNet(config)


def save_model(model: NucleiNet, directory: str | os.PathLike, provenance: dict | None = None,
               half: bool = False, postprocess: PostprocessConfig | None = None) -> Path:  # fmt: skip
    """Write `model.safetensors` + `config.json` into `directory` atomically; `half` stores float16 weights.

    `postprocess` (default: `model.postprocess`, None for a new model) is written as the folder's thresholds; a
    model fine-tuned from a folder with thresholds keeps them (training validated it with them), until they
    are chosen again (`python -m benchmarks.nuclei thresholds --write`)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    meta = {"format": FORMAT, "config": asdict(model.config), "provenance": provenance or {}}
    postprocess = postprocess if postprocess is not None else getattr(model, "postprocess", None)
    if postprocess is not None:
        meta["postprocess"] = asdict(postprocess)
    _atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(state, p))
    _write_meta(directory / CONFIG_NAME, meta)
    return directory


def _write_meta(path: Path, meta: dict) -> None:
    """A model folder's config.json, atomically (one format for every writer)."""
    _atomic_write(path, lambda p: Path(p).write_text(json.dumps(meta, indent=1) + "\n"))


def _atomic_write(path: Path, write) -> None:
    """`write(tmp)` into a temporary file beside `path`, then renamed over it."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_postprocess(
    directory: str | os.PathLike, postprocess: PostprocessConfig, record: dict | None = None
) -> Path:
    """Set the thresholds of an existing model folder (its config.json's `postprocess`, rewritten atomically;
    the weights are not touched); `record` (how they were chosen) goes to provenance["postprocess"]."""
    path, meta = _read_meta(directory)
    meta["postprocess"] = asdict(postprocess)
    if record is not None:
        meta.setdefault("provenance", {})["postprocess"] = record
    _write_meta(path, meta)
    return path


def _read_meta(directory: str | os.PathLike) -> tuple[Path, dict]:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise ModelError(f"{directory} is not a nuclei model directory: {CONFIG_NAME} is missing")
    meta = json.loads(path.read_text())
    if meta.get("format") != FORMAT:
        raise ModelError(f"{path} is not a {FORMAT} config (format {meta.get('format')!r})")
    return path, meta


def read_config(directory: str | os.PathLike) -> tuple[ModelConfig, dict]:
    """The ModelConfig and provenance stored in a model directory."""
    _, meta = _read_meta(directory)
    return ModelConfig.from_dict(meta["config"]), meta.get("provenance", {})


def read_postprocess(directory: str | os.PathLike) -> PostprocessConfig | None:
    """The post-processing thresholds stored in a model directory (its `postprocess`), None if it has none."""
    return _postprocess_of(*_read_meta(directory))


def _postprocess_of(path: Path, meta: dict) -> PostprocessConfig | None:
    if "postprocess" not in meta or meta["postprocess"] is None:
        return None
    try:
        return PostprocessConfig.from_dict(meta["postprocess"])
    except ValueError as exc:
        raise ModelError(f"{path}: {exc}") from None


def thresholds(model: NucleiNet, postprocess: PostprocessConfig | None = None) -> PostprocessConfig:
    """The thresholds to post-process `model`'s maps with: `postprocess` if given, else the model's own
    (`model.postprocess`, from its folder), else the defaults."""
    if postprocess is not None:
        return postprocess
    return getattr(model, "postprocess", None) or PostprocessConfig()


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> NucleiNet:
    """A model from `directory` (config.json + model.safetensors), in eval mode on `device`."""
    path, meta = _read_meta(directory)
    config, provenance = ModelConfig.from_dict(meta["config"]), meta.get("provenance", {})
    postprocess = _postprocess_of(path, meta)
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ModelError(f"{directory}: {WEIGHTS_NAME} is missing")
    model = NucleiNet(config)
    state = load_file(str(weights))
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if state[k].shape != expected[k].shape)
    if missing or unexpected or wrong:
        raise ModelError(
            f"{weights} does not fit architecture {config.encoder!r}: missing keys {missing[:8]}, "
            f"unexpected keys {unexpected[:8]}, wrong shapes {wrong[:8]}"
        )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.provenance = provenance
    model.postprocess = postprocess
    return model.eval().to(device)


def transfer_weights(target: NucleiNet, source: NucleiNet) -> list[str]:
    """Copy into `target` every tensor of `source` with the same name and shape (e.g. a stride-2 model's encoder
    and decoder into a full-resolution one); returns the names of `target`'s tensors left as initialised."""
    theirs = source.state_dict()
    mine = target.state_dict()
    copied = {k: theirs[k].to(v.dtype) for k, v in mine.items() if k in theirs and theirs[k].shape == v.shape}
    target.load_state_dict(copied, strict=False)
    return sorted(set(mine) - set(copied))


def pad_to_stride(image: np.ndarray, stride: int = NucleiNet.stride) -> tuple[np.ndarray, tuple[int, int]]:
    """Reflect-pad an (H, W, C) image on the bottom/right to multiples of `stride`; returns the original (H, W)."""
    h, w = image.shape[:2]
    ph, pw = -h % stride, -w % stride
    if ph or pw:
        image = np.pad(
            image, ((0, ph), (0, pw), (0, 0)), mode="reflect" if min(h, w) > max(ph, pw) else "edge"
        )
    return image, (h, w)
