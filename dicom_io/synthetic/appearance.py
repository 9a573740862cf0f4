"""How each tissue looks on each MR sequence, and rendering of a slice stack from the phantom.

Signals are in arbitrary scanner units (12-bit range), ADC in 10^-3 mm^2/s. DWI follows the
mono-exponential model S_b = S_0 exp(-b ADC); the scanner's ADC map is computed from the noisy
b = 0 and high-b images with the same formula, as scanners do. Images carry a smooth coil bias
field (so N4 has work to do), tissue texture, partial volume at edges, and Rician noise.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray
from scipy.ndimage import gaussian_filter, map_coordinates

from dicom_io.geometry import SliceStack
from dicom_io.synthetic.anatomy import Tissue, label_map
from dicom_io.synthetic.biology import Timepoint

FloatArray = NDArray[np.float64]

MAX_PIXEL = 4095  # 12 bits stored


class Contrast(StrEnum):
    """Image contrasts the generator renders."""

    T2W = "T2W"
    DWI = "DWI"
    CE_T1 = "CE-T1"


@dataclass(frozen=True)
class TissueSignal:
    """Signal of one tissue: T2W, DWI b=0 (fat-suppressed), ADC, CE-T1 (fat-suppressed)."""

    t2w: float
    dwi_b0: float
    adc: float
    ce_t1: float
    texture: float  # relative amplitude of the texture field


SIGNALS: dict[Tissue, TissueSignal] = {
    Tissue.AIR: TissueSignal(0, 0, 0, 0, 0),
    Tissue.FAT: TissueSignal(950, 90, 0.4, 170, 0.10),
    Tissue.MUSCLE: TissueSignal(330, 250, 1.45, 420, 0.06),
    Tissue.BLADDER: TissueSignal(1700, 1100, 2.9, 90, 0.02),
    Tissue.BONE: TissueSignal(600, 160, 0.45, 380, 0.12),
    Tissue.FASCIA: TissueSignal(160, 100, 1.0, 300, 0.0),
    Tissue.WALL: TissueSignal(400, 380, 1.6, 700, 0.05),
    Tissue.LUMEN: TissueSignal(90, 60, 2.6, 50, 0.05),
    Tissue.NODE: TissueSignal(480, 650, 1.0, 700, 0.05),
}
TUMOUR_DWI_B0 = 720.0
TUMOUR_CE_T1 = 950.0
FIBROSIS = TissueSignal(200, 300, 1.6, 520, 0.0)
NOISE_SD = {Contrast.T2W: 18.0, Contrast.DWI: 22.0, Contrast.CE_T1: 20.0}


class TextureField:
    """Smooth random fields fixed to the patient's anatomy, sampled anywhere in patient space."""

    def __init__(self, rng: np.random.Generator, centre: FloatArray, spacing_mm: float = 3.0):
        self._spacing = spacing_mm
        self._shape = (140, 110, 90)
        self._origin = np.asarray(centre) - np.asarray(self._shape) / 2 * spacing_mm
        fields = []
        for sigma in (1.2, 0.8):  # anatomy texture, tumour texture
            field = gaussian_filter(rng.standard_normal(self._shape), sigma)
            fields.append((field - field.mean()) / field.std())
        self._fields = fields

    def sample(self, points: FloatArray, which: int) -> FloatArray:
        """Field ``which`` (0: anatomy, 1: tumour) at ``points`` (..., 3), unit SD."""
        index = (points - self._origin) / self._spacing
        coords = np.moveaxis(index, -1, 0).reshape(3, -1)
        values = map_coordinates(self._fields[which], coords, order=1, mode="nearest")
        return np.asarray(values.reshape(points.shape[:-1]))


@dataclass(frozen=True)
class StudyScene:
    """A timepoint as one study sees it: the patient shifted on the table, the coil's bias."""

    timepoint: Timepoint
    texture: TextureField
    offset_mm: tuple[float, float, float]
    bias: tuple[float, float, float]

    def _anatomical(self, points: FloatArray) -> FloatArray:
        return np.asarray(points - np.asarray(self.offset_mm))

    def labels(self, points: FloatArray) -> NDArray[np.uint8]:
        """Tissue labels at scanner coordinates ``points`` (..., 3)."""
        tp = self.timepoint
        return label_map(tp.anatomy, tp.shape, self._anatomical(points))

    def _bias_field(self, points: FloatArray) -> FloatArray:
        q = self._anatomical(points) - np.asarray(self.timepoint.anatomy.tumour_centre)
        bx, by, bq = self.bias
        return np.asarray(
            np.exp(bx * q[..., 0] / 150 + by * q[..., 1] / 120 + bq * (q[..., 0] / 150) ** 2)
        )

    def tissue_signals(self, points: FloatArray) -> dict[str, FloatArray]:
        """Noise-free T2W, DWI b0, ADC (10^-3 mm^2/s) and CE-T1 signals at ``points``."""
        tp = self.timepoint
        labels = self.labels(points)
        anat = self._anatomical(points)
        texture = self.texture.sample(anat, 0)
        maps = {name: np.zeros(labels.shape) for name in ("t2w", "dwi_b0", "adc", "ce_t1")}
        for tissue, signal in SIGNALS.items():
            inside = labels == tissue
            if not inside.any():
                continue
            scale = 1 + signal.texture * texture[inside]
            maps["t2w"][inside] = signal.t2w * scale
            maps["dwi_b0"][inside] = signal.dwi_b0 * scale
            maps["adc"][inside] = signal.adc * (1 + 0.5 * signal.texture * texture[inside])
            maps["ce_t1"][inside] = signal.ce_t1 * scale
        tumour = (labels == Tissue.TUMOUR) | (labels == Tissue.EMVI)
        if tumour.any():
            grain = self.texture.sample(anat[tumour], 1)
            scale = 1 + tp.heterogeneity * grain
            fibrosis = np.clip(tp.fibrosis + 0.15 * grain, 0.0, 1.0) if tp.fibrosis > 0 else 0.0
            alive = 1 - fibrosis
            maps["t2w"][tumour] = alive * tp.t2_signal * scale + fibrosis * FIBROSIS.t2w
            maps["dwi_b0"][tumour] = alive * TUMOUR_DWI_B0 * scale + fibrosis * FIBROSIS.dwi_b0
            maps["adc"][tumour] = np.clip(tp.adc * (1 - tp.heterogeneity * grain), 0.3, 3.0)
            maps["ce_t1"][tumour] = alive * TUMOUR_CE_T1 * scale + fibrosis * FIBROSIS.ce_t1
        bias = self._bias_field(points)
        for name in ("t2w", "dwi_b0", "ce_t1"):
            maps[name] = np.clip(maps[name], 0, None) * bias
        return maps


def _rician(signal: FloatArray, sd: float, rng: np.random.Generator) -> FloatArray:
    real = signal + rng.normal(0, sd, signal.shape)
    imag = rng.normal(0, sd, signal.shape)
    return np.asarray(np.hypot(real, imag))


def _supersample(stack: SliceStack) -> int:
    return 2 if min(stack.pixel_spacing_mm) > 1.2 else 1


def _slice_signals(scene: StudyScene, stack: SliceStack, index: int) -> dict[str, FloatArray]:
    """Noise-free signals of one slice, averaged over sub-pixels (partial volume)."""
    s = _supersample(stack)
    maps = scene.tissue_signals(stack.slice_points(index, supersample=s))
    if s == 1:
        return maps
    out = {}
    for name, values in maps.items():
        if name == "adc":  # ADC does not average linearly; keep the sub-pixel signal-weighted mean
            continue
        out[name] = values.reshape(stack.rows, s, stack.columns, s).mean(axis=(1, 3))
    weights = maps["dwi_b0"] + 1e-6
    weighted = (maps["adc"] * weights).reshape(stack.rows, s, stack.columns, s).sum(axis=(1, 3))
    out["adc"] = weighted / weights.reshape(stack.rows, s, stack.columns, s).sum(axis=(1, 3))
    return out


def render(
    scene: StudyScene, stack: SliceStack, contrast: Contrast, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Render a T2W or CE-T1 stack (slices, rows, columns); DWI goes through :func:`render_dwi`."""
    if contrast is Contrast.DWI:
        raise ValueError("render DWI with render_dwi, which gives every b-value at once")
    key = "t2w" if contrast is Contrast.T2W else "ce_t1"
    out = np.empty((stack.slices, stack.rows, stack.columns))
    for k in range(stack.slices):
        out[k] = _rician(_slice_signals(scene, stack, k)[key], NOISE_SD[contrast], rng)
    return out


def render_dwi(
    scene: StudyScene, stack: SliceStack, b_values: tuple[float, ...], rng: np.random.Generator
) -> dict[float, FloatArray]:
    """DWI stacks for each b-value, from one noise-free computation per slice."""
    out = {b: np.empty((stack.slices, stack.rows, stack.columns)) for b in b_values}
    for k in range(stack.slices):
        maps = _slice_signals(scene, stack, k)
        for b in b_values:
            clean = maps["dwi_b0"] * np.exp(-b * maps["adc"] * 1e-3)
            out[b][k] = _rician(clean, NOISE_SD[Contrast.DWI], rng)
    return out


def scanner_adc(
    b0: FloatArray, high: FloatArray, b_value: float, threshold: float = 60.0
) -> FloatArray:
    """ADC (10^-3 mm^2/s) as a scanner computes it: ln(S0/Sb)/b, zero where S0 is background."""
    with np.errstate(divide="ignore", invalid="ignore"):
        adc = np.log(np.maximum(b0, 1e-6) / np.maximum(high, 1e-6)) / b_value * 1e3
    adc = np.where(b0 > threshold, adc, 0.0)
    return np.asarray(np.clip(adc, 0.0, MAX_PIXEL / 1000.0))
