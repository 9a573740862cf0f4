"""Grad-CAM heat maps as DICOM Secondary Capture images (highdicom ``SCImage``, RGB).

The heat map is blended over the input slice, enlarged for reading, with a caption band burned
in (sequence, time point, score and the research-use line); ``BurnedInAnnotation`` is YES. Each
image references the MR image its slice came from (Source Image Sequence). UIDs and dates come
from the caller, so a retry re-creates the same object.
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


def captioned(rgb: NDArray[np.uint8], lines: Sequence[str]) -> NDArray[np.uint8]:
    """``rgb`` enlarged to :data:`DISPLAY_SIZE` with ``lines`` burned into a band below it."""
    image = Image.fromarray(rgb).resize((DISPLAY_SIZE, DISPLAY_SIZE), Image.Resampling.BILINEAR)
    band = _LINE * len(lines) + 8
    canvas = Image.new("RGB", (DISPLAY_SIZE, DISPLAY_SIZE + band), (0, 0, 0))
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
    sc.DerivationDescription = "Grad-CAM heat map over the network's input slice"
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
