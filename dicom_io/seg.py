"""DICOM Segmentation (SEG) writer: a binary mask on the frames of a source series (highdicom)."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from typing import Any

import highdicom as hd
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes

# the tumour's colour wherever larc draws it: viewers take it from the SEG's
# RecommendedDisplayCIELabValue (OHIF warns and picks its own without it), the worklist from here
TUMOUR_DISPLAY_RGB = (255, 214, 0)  # yellow


def tumour_segment(
    label: str = "Tumour", manual: bool = True, algorithm: str = "", algorithm_version: str = "1"
) -> hd.seg.SegmentDescription:
    """Segment description for a tumour (SCT Morphologically abnormal structure / Neoplasm).

    ``manual`` for a radiologist's mask; otherwise ``algorithm`` and ``algorithm_version`` name
    the program that drew it (SegmentAlgorithmType AUTOMATIC).
    """
    if manual:
        how: dict[str, Any] = {"algorithm_type": hd.seg.SegmentAlgorithmTypeValues.MANUAL}
    else:
        how = {
            "algorithm_type": hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            "algorithm_identification": hd.AlgorithmIdentificationSequence(
                name=algorithm,
                version=algorithm_version,
                family=codes.cid7162.ArtificialIntelligence,
            ),
        }
    return hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Neoplasm,
        display_color=hd.color.CIELabColor.from_rgb(*TUMOUR_DISPLAY_RGB),
        **how,
    )


def binary_segmentation(
    source_images: Sequence[Dataset],
    mask: NDArray[np.bool_],
    *,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    manufacturer: str,
    model: str,
    software_version: str,
    segment_label: str = "Tumour",
    series_description: str = "Tumour SEG",
    manual: bool = True,
    content_datetime: datetime.datetime | None = None,
    algorithm: str = "larc",
    algorithm_version: str = "1",
) -> Dataset:
    """A binary SEG of ``mask`` (one frame per source image, same order) on ``source_images``.
    An automatic one (``manual=False``) names ``algorithm`` and ``algorithm_version``.

    Raises ``ValueError`` when the mask does not have one frame per source image of the images'
    size, or is empty.
    """
    if mask.ndim != 3 or mask.shape[0] != len(source_images):
        raise ValueError(
            f"mask must have one frame per source image: got shape {mask.shape} "
            f"for {len(source_images)} images"
        )
    if not mask.any():
        raise ValueError("mask is empty: nothing to segment")
    return hd.seg.Segmentation(
        source_images=list(source_images),
        pixel_array=mask.astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[tumour_segment(segment_label, manual, algorithm, algorithm_version)],
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=1,
        manufacturer=manufacturer,
        manufacturer_model_name=model,
        software_versions=software_version,
        device_serial_number="0",
        series_description=series_description,
        content_date=(content_datetime or datetime.datetime.now()).date(),
        content_time=(content_datetime or datetime.datetime.now()).time(),
    )
