"""Automatic tumour segmentation (science C): a MONAI U-Net on the axial T2W, and the quality gate
an automatic mask must pass before anything is scored on it.

The network is 2.5D: a 2D U-Net whose three input channels are a slice and its two neighbours.
It is MONAI's DynUNet, the nnU-Net layout (two 3x3 convolutions with instance norm and leaky ReLU
per level, residual blocks, full-resolution first level, a 1x1 output convolution). Its output
bias starts at the tumour's prior log-odds (about 2 % of the pixels of a training patch): the
tumour is a small part of each slice, and a network whose logits start at 0 spends most of a
short CPU training learning that the background is background. The first network, MONAI's UNet
with one residual unit, squeezes its last stage through one instance-normalised channel and
starts with a strided convolution: on a 60-patient synthetic cohort (matrix 64) it reached a
held-out Dice of 0.41-0.46 where DynUNet reached 0.69 in the same 1,600 steps (an experiment
run by hand on 2026-12-03; bench/segmentation.py measures the current network); bundles made
with it still load (``architecture: unet``).
Why not 3D: rectal T2W series are strongly anisotropic (0.5-0.8 mm in plane, 3-4 mm slices, 20-30
slices), so a 3D patch holds few slices and a 3D network costs ~10x the CPU of a 2D one at the same
in-plane field of view; the neighbours give the through-plane context that separates the tumour
from the wall above and below. Inference runs MONAI's sliding-window inferer over each slice
(gaussian-weighted overlap), so any matrix works with the patch size the network was trained on.

Intensities are scaled per volume (1st-99th percentile to 0-1): vendors scale T2W differently.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk  # noqa: N813  (the name the SimpleITK world uses)
import torch
from monai.inferers.utils import sliding_window_inference
from monai.networks.nets.dynunet import DynUNet
from monai.networks.nets.unet import UNet
from numpy.typing import NDArray
from scipy import ndimage
from torch import nn

from dicom_io.masks import resample_mask
from pipeline.networks import device

FloatArray = NDArray[np.float32]
CONTEXT = 1  # neighbouring slices on each side (3 input channels)
PRIOR_LOGIT = -4.0  # log-odds of ~2 %: the output bias a fresh network starts from
ARCHITECTURES = ("dynunet", "unet")


@dataclass(frozen=True)
class SegmenterConfig:
    """The network and how it sees the images (kept in the bundle with the weights)."""

    channels: tuple[int, ...] = (16, 32, 64, 128)
    patch: int = 96  # in-plane patch side (sliding window at inference)
    residual_units: int = 1
    architecture: str = "dynunet"  # or "unet" (bundles made before DynUNet)

    def __post_init__(self) -> None:
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown segmenter architecture {self.architecture!r}: "
                             f"one of {', '.join(ARCHITECTURES)}")  # fmt: skip
        if self.architecture == "dynunet" and len(self.channels) < 3:
            raise ValueError("a DynUNet segmenter needs at least 3 levels of channels")

    @property
    def downsampling(self) -> int:
        """How much the deepest level is smaller than the input (a patch's side divides by
        it)."""
        return int(2 ** (len(self.channels) - 1))

    def network(self) -> nn.Module:
        """A fresh network of this shape (weights random, output bias at the prior)."""
        levels = len(self.channels)
        if self.architecture == "unet":
            return UNet(
                spatial_dims=2,
                in_channels=2 * CONTEXT + 1,
                out_channels=1,
                channels=self.channels,
                strides=(2,) * (levels - 1),
                num_res_units=self.residual_units,
            )
        network = DynUNet(
            spatial_dims=2,
            in_channels=2 * CONTEXT + 1,
            out_channels=1,
            kernel_size=[3] * levels,
            strides=[1] + [2] * (levels - 1),
            upsample_kernel_size=[2] * (levels - 1),
            filters=list(self.channels),
            res_block=self.residual_units > 0,
        )
        output = network.output_block.conv.conv
        if isinstance(output, nn.Conv2d) and output.bias is not None:
            nn.init.constant_(output.bias, PRIOR_LOGIT)
        return network

    def to_json(self) -> dict[str, Any]:
        """For the manifest."""
        return {**asdict(self), "channels": list(self.channels), "context": CONTEXT}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SegmenterConfig:
        """What :meth:`to_json` gave (a manifest without ``architecture`` is a UNet one)."""
        return cls(tuple(int(c) for c in data["channels"]), int(data["patch"]),
                   int(data["residual_units"]), str(data.get("architecture", "unet")))  # fmt: skip


def normalise(volume: NDArray[Any]) -> FloatArray:
    """1st-99th percentile of the volume to 0-1 (clipped)."""
    low, high = np.percentile(volume, [1, 99])
    scale = float(high - low) or 1.0
    out: FloatArray = np.clip((volume.astype(np.float32) - float(low)) / scale, 0.0, 1.0)
    return out.astype(np.float32)


def with_neighbours(volume: FloatArray) -> FloatArray:
    """(Z, H, W) -> (Z, 3, H, W): each slice with the one below and above (edges repeated)."""
    padded = np.pad(volume, ((CONTEXT, CONTEXT), (0, 0), (0, 0)), mode="edge")
    stacked = [padded[k : k + volume.shape[0]] for k in range(2 * CONTEXT + 1)]
    out: FloatArray = np.stack(stacked, axis=1).astype(np.float32)
    return out


def predict_volume(
    model: nn.Module, volume: NDArray[Any], config: SegmenterConfig, batch: int = 8
) -> FloatArray:
    """Tumour probability (Z, H, W) of a T2W volume (Z, H, W) in raw intensities."""
    inputs = with_neighbours(normalise(volume))
    where = device()
    model = model.to(where).eval()
    out = np.empty(volume.shape, np.float32)
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            chunk = torch.from_numpy(inputs[start : start + batch]).to(where)
            logits = sliding_window_inference(
                chunk, (config.patch, config.patch), batch, model, overlap=0.25, mode="gaussian"
            )
            assert isinstance(logits, torch.Tensor)  # noqa: S101 (MONAI's union return type)
            out[start : start + batch] = torch.sigmoid(logits)[:, 0].cpu().numpy()
    return out


@dataclass(frozen=True)
class Segmentation:
    """An automatic mask on the image's grid and what the gate looks at."""

    mask: sitk.Image
    volume_ml: float
    mean_probability: float  # inside the mask
    components: int  # connected parts of at least 10 % of the largest
    touches_edge: bool  # the mask reaches the edge of the field of view
    reasons: list[str] = field(default_factory=list)  # why the gate failed it (empty: passed)
    # the DWI-bright lesion around the outline over the outline (dwi_lesion_ratio); None: no
    # DWI given, or the outline is not DWI-bright (the check does not apply)
    dwi_lesion_ratio: float | None = None

    @property
    def passed(self) -> bool:
        """Whether the mask may be scored on."""
        return not self.reasons


@dataclass(frozen=True)
class GateLimits:
    """The quality gate's thresholds; set at training time from what the model saw."""

    min_volume_ml: float = 0.5
    max_volume_ml: float = 500.0
    min_mean_probability: float = 0.6
    max_components: int = 1
    allow_edge: bool = False
    # the DWI-bright lesion the outline lies in may be at most this many times the outline
    # (0: no check); applied when the outline is at least dwi_min_contrast times as bright on
    # the high-b DWI as the body around it
    max_dwi_lesion_ratio: float = 2.0
    dwi_min_contrast: float = 2.0

    def to_json(self) -> dict[str, Any]:
        """For the manifest."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> GateLimits:
        """What :meth:`to_json` gave."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def segment(
    model: nn.Module,
    image: sitk.Image,
    config: SegmenterConfig,
    limits: GateLimits,
    dwi: sitk.Image | None = None,
) -> Segmentation:
    """The automatic tumour mask of a T2W image and the gate's verdict on it (``dwi``: the
    study's highest-b DWI, for the lesion-extent check)."""
    volume = sitk.GetArrayFromImage(image)
    probability = predict_volume(model, volume, config)
    return judge(probability, image, limits, dwi)


def dwi_lesion(
    mask: sitk.Image, dwi: sitk.Image, min_contrast: float, level: float = 0.6
) -> tuple[float, float, float] | None:
    """(lesion ml, outline ml, ratio) of a T2W outline carried onto the high-b DWI: the lesion
    is every DWI-bright connected region (at least ``level`` times the outline's median) that
    the outline touches. ``None`` when the outline misses the DWI or is not DWI-bright (its
    median under ``min_contrast`` times the body's, the voxels at or above the image median): a
    tumour without restricted diffusion (often so after treatment) has no extent to compare.

    A tumour larger than any the segmenter saw is often outlined in part; its DWI lesion then
    runs well beyond the outline (measured on synthetic patients: drawn outlines 0.9-1.4 times,
    a 237 ml tumour outlined as 61 ml 3.0 times)."""
    carried = sitk.GetArrayFromImage(resample_mask(mask, dwi)) > 0  # as cases carry masks
    voxels = sitk.GetArrayFromImage(dwi).astype(np.float32)
    if not carried.any():
        return None
    inside = float(np.median(voxels[carried]))
    body = voxels[voxels >= np.median(voxels)]
    if body.size == 0 or inside < min_contrast * float(np.median(body)):
        return None
    bright = voxels >= level * inside
    labels, _ = ndimage.label(bright)
    touched = np.unique(labels[carried & bright])
    lesion = np.isin(labels, touched[touched > 0]) | carried
    voxel_ml = float(np.prod(dwi.GetSpacing())) / 1000.0
    lesion_ml, outline_ml = float(lesion.sum()) * voxel_ml, float(carried.sum()) * voxel_ml
    return lesion_ml, outline_ml, lesion_ml / outline_ml


def judge(
    probability: FloatArray,
    image: sitk.Image,
    limits: GateLimits,
    dwi: sitk.Image | None = None,
) -> Segmentation:
    """The largest connected component of ``probability >= 0.5`` and the gate's reasons."""
    binary = probability >= 0.5
    labels, count = ndimage.label(binary)
    sizes = ndimage.sum(binary, labels, range(1, count + 1)) if count else np.zeros(0)
    keep = np.zeros_like(binary)
    components = 0
    if count:
        largest = int(np.argmax(sizes)) + 1
        keep = labels == largest
        components = int(np.sum(sizes >= 0.1 * sizes.max()))
    voxel_ml = float(np.prod(image.GetSpacing())) / 1000.0
    volume_ml = float(keep.sum()) * voxel_ml
    mean_probability = float(probability[keep].mean()) if keep.any() else 0.0
    edge = bool(keep[:, 0, :].any() or keep[:, -1, :].any() or keep[:, :, 0].any()
                or keep[:, :, -1].any())  # fmt: skip
    reasons = []
    if not keep.any():
        reasons.append("no tumour found")
    elif not limits.min_volume_ml <= volume_ml <= limits.max_volume_ml:
        reasons.append(
            f"tumour volume {volume_ml:.1f} ml is outside what the model saw in training "
            f"({limits.min_volume_ml:.1f}-{limits.max_volume_ml:.1f} ml)"
        )
    if keep.any() and mean_probability < limits.min_mean_probability:
        reasons.append(
            f"mean tumour probability {mean_probability:.2f} is below "
            f"{limits.min_mean_probability:.2f}"
        )
    if components > limits.max_components:
        reasons.append(f"{components} separate tumour regions (at most {limits.max_components})")
    if edge and not limits.allow_edge:
        reasons.append("the outline touches the edge of the field of view")
    mask = sitk.GetImageFromArray(keep.astype(np.uint8))
    mask.CopyInformation(image)
    lesion = None
    if dwi is not None and keep.any() and limits.max_dwi_lesion_ratio > 0:
        lesion = dwi_lesion(mask, dwi, limits.dwi_min_contrast)
        if lesion is not None and lesion[2] > limits.max_dwi_lesion_ratio:
            reasons.append(
                f"the DWI-bright lesion around the outline is {lesion[2]:.1f} times its size "
                f"({lesion[0]:.0f} ml against {lesion[1]:.0f} ml): the outline may miss part of "
                "the tumour"
            )
    ratio = None if lesion is None else round(lesion[2], 3)
    return Segmentation(mask, volume_ml, mean_probability, components, edge, reasons, ratio)


def dice(a: NDArray[Any], b: NDArray[Any]) -> float:
    """Dice overlap of two binary arrays (1.0 when both are empty)."""
    a, b = a > 0, b > 0
    total = int(a.sum() + b.sum())
    return 1.0 if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def hd95(a: NDArray[Any], b: NDArray[Any], spacing: tuple[float, float, float]) -> float:
    """95th-percentile symmetric Hausdorff distance in mm between two binary (Z, H, W) masks
    (``spacing`` x, y, z as SimpleITK gives it); inf when one is empty."""
    a, b = a > 0, b > 0
    if not a.any() or not b.any():
        return math.inf
    sampling = (spacing[2], spacing[1], spacing[0])

    def surface(m: NDArray[Any]) -> NDArray[Any]:
        edge: NDArray[Any] = m & ~ndimage.binary_erosion(m)
        return edge

    to_b = ndimage.distance_transform_edt(~surface(b), sampling=sampling)
    to_a = ndimage.distance_transform_edt(~surface(a), sampling=sampling)
    distances = np.concatenate([to_b[surface(a)], to_a[surface(b)]])
    return float(np.percentile(distances, 95))
