"""The scores of a case as a DICOM Structured Report: TID 1500 Measurement Report in a
Comprehensive 3D SR (highdicom), in the source study, in its own series.

Content: the observer is a device (the algorithm: name, manufacturer, model bundle version);
each analysis is a TID 1501 measurement group tracking the tumour (one tracking UID per case),
with its time point, finding type and site, the algorithm identification, the source images,
numeric measurements with UCUM units, coded qualitative evaluations and a COMPOSITE reference
to the tumour mask (RTSTRUCT or SEG) the inputs were built from. When every group's mask is a
segment of a DICOM SEG (automatic outlines always are), the groups are TID 1411 volumetric ROI
groups instead, referencing that segment and the series it segments: the template's own place
for measurements of a segmented region, which viewers follow to the outline. It is all or none
because PixelMed's validator checks every group of a report against TID 1411 once one is there
(a TID 1501 group beside it fails "missing Image Region / Referenced Segment / Volume
Surface"); a TID 1411 group has no place for the source images, so the segment's source series
names them. Concepts without a standard
code use the private coding scheme ``99LARC``, declared in the Coding Scheme Identification
Sequence. A text item says the report is for research use. A new version of a case's report
references the one it supersedes (Predecessor Documents Sequence).

UIDs come from the caller (derive them with :func:`derive_uid` from an idempotency key), and
the content date and time are given too, so the same inputs always give the same object.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.sr.codedict import codes

PRIVATE_SCHEME = "99LARC"
RESEARCH_USE = "Research use only - not for diagnostic decisions."

# private concepts: key -> meaning (the code value is the key)
PRIVATE_MEANINGS: dict[str, str] = {
    "response-prediction": "Prediction of response to neoadjuvant therapy",
    "dm-risk": "Distant metastasis risk",
    "tumour-measurements": "Tumour measurements from the mask",
    "p-good-response-fdl": "Probability of good response, fused deep-learning model",
    "p-good-response-cr": "Probability of good response, clinical-radiological model",
    "p-good-response-crd": "Probability of good response, combined model",
    "predicted-response": "Predicted response",
    "good-response": "Good response",
    "poor-response": "Poor response",
    "signature-pre-t2": "Deep-learning signature, baseline T2W",
    "signature-pre-dwi": "Deep-learning signature, baseline DWI",
    "signature-pre-ce": "Deep-learning signature, baseline CE-T1",
    "signature-post-t2": "Deep-learning signature, restaging T2W",
    "signature-post-dwi": "Deep-learning signature, restaging DWI",
    "signature-post-ce": "Deep-learning signature, restaging CE-T1",
    "max-wall-thickness": "Maximum tumour thickness",
    "dm-prob-t2w": "Distant metastasis probability, T2W network",
    "dm-prob-adc": "Distant metastasis probability, ADC network",
    "dl-prob": "Deep-learning distant metastasis score (T2W + ADC)",
    "dlrs": "Deep-learning risk score (Cox linear predictor)",
    "dm-risk-group": "Distant metastasis risk group",
    "dmfs-3y": "3-year distant-metastasis-free survival probability",
    "nomogram-dmfs-3y": "3-year distant-metastasis-free survival probability, nomogram",
    "recurrence-subtype": "Deep-learning recurrence subtype",
    "rrs": "Recurrence risk score (Cox linear predictor)",
    "rfs-5y": "5-year recurrence-free survival probability",
    "tumour-mask": "Tumour mask the inputs were built from",
    "subtype-rdls1": "RDLS1, poor-prognosis recurrence subtype",
    "subtype-rdls2": "RDLS2, favourable recurrence subtype",
    "subtype-rdls3": "RDLS3, intermediate recurrence subtype",
}

# TID 1500's Procedure Reported comes from CID 100 (Quantitative Diagnostic Imaging Procedures):
# T2W + DWI + CE-T1 of the rectum is a multiparametric MRI
PROCEDURE_REPORTED = hd.sr.CodedConcept("126020", "DCM", "Multiparametric MRI")
PROCESSING_ALGORITHM = hd.sr.CodedConcept("109103", "DCM", "Processing Algorithm")
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
MEASUREMENT_METHOD = "370129005"  # SCT "Measurement Method"

UNITS = {
    "mm": codes.UCUM.Millimeter,
    "ml": hd.sr.CodedConcept("mL", "UCUM", "milliliter"),
    "1": codes.UCUM.NoUnits,
}

# standard concepts the groups may use, by key
STANDARD: dict[str, hd.sr.CodedConcept] = {
    "long-axis": hd.sr.CodedConcept("103339001", "SCT", "Long Axis"),
    "volume": hd.sr.CodedConcept("118565006", "SCT", "Volume"),
    "high-risk": hd.sr.CodedConcept("15508007", "SCT", "High risk"),
    "low-risk": hd.sr.CodedConcept("75976002", "SCT", "Low risk"),
}


def concept(key: str) -> hd.sr.CodedConcept:
    """The coded concept of ``key``: a standard code where one exists, else ``99LARC``."""
    if key in STANDARD:
        return STANDARD[key]
    if key in PRIVATE_MEANINGS:
        return hd.sr.CodedConcept(key, PRIVATE_SCHEME, PRIVATE_MEANINGS[key])
    raise ValueError(f"no code for {key!r}: add it to dicom_io.sr.PRIVATE_MEANINGS")


_UID_NAMESPACE = uuid.UUID("3f0b6c1e-5d2a-5b8e-9c41-6a7f2e8d1b90")


def derive_uid(key: str, *parts: str) -> str:
    """A UID that depends only on ``key`` and ``parts`` (a retry re-creates it): the 2.25 form
    of a name-based (version 5) UUID, as PS3.5 B.2 allows."""
    name = "\0".join([key, *parts])
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, name).int}"


@dataclass(frozen=True)
class Reference:
    """An instance referenced from the report."""

    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str = ""
    study_instance_uid: str = ""
    segment_number: int = 0  # a SEG's segment meant (0: the object as a whole)
    source_series_uid: str = ""  # the series a SEG segments

    @property
    def segment(self) -> bool:
        """Whether this names one segment of a DICOM SEG and the series it segments."""
        return bool(
            self.sop_class_uid == SEGMENTATION_STORAGE
            and self.segment_number
            and self.source_series_uid
        )


@dataclass
class AnalysisGroup:
    """One measurement group: what was measured or predicted, at which time point, from what."""

    title: str  # key of the group's method concept (e.g. "response-prediction")
    time_point: str  # "baseline" or "restaging"
    measurements: list[tuple[str, float, str]] = field(default_factory=list)  # key, value, unit
    evaluations: list[tuple[str, str]] = field(default_factory=list)  # key, value key
    source_images: list[Reference] = field(default_factory=list)
    mask: Reference | None = None


@dataclass(frozen=True)
class Algorithm:
    """The algorithm that made the report (IHE AI Results: name, version, manufacturer)."""

    name: str
    version: str
    manufacturer: str

    @property
    def device_uid(self) -> str:
        """The algorithm's Device UID (the SR's observer device, the contributing equipment)."""
        return derive_uid(self.name, self.manufacturer, "device")


def contributing_algorithm(algorithm: Algorithm, when: dt.datetime) -> hd.ContributingEquipment:
    """The Contributing Equipment item IHE AI Results asks of every output object: purpose
    "Processing Algorithm", manufacturer, model (the bundle's name), software version (the
    bundle's version) and device UID, contributed at ``when``."""
    item = hd.ContributingEquipment(
        manufacturer=algorithm.manufacturer,
        purpose_of_reference=PROCESSING_ALGORITHM,
        manufacturer_model_name=algorithm.name[:64],
        software_versions=algorithm.version[:64],
        contribution_datetime=when,
        contribution_description="AI analysis of rectal cancer MRI (research use only)",
    )
    item.DeviceUID = algorithm.device_uid
    return item


Group = (
    hd.sr.MeasurementsAndQualitativeEvaluations
    | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
)


def _group(
    group: AnalysisGroup, algorithm: Algorithm, tracking_uid: str, volumetric: bool
) -> Group:
    algorithm_id = hd.sr.AlgorithmIdentification(name=algorithm.name, version=algorithm.version)
    measurements = [
        hd.sr.Measurement(
            name=concept(key),
            value=float(value),
            unit=UNITS[unit],
            algorithm_id=algorithm_id,
        )
        for key, value, unit in group.measurements
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(name=concept(key), value=concept(value))
        for key, value in group.evaluations
    ]
    common: dict[str, Any] = {
        "tracking_identifier": hd.sr.TrackingIdentifier(
            uid=tracking_uid, identifier="rectal tumour"
        ),
        "time_point_context": hd.sr.TimePointContext(time_point=group.time_point),
        "finding_type": codes.SCT.Tumor,
        "finding_sites": [hd.sr.FindingSite(anatomic_location=codes.SCT.Rectum)],
        "method": concept(group.title),
        "algorithm_id": algorithm_id,
        "measurements": measurements or None,
        "qualitative_evaluations": evaluations or None,
    }
    mask = group.mask
    built: Group
    if volumetric and mask is not None and mask.segment:
        built = hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=mask.sop_class_uid,
                sop_instance_uid=mask.sop_instance_uid,
                segment_number=mask.segment_number,
                source_series=hd.sr.SourceSeriesForSegmentation(mask.source_series_uid),
            ),
            **common,
        )
        mask = None  # the segment reference is the mask's
    else:
        sources = [
            hd.sr.SourceImageForMeasurementGroup(r.sop_class_uid, r.sop_instance_uid)
            for r in group.source_images
        ]
        built = hd.sr.MeasurementsAndQualitativeEvaluations(source_images=sources or None, **common)
    container = built[0]
    for item in container.ContentSequence:  # TID 1501/1411: HAS CONCEPT MOD (highdicom 0.28
        if item.ConceptNameCodeSequence[0].value == MEASUREMENT_METHOD:  # writes CONTAINS)
            item.RelationshipType = hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD.value
    if mask is not None:
        container.ContentSequence.append(
            hd.sr.CompositeContentItem(
                name=concept("tumour-mask"),
                referenced_sop_class_uid=mask.sop_class_uid,
                referenced_sop_instance_uid=mask.sop_instance_uid,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
        )
    return built


QUALITATIVE_EVALUATIONS = hd.sr.CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")


def measurement_report(
    evidence: Sequence[Dataset],
    groups: Sequence[AnalysisGroup],
    algorithm: Algorithm,
    key: str,
    content_datetime: dt.datetime,
    series_number: int = 9701,
    predecessor: Reference | None = None,
    comments: Sequence[str] = (),
) -> hd.sr.Comprehensive3DSR:
    """The SR of one case version, in the study of ``evidence[0]``.

    ``evidence``: the headers (no pixels needed) of every instance the groups reference, the
    target study's first. ``key``: the idempotency key the UIDs derive from. ``predecessor``:
    the report this one supersedes. ``comments``: more text items (e.g. the radiologist-read
    inputs the scores used).
    """
    if not evidence:
        raise ValueError("an SR needs the headers of the instances it references as evidence")
    if not groups:
        raise ValueError("an SR needs at least one analysis group")
    target_study = str(evidence[0].StudyInstanceUID)
    ordered = [e for e in evidence if str(e.StudyInstanceUID) == target_study]
    ordered += [e for e in evidence if str(e.StudyInstanceUID) != target_study]
    device = hd.sr.DeviceObserverIdentifyingAttributes(
        uid=algorithm.device_uid,
        name=algorithm.name,
        manufacturer_name=algorithm.manufacturer,
        model_name=f"{algorithm.name} {algorithm.version}",
    )
    observation = hd.sr.ObservationContext(
        observer_device_context=hd.sr.ObserverContext(
            observer_type=codes.DCM.Device, observer_identifying_attributes=device
        )
    )
    tracking_uid = derive_uid(key, "tracking")
    volumetric = all(g.mask is not None and g.mask.segment for g in groups)
    report = hd.sr.MeasurementReport(
        observation_context=observation,
        procedure_reported=PROCEDURE_REPORTED,
        imaging_measurements=[_group(g, algorithm, tracking_uid, volumetric) for g in groups],
    )
    # TID 1500 row 12: the report's qualitative evaluations, free text in its row 14
    evaluations = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    evaluations.ContentSequence = DicomSequence(
        [
            hd.sr.TextContentItem(
                name=codes.DCM.Comment,
                value=text,
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for text in (RESEARCH_USE, *comments)
        ]
    )
    report[0].ContentSequence.append(evaluations)
    sr = hd.sr.Comprehensive3DSR(
        evidence=ordered,
        content=report[0],
        series_instance_uid=derive_uid(key, "sr-series"),
        series_number=series_number,
        sop_instance_uid=derive_uid(key, "sr"),
        instance_number=1,
        manufacturer=algorithm.manufacturer,
        is_complete=True,
        is_final=False,
        is_verified=False,
        series_description=f"{algorithm.name} scores (research use)",
    )
    sr.ContributingEquipmentSequence.append(contributing_algorithm(algorithm, content_datetime))
    stamp(sr, content_datetime)
    scheme = Dataset()
    scheme.CodingSchemeDesignator = PRIVATE_SCHEME
    scheme.CodingSchemeName = "larc rectal MRI AI concepts"
    scheme.CodingSchemeResponsibleOrganization = "larc project"
    sr.CodingSchemeIdentificationSequence = [scheme]
    if predecessor is not None:
        sr.PredecessorDocumentsSequence = [_hierarchical(predecessor)]
    return sr


def _hierarchical(ref: Reference) -> Dataset:
    sop = Dataset()
    sop.ReferencedSOPClassUID = ref.sop_class_uid
    sop.ReferencedSOPInstanceUID = ref.sop_instance_uid
    series = Dataset()
    series.SeriesInstanceUID = ref.series_instance_uid
    series.ReferencedSOPSequence = [sop]
    study = Dataset()
    study.StudyInstanceUID = ref.study_instance_uid
    study.ReferencedSeriesSequence = [series]
    return study


def stamp(ds: Dataset, when: dt.datetime) -> None:
    """Set content, series and creation date/time of ``ds`` to ``when`` (the same on every
    retry, so a re-sent object is byte-identical)."""
    date, time = when.strftime("%Y%m%d"), when.strftime("%H%M%S")
    for prefix in ("Content", "Series", "InstanceCreation"):
        if f"{prefix}Date" in ds:
            setattr(ds, f"{prefix}Date", date)
            setattr(ds, f"{prefix}Time", time)
    for item in ds.get("ContributingEquipmentSequence", []):
        if "ContributionDateTime" in item:
            item.ContributionDateTime = date + time


@dataclass
class ReadGroup:
    """One measurement group as read back from an SR (for display)."""

    method: str  # meaning of the group's method concept
    time_point: str
    measurements: list[tuple[str, str, float, str]]  # code, meaning, value, unit
    evaluations: list[tuple[str, str, str]]  # code, meaning, value meaning
    # a TID 1411 group's referenced segment: SEG SOP Instance UID and segment number
    segment: tuple[str, int] | None = None


@dataclass
class ReadReport:
    """What a TID 1500 report says, read back with highdicom."""

    groups: list[ReadGroup]
    comments: list[str]
    predecessors: list[str]  # SOP Instance UIDs of the reports this one supersedes


def read_report(ds: Dataset) -> ReadReport:
    """The groups, measurements, evaluations, comments and predecessors of an SR written by
    :func:`measurement_report` (or any TID 1500 report)."""
    content: Any = hd.sr.Comprehensive3DSR.from_dataset(ds).content  # a MeasurementReport
    groups = []
    found = [*content.get_image_measurement_groups(),
             *content.get_volumetric_roi_measurement_groups()]  # fmt: skip
    for group in found:
        method = group.method.meaning if group.method is not None else ""
        segment = None
        time_point = ""
        for item in group[0].ContentSequence:
            name = item.ConceptNameCodeSequence[0]
            if name.CodeMeaning == "Time Point":
                time_point = str(item.TextValue)
            # read here, not with highdicom's referenced_segment: its parser reads every
            # item's CodeValue and fails on our Long Code Values (highdicom 0.28)
            if item.ValueType == "IMAGE" and name.get("CodeValue") == "121191":
                sop = item.ReferencedSOPSequence[0]
                segment = (str(sop.ReferencedSOPInstanceUID), int(sop.ReferencedSegmentNumber))
        groups.append(
            ReadGroup(
                method,
                time_point,
                [
                    (m.name.value, m.name.meaning, float(m.value), m.unit.value)
                    for m in group.get_measurements()
                ],
                [
                    (e.name.value, e.name.meaning, e.value.meaning)
                    for e in group.get_qualitative_evaluations()
                ],
                segment,
            )
        )
    items = list(ds.ContentSequence)
    for item in ds.ContentSequence:  # TID 1500 row 12 (larc < 0.2 wrote them at the root)
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == (
            QUALITATIVE_EVALUATIONS.value
        ):
            items += list(item.get("ContentSequence", []))
    comments = [
        str(item.TextValue)
        for item in items
        if item.ValueType == "TEXT" and item.ConceptNameCodeSequence[0].CodeMeaning == "Comment"
    ]
    predecessors = [
        str(sop.ReferencedSOPInstanceUID)
        for study in ds.get("PredecessorDocumentsSequence", [])
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    ]
    return ReadReport(groups, comments, predecessors)
