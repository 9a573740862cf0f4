"""RT Structure Set with closed planar contours, as a contouring tool writes it.

Contours are traced on the tumour's implicit surface at sub-pixel accuracy (marching squares on a
finer grid than the image), so a reader that rasterises them gets the true cross-section back.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import contourpy
import numpy as np
from numpy.typing import NDArray
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import RTStructureSetStorage

from dicom_io.geometry import SliceStack

FloatArray = NDArray[np.float64]
ROI_COLOURS = {"tumour": [255, 0, 0], "other": [0, 160, 255]}


@dataclass(frozen=True)
class Contour:
    """One closed planar contour (n x 3 patient coordinates) on one referenced image."""

    referenced_sop_class_uid: str
    referenced_sop_instance_uid: str
    points: FloatArray


def slice_contours(
    implicit: Callable[[FloatArray], FloatArray],
    stack: SliceStack,
    index: int,
    fine_spacing_mm: float = 0.4,
) -> list[FloatArray]:
    """Closed contours of ``implicit < 0`` on slice ``index``, each (n, 3) in patient coordinates.

    The implicit function is sampled on a grid ``fine_spacing_mm`` apart (at least the image
    grid), padded with "outside" so every contour closes, and traced at level 0.
    """
    factor = max(1, round(min(stack.pixel_spacing_mm) / fine_spacing_mm))
    coarse = implicit(stack.slice_points(index))
    near = coarse < max(stack.pixel_spacing_mm)  # pixels whose centre is within a pixel of it
    if not near.any():
        return []
    rows, cols = np.nonzero(near)
    r0, r1 = max(rows.min() - 1, 0), min(rows.max() + 2, stack.rows)
    c0, c1 = max(cols.min() - 1, 0), min(cols.max() + 2, stack.columns)
    # fine grid over the bounding box of those pixels, sub-pixel centres as in slice_points
    fine_r = r0 + (np.arange((r1 - r0) * factor) + 0.5) / factor - 0.5
    fine_c = c0 + (np.arange((c1 - c0) * factor) + 0.5) / factor - 0.5
    values = implicit(stack.pixel_to_patient(index, fine_r[:, None], fine_c[None, :]))
    if not (values < 0).any():
        return []
    padded = np.pad(values, 1, constant_values=max(1.0, float(values.max())))
    lines = contourpy.contour_generator(z=padded, line_type="Separate").lines(0.0)
    out = []
    for line in lines:
        xy = np.asarray(line, dtype=float)
        if len(xy) < 4:
            continue
        if np.allclose(xy[0], xy[-1]):
            xy = xy[:-1]
        # fine-grid index (x: column, y: row), minus the padding, back to image pixel indices
        col = c0 + (xy[:, 0] - 1 + 0.5) / factor - 0.5
        row = r0 + (xy[:, 1] - 1 + 0.5) / factor - 0.5
        out.append(stack.pixel_to_patient(index, row, col).reshape(-1, 3))
    return out


def build_rtstruct(
    *,
    referenced: Sequence[Dataset],
    contours: Sequence[Contour],
    roi_name: str,
    series_instance_uid: str,
    series_number: int,
    sop_instance_uid: str,
    when: datetime.datetime,
    series_description: str,
) -> Dataset:
    """An RTSTRUCT with one ROI (``roi_name``) whose contours lie on the ``referenced`` images.

    Patient, study and equipment attributes are left to the caller. Raises ``ValueError`` when
    there is nothing to reference or a contour names an image outside ``referenced``.
    """
    if not referenced:
        raise ValueError("an RTSTRUCT must reference the images its contours lie on")
    known = {ds.SOPInstanceUID for ds in referenced}
    for contour in contours:
        if contour.referenced_sop_instance_uid not in known:
            raise ValueError("contour references an image that is not in the referenced series")
    first = referenced[0]
    ds = Dataset()
    ds.SOPClassUID = RTStructureSetStorage
    ds.SOPInstanceUID = sop_instance_uid
    ds.Modality = "RTSTRUCT"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.SeriesDate = ds.StructureSetDate = ds.InstanceCreationDate = f"{when:%Y%m%d}"
    ds.SeriesTime = ds.StructureSetTime = ds.InstanceCreationTime = f"{when:%H%M%S}"
    ds.OperatorsName = ""
    ds.FrameOfReferenceUID = first.FrameOfReferenceUID
    ds.PositionReferenceIndicator = ""
    ds.InstanceNumber = 1
    ds.StructureSetLabel = "Tumour VOI"
    ds.StructureSetName = "Tumour VOI"
    ds.ApprovalStatus = "UNAPPROVED"

    image_refs = DicomSequence()
    for image in referenced:
        ref = Dataset()
        ref.ReferencedSOPClassUID = image.SOPClassUID
        ref.ReferencedSOPInstanceUID = image.SOPInstanceUID
        image_refs.append(ref)
    rt_series = Dataset()
    rt_series.SeriesInstanceUID = first.SeriesInstanceUID
    rt_series.ContourImageSequence = image_refs
    rt_study = Dataset()
    rt_study.ReferencedSOPClassUID = (
        "1.2.840.10008.3.1.2.3.1"  # Detached Study Management (retired)
    )
    rt_study.ReferencedSOPInstanceUID = first.StudyInstanceUID
    rt_study.RTReferencedSeriesSequence = DicomSequence([rt_series])
    frame = Dataset()
    frame.FrameOfReferenceUID = first.FrameOfReferenceUID
    frame.RTReferencedStudySequence = DicomSequence([rt_study])
    ds.ReferencedFrameOfReferenceSequence = DicomSequence([frame])

    roi = Dataset()
    roi.ROINumber = 1
    roi.ReferencedFrameOfReferenceUID = first.FrameOfReferenceUID
    roi.ROIName = roi_name
    roi.ROIGenerationAlgorithm = "MANUAL"
    ds.StructureSetROISequence = DicomSequence([roi])

    contour_items = DicomSequence()
    for number, contour in enumerate(contours, start=1):
        item = Dataset()
        image_ref = Dataset()
        image_ref.ReferencedSOPClassUID = contour.referenced_sop_class_uid
        image_ref.ReferencedSOPInstanceUID = contour.referenced_sop_instance_uid
        item.ContourImageSequence = DicomSequence([image_ref])
        item.ContourGeometricType = "CLOSED_PLANAR"
        item.NumberOfContourPoints = len(contour.points)
        item.ContourNumber = number
        item.ContourData = [f"{v:.3f}".rstrip("0").rstrip(".") for v in contour.points.ravel()]
        contour_items.append(item)
    roi_contour = Dataset()
    roi_contour.ReferencedROINumber = 1
    roi_contour.ROIDisplayColor = ROI_COLOURS["tumour"]
    roi_contour.ContourSequence = contour_items
    ds.ROIContourSequence = DicomSequence([roi_contour])

    observation = Dataset()
    observation.ObservationNumber = 1
    observation.ReferencedROINumber = 1
    observation.RTROIInterpretedType = "GTV"
    observation.ROIInterpreter = ""
    ds.RTROIObservationsSequence = DicomSequence([observation])
    return ds
