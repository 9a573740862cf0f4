"""The JSON shapes of the web API (published in its OpenAPI document)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Scores(BaseModel):
    """A case's main scores: P(good response) per model (response case) or the distant
    metastasis risk (baseline case)."""

    p_good_fdl: float | None = None
    p_good_cr: float | None = None
    p_good_crd: float | None = None
    predicted: str | None = Field(default=None, description="good or poor (FDL model)")
    risk_group: str | None = Field(default=None, description="high or low DM risk")
    dlrs: float | None = None
    dmfs_3y: float | None = None
    nomogram_dmfs_3y: float | None = None
    subtype: str | None = None
    unavailable: dict[str, str] = Field(
        default={},
        description="outputs not sent, in words, each with why: not in the bundle, or not "
        "backed by its validation (scoring.require_validated)",
    )


class CaseRow(BaseModel):
    """One worklist row."""

    case_id: str
    patient_id: str
    patient_name: str
    kind: str = Field(description="response (baseline + restaging) or baseline (DM risk)")
    version: int
    state: str
    reason: str
    baseline_date: str
    restaging_date: str
    timepoints: list[str] = Field(description="timepoints found among the patient's studies")
    automatic_outlines: list[str] = Field(
        default=[],
        description="per automatic tumour outline the case uses or waits on: unreviewed, "
        "accepted, rejected, failed (its quality check) or pending (being made)",
    )
    scores: Scores
    scored_version: int | None = Field(description="case version the scores belong to")
    model: str | None
    received_at: str | None
    scored_at: str | None
    updated_at: str | None


class WorklistPage(BaseModel):
    """One page of the worklist."""

    total: int
    page: int
    page_size: int
    pages: int
    counts: dict[str, int] = Field(description="cases in each state (all cases, unfiltered)")
    items: list[CaseRow]


class SeriesOut(BaseModel):
    """A series and the role larc gave it."""

    series_uid: str
    number: int | None
    modality: str | None
    description: str
    instances: int
    role: str | None
    reason: str
    used: bool = Field(description="an image input of the case")
    mask: bool = Field(description="the tumour mask the case used")


class StudyOut(BaseModel):
    """A study of the patient."""

    study_uid: str
    date: str
    description: str
    accession_number: str
    timepoint: str | None
    timepoint_reason: str
    stable: bool
    in_case: bool
    viewer_url: str | None
    series: list[SeriesOut]


class Measurement(BaseModel):
    """A numeric SR content item."""

    code: str
    name: str
    value: float
    unit: str


class Evaluation(BaseModel):
    """A coded SR content item."""

    code: str
    name: str
    value: str


class SrGroup(BaseModel):
    """A TID 1501 measurement group."""

    method: str
    time_point: str
    measurements: list[Measurement]
    evaluations: list[Evaluation]


class SrContent(BaseModel):
    """What the stored SR says."""

    sop_instance_uid: str
    groups: list[SrGroup] = []
    comments: list[str] = []
    predecessors: list[str] = Field(default=[], description="SRs this one supersedes")
    unreadable: list[str] = []


class ImageOut(BaseModel):
    """A heat-map Secondary Capture (PNG at /api/cases/{case_id}/images/{sop}.png)."""

    sop_instance_uid: str
    caption: str | None


class ExportOut(BaseModel):
    """Sending one result to one destination."""

    destination: str
    state: str
    attempts: int
    last_error: str | None
    sent_at: str | None
    committed_by: str | None = None  # storage commitment: the AE title that committed all
    verified_by: str | None = None  # read-back: how the destination confirmed it holds all


class ResultOut(BaseModel):
    """The results of one case version."""

    version: int
    created_at: str | None
    model: str | None
    scores: Scores
    not_scored: dict[str, str]
    measured_features: list[str]
    sr: SrContent
    images: list[ImageOut]
    exports: list[ExportOut]


class HistoryEntry(BaseModel):
    """A state change of the case."""

    version: int
    state: str
    reason: str
    at: str | None


class AuditEntry(BaseModel):
    """A change of a radiologist-read value."""

    case_version: int
    field: str
    old_value: str | None
    new_value: str | None
    who: str
    via: str
    at: str | None


class PairingChoiceOut(BaseModel):
    """An operator's choice of the patient's baseline and restaging studies (audit)."""

    baseline_study_uid: str | None = Field(description="None: back to larc's rules")
    restaging_study_uid: str | None
    who: str
    via: str
    note: str
    at: str | None


class OutlineReviewOut(BaseModel):
    """One review of an automatic outline (the audit)."""

    decision: str = Field(description="accepted or rejected")
    who: str
    via: str
    note: str
    at: str | None


class OutlineOut(BaseModel):
    """An automatic tumour outline of the case (PNG drawn on the T2W at
    /api/cases/{case_id}/outlines/{image_series_uid}.png, ?sequence=dwi for the DWI)."""

    timepoint: str
    image_series_uid: str = Field(description="the T2W it outlines")
    dwi_series_uid: str | None = Field(description="the DWI it is carried to")
    seg_series_uid: str | None = Field(description="the automatic DICOM SEG (when it passed)")
    model: str
    state: str = Field(description="requested, queued, passed (stored as a SEG) or failed")
    reason: str = Field(description="the quality check's finding")
    volume_ml: float | None
    mean_probability: float | None
    review: str | None = Field(description="accepted, rejected, or None: not reviewed")
    reviewed_by: str | None
    reviewed_at: str | None
    review_note: str
    drawable: bool = Field(description="whether there is an outline to draw")
    reviews: list[OutlineReviewOut] = Field(description="newest first")


class OutlineReviewIn(BaseModel):
    """A radiologist's review of an automatic outline."""

    decision: str = Field(description="accepted (the next SR records it as reviewed) or "
                          "rejected (the case waits for a drawn mask)")  # fmt: skip
    note: str = ""


class OutlineReviewResult(BaseModel):
    """What reviewing did: recorded; larc serve decides the patient's cases again within
    seconds (a new version)."""

    case_id: str
    image_series_uid: str
    decision: str
    recorded: bool


class CaseDetail(BaseModel):
    """Everything larc knows of a case."""

    case_id: str
    patient_id: str
    patient_name: str
    kind: str
    version: int
    state: str
    reason: str
    updated_at: str | None
    outlines: list[OutlineOut] = Field(default=[], description="automatic tumour outlines")
    studies: list[StudyOut]
    results: list[ResultOut] = Field(description="newest first")
    history: list[HistoryEntry] = Field(description="newest first")
    readings: dict[str, str]
    audit: list[AuditEntry] = Field(description="newest first")
    pairing_choices: list[PairingChoiceOut] = Field(default=[], description="newest first")


class ReadingFieldOut(BaseModel):
    """A radiologist-read value the case can be given."""

    name: str
    label: str
    unit: str
    choices: list[str] = Field(description="allowed values; empty: a number")
    low: float
    high: float
    used_by_model: bool = Field(description="a feature of the bundle's CR/CRD model")


class ReadingsIn(BaseModel):
    """Values to store, by field name; an empty string removes a value."""

    values: dict[str, str]


class Change(BaseModel):
    """One changed value."""

    field: str
    old_value: str | None
    new_value: str | None


class ReadingsOut(BaseModel):
    """What saving did: the case's version and whether it is being re-scored."""

    case_id: str
    version: int
    rescoring: bool
    changes: list[Change]


class TimepointsIn(BaseModel):
    """The patient's baseline and restaging studies, chosen by hand (both None: back to
    larc's rules). The restaging must be dated after the baseline."""

    baseline_study_uid: str | None
    restaging_study_uid: str | None = None
    note: str = ""


class TimepointsOut(BaseModel):
    """What choosing did: the choice is recorded; larc serve pairs the patient's cases again
    within seconds (new versions)."""

    case_id: str
    patient_cases: list[str]
    recorded: bool
