"""Heat maps (class activation maps, :mod:`pipeline.gradcam`) as DICOM Secondary Capture
images (highdicom ``SCImage``, RGB).

The heat map is drawn over the slice the network saw at its native resolution and field of view
(:func:`heat_overlay`: windowed like a viewer, the tumour outline, a colour bar with its scale),
or blended over the network's input where there is no native slice (:func:`blend`), enlarged for
reading, with a caption band burned in (sequence, time point, score and the research-use line);
``BurnedInAnnotation`` is YES. Each image references the MR image its slice came from (Source
Image Sequence). UIDs and dates come from the caller, so a retry re-creates the same object.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from matplotlib import colormaps
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont
from pydicom.dataset import Dataset

from dicom_io.sr import Algorithm, Reference, contributing_algorithm, stamp

DISPLAY_SIZE = 384  # pixels of the image part; captions go below it
_LINE = 16
_ALPHA = 0.45


def blend(slice_: NDArray[np.floating], heat: NDArray[np.floating]) -> NDArray[np.uint8]:
    """RGB (H, W, 3) uint8: the slice (0-255 grey) with the heat map (0-1) in 'jet' over it,
    weighted by the heat itself so cold regions show the anatomy."""
    grey = np.clip(np.asarray(slice_, float), 0, 255) / 255.0
    heat = np.clip(np.asarray(heat, float), 0, 1)
    colour = colormaps["jet"](heat)[..., :3]
    weight = _ALPHA * heat[..., None]
    rgb = (1 - weight) * grey[..., None] + weight * colour
    return np.asarray(np.round(rgb * 255), dtype=np.uint8)


def window(
    plane: NDArray[np.floating], low: float = 1.0, high: float = 99.0
) -> NDArray[np.float64]:
    """0-255 grey by the ``low``-``high`` percentiles (a viewer's default window/level)."""
    lo, hi = np.percentile(plane, [low, high])
    if hi <= lo:
        return np.zeros(np.shape(plane))
    return np.asarray(np.clip((plane - lo) / (hi - lo), 0, 1) * 255, dtype=np.float64)


def _resized(array: NDArray[np.floating], shape: tuple[int, int], nearest: bool = False) -> (
        NDArray[np.float64]):  # fmt: skip
    image = Image.fromarray(np.asarray(array, dtype=np.float32), mode="F")
    how = Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR
    return np.asarray(image.resize((shape[1], shape[0]), how), dtype=np.float64)


def _outline(mask: NDArray[np.bool_]) -> NDArray[np.bool_]:
    """The mask's border pixels (inside, next to outside)."""
    padded = np.pad(mask, 1)
    inner = padded[1:-1, 1:-1] & padded[:-2, 1:-1] & padded[2:, 1:-1]
    inner &= padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def heat_overlay(
    plane: NDArray[np.floating],
    heat: NDArray[np.floating],
    mask: NDArray[np.integer] | None,
    spacing: tuple[float, float],
    outline_rgb: tuple[int, int, int],
) -> NDArray[np.uint8]:
    """RGB (DISPLAY_SIZE, DISPLAY_SIZE + bar, 3): the native ``plane`` (rows, columns; its
    pixel ``spacing`` in mm as (row, column)) windowed, the ``heat`` map (0-1, any grid over the
    same field of view) resized onto it and blended, the tumour ``mask``'s outline drawn in
    ``outline_rgb``, shown with its true aspect ratio, and a colour bar with its scale."""
    rows, cols = plane.shape
    height_mm, width_mm = rows * spacing[0], cols * spacing[1]
    scale = DISPLAY_SIZE / max(height_mm, width_mm)
    shape = (max(1, round(height_mm * scale)), max(1, round(width_mm * scale)))
    grey = _resized(window(plane), shape)
    hot = np.clip(_resized(np.clip(heat, 0, 1), shape), 0, 1)
    rgb = blend(grey, hot)
    if mask is not None and np.any(mask):
        border = _outline(_resized((mask > 0).astype(np.float32), shape, nearest=True) > 0.5)
        rgb[border] = outline_rgb
    canvas = np.zeros((DISPLAY_SIZE, DISPLAY_SIZE + _BAR_SPACE, 3), dtype=np.uint8)
    top, left = (DISPLAY_SIZE - shape[0]) // 2, (DISPLAY_SIZE - shape[1]) // 2
    canvas[top : top + shape[0], left : left + shape[1]] = rgb
    _colour_bar(canvas)
    return canvas


_BAR_SPACE, _BAR_WIDTH = 64, 14


def _colour_bar(canvas: NDArray[np.uint8]) -> None:
    """The 'jet' scale of the blend (high at the top) right of the image, with its labels."""
    x0, top, bottom = DISPLAY_SIZE + 8, 24, DISPLAY_SIZE - 24
    values = np.linspace(1, 0, bottom - top)
    colours = np.round(colormaps["jet"](values)[:, :3] * 255).astype(np.uint8)
    canvas[top:bottom, x0 : x0 + _BAR_WIDTH] = colours[:, None, :]
    image = Image.fromarray(canvas)
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    for text, y in (("1.0", top - 4), ("0.5", (top + bottom) // 2 - 6), ("0", bottom - 8)):
        draw.text((x0 + _BAR_WIDTH + 4, y), text, fill=(255, 255, 255), font=font)
    draw.text((x0 - 4, 4), "LayerCAM", fill=(255, 255, 255), font=font)
    draw.text((x0 - 2, bottom + 6), "relative", fill=(255, 255, 255), font=font)
    canvas[:] = np.asarray(image)


def captioned(rgb: NDArray[np.uint8], lines: Sequence[str]) -> NDArray[np.uint8]:
    """``rgb`` with ``lines`` burned into a band below it: enlarged to :data:`DISPLAY_SIZE`
    when square (a network input), as it is when already laid out (:func:`heat_overlay`)."""
    image = Image.fromarray(rgb)
    if rgb.shape[0] == rgb.shape[1]:
        image = image.resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.BILINEAR)
    band = _LINE * len(lines) + 8
    canvas = Image.new("RGB", (image.width, DISPLAY_SIZE + band), (0, 0, 0))
    canvas.paste(image, (0, 0))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    for i, line in enumerate(lines):
        draw.text((6, DISPLAY_SIZE + 4 + i * _LINE), line, fill=(255, 255, 255), font=font)
    return np.asarray(canvas, dtype=np.uint8)


def gradcam_capture(
    pixels: NDArray[np.uint8],
    study: Dataset,
    source: Reference | None,
    series_instance_uid: str,
    sop_instance_uid: str,
    instance_number: int,
    manufacturer: str,
    description: str,
    content_datetime: dt.datetime,
    comment: str = "",
    series_number: int = 9702,
    algorithm: Algorithm | None = None,
) -> hd.sc.SCImage:
    """A Secondary Capture of ``pixels`` (RGB, burned-in text) in the study of ``study`` (a
    header of any instance of the target study: patient and study attributes come from it).
    ``algorithm``: named in the Contributing Equipment Sequence (IHE AI Results)."""
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be (rows, columns, 3) uint8, got {pixels.shape}")
    sc = hd.sc.SCImage(
        pixel_array=pixels,
        photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
        bits_allocated=8,
        coordinate_system=hd.CoordinateSystemNames.PATIENT,
        study_instance_uid=str(study.StudyInstanceUID),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=manufacturer,
        patient_id=str(study.get("PatientID", "")),
        patient_name=study.get("PatientName", ""),
        patient_birth_date=str(study.get("PatientBirthDate", "")),
        patient_sex=str(study.get("PatientSex", "")) or None,
        accession_number=str(study.get("AccessionNumber", "")),
        study_id=str(study.get("StudyID", "")),
        study_date=str(study.get("StudyDate", "")) or None,
        study_time=str(study.get("StudyTime", "")) or None,
        referring_physician_name=study.get("ReferringPhysicianName", ""),
        patient_orientation=("L", "P"),
        series_description=description[:64],
    )
    sc.BurnedInAnnotation = "YES"
    sc.ImageType = ["DERIVED", "SECONDARY"]
    sc.DerivationDescription = (
        "LayerCAM heat map (where the network found the evidence for the class it predicts) "
        "over the slice the network saw"
    )
    sc.ImageComments = comment or description
    sc.Laterality = ""  # type 2C, empty: the rectum is not a paired structure
    if source is not None:
        item = Dataset()
        item.ReferencedSOPClassUID = source.sop_class_uid
        item.ReferencedSOPInstanceUID = source.sop_instance_uid
        sc.SourceImageSequence = [item]
    if algorithm is not None:
        sc.ContributingEquipmentSequence.append(contributing_algorithm(algorithm, content_datetime))
    stamp(sc, content_datetime)
    return sc
