"""A synthetic cohort: patients, their baseline and restaging studies, labels and a manifest."""

from __future__ import annotations

import csv
import datetime
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dicom_io.synthetic.appearance import StudyScene, TextureField
from dicom_io.synthetic.biology import SUBTYPE_NAMES, PatientBiology, Timepoint, draw_patient
from dicom_io.synthetic.study import Identity, StudyOptions, StudyRecord, StudyWriter
from dicom_io.synthetic.vendors import VENDORS, Role

GENERATOR_VERSION = "1"
TIMEPOINTS = ("baseline", "restaging")
_STREAM_BIOLOGY, _STREAM_COMPOSITION, _STREAM_IMAGES = 0, 1, 2
_FIRST_DATE = datetime.date(2024, 1, 8)
_STUDY_DESCRIPTIONS = (
    "MRI PELVIS RECTUM",
    "MR Rectum Staging",
    "MR PELVIS W/WO CONTRAST",
    "MRI RECTAL CANCER PROTOCOL",
)
_RESTAGING_DESCRIPTIONS = ("MR Rectum Restaging", "MRI PELVIS RECTUM", "MR PELVIS W/WO CONTRAST")
_ROI_NAMES = ("Tumour", "GTV", "tumor", "Lesion 1", "GTV_rectum")
LABEL_COLUMNS_SERIES = (Role.T2W, Role.DWI, Role.ADC, Role.CE_T1, Role.RTSTRUCT, Role.SEG)


@dataclass(frozen=True)
class CohortSpec:
    """What to generate. The same spec always gives byte-identical files."""

    patients: int = 20
    seed: int = 0
    matrix: int = 64
    slices: int = 24
    missing_fraction: float = 0.15
    seg_fraction: float = 0.4
    id_prefix: str = "SYN"
    series: tuple[str, ...] = tuple(Role)  # which series each study gets

    def __post_init__(self) -> None:
        unknown = set(self.series) - {r.value for r in Role}
        if unknown:
            known = ", ".join(r.value for r in Role)
            raise ValueError(f"unknown series {', '.join(sorted(unknown))}: choose from {known}")
        if not {Role.T2W, Role.RTSTRUCT} <= set(self.series):
            raise ValueError("series must include t2w and rtstruct (the tumour is drawn on T2W)")
        if {Role.ADC, Role.SEG} & set(self.series) and Role.DWI not in self.series:
            raise ValueError("adc and seg are made from the DWI: include dwi too")
        if self.patients < 1:
            raise ValueError("patients must be at least 1")
        if not 16 <= self.matrix <= 1024:
            raise ValueError("matrix must be between 16 and 1024 pixels")
        if not 4 <= self.slices <= 200:
            raise ValueError("slices must be between 4 and 200")
        for name in ("missing_fraction", "seg_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if not self.id_prefix.isalnum() or len(self.id_prefix) > 8:
            raise ValueError("id_prefix must be 1-8 letters or digits")


@dataclass(frozen=True)
class PatientPlan:
    """Which pieces a patient's studies have (drawn apart from the biology)."""

    studies: tuple[str, ...]
    vendors: dict[str, str]
    with_adc: dict[str, bool]
    with_seg: dict[str, bool]
    dates: dict[str, datetime.datetime]
    descriptions: dict[str, str]
    roi_name: str
    birth_month: int


@dataclass
class PatientResult:
    """One generated patient: identity, biology and the studies written."""

    index: int
    patient_id: str
    biology: PatientBiology
    plan: PatientPlan
    studies: dict[str, StudyRecord]


def patient_rng(seed: int, index: int, stream: int) -> np.random.Generator:
    """The generator for one stream of one patient: patients do not depend on the cohort size."""
    return np.random.default_rng([seed, index, stream])


def plan_patient(spec: CohortSpec, index: int) -> PatientPlan:
    """Draw which studies and series the patient has, scanner vendors and dates."""
    rng = patient_rng(spec.seed, index, _STREAM_COMPOSITION)
    studies: tuple[str, ...] = TIMEPOINTS
    if rng.random() < spec.missing_fraction:
        studies = (TIMEPOINTS[int(rng.integers(0, 2))],)
    vendor_keys = sorted(VENDORS)
    first = vendor_keys[int(rng.integers(0, len(vendor_keys)))]
    second = first if rng.random() < 0.85 else vendor_keys[int(rng.integers(0, len(vendor_keys)))]
    baseline = datetime.datetime.combine(
        _FIRST_DATE + datetime.timedelta(days=int(rng.integers(0, 700))),
        datetime.time(hour=int(rng.integers(7, 18)), minute=int(rng.integers(0, 60))),
    )
    restaging = datetime.datetime.combine(
        baseline.date() + datetime.timedelta(days=int(rng.integers(56, 99))),
        datetime.time(hour=int(rng.integers(7, 18)), minute=int(rng.integers(0, 60))),
    )
    return PatientPlan(
        studies=studies,
        vendors={"baseline": first, "restaging": second},
        with_adc={t: bool(rng.random() >= spec.missing_fraction) for t in TIMEPOINTS},
        with_seg={t: bool(rng.random() < spec.seg_fraction) for t in TIMEPOINTS},
        dates={"baseline": baseline, "restaging": restaging},
        descriptions={
            "baseline": str(rng.choice(_STUDY_DESCRIPTIONS)),
            "restaging": str(rng.choice(_RESTAGING_DESCRIPTIONS)),
        },
        roi_name=str(rng.choice(_ROI_NAMES)),
        birth_month=int(rng.integers(1, 13)),
    )


def patient_id(spec: CohortSpec, index: int) -> str:
    """PatientID of patient ``index`` (0-based)."""
    return f"{spec.id_prefix}{index + 1:04d}"


def patient_scenes(spec: CohortSpec, index: int, biology: PatientBiology) -> dict[str, StudyScene]:
    """How each timepoint's study sees the patient (texture, table position, coil bias).

    Deterministic, so tests and tools can re-create the ground truth of any generated study.
    """
    rng = patient_rng(spec.seed, index, _STREAM_IMAGES)
    texture = TextureField(rng, np.asarray(biology.baseline.anatomy.tumour_centre))
    scenes = {}
    for name in TIMEPOINTS:
        offset = rng.normal(0, 3.0, 3)
        bias = rng.normal(0, 0.2, 3)
        scenes[name] = StudyScene(
            timepoint=getattr(biology, name),
            texture=texture,
            offset_mm=(float(offset[0]), float(offset[1]), float(offset[2])),
            bias=(float(bias[0]), float(bias[1]), float(bias[2])),
        )
    return scenes


def generate_patient(spec: CohortSpec, index: int, out_dir: Path) -> PatientResult:
    """Generate and write one patient's studies under ``out_dir``/<PatientID>/."""
    biology = draw_patient(patient_rng(spec.seed, index, _STREAM_BIOLOGY))
    plan = plan_patient(spec, index)
    pid = patient_id(spec, index)
    first_date = plan.dates["baseline"].date()
    identity = Identity(
        patient_id=pid,
        patient_name=f"SYNTHETIC^P{index + 1:04d}",
        birth_date=datetime.date(first_date.year - biology.age, plan.birth_month, 15),
        sex=biology.sex,
        seed=spec.seed,
    )
    scenes = patient_scenes(spec, index, biology)
    studies: dict[str, StudyRecord] = {}
    for name in plan.studies:
        writer = StudyWriter(
            out_dir=out_dir / pid,
            identity=identity,
            scene=scenes[name],
            vendor=VENDORS[plan.vendors[name]],
            timepoint=name,
            study_datetime=plan.dates[name],
            rng=patient_rng(spec.seed, index, _STREAM_IMAGES + 1 + TIMEPOINTS.index(name)),
            options=StudyOptions(
                matrix=spec.matrix,
                slices=spec.slices,
                with_adc=plan.with_adc[name],
                with_seg=plan.with_seg[name],
                series=frozenset(Role(r) for r in spec.series),
            ),
            study_description=plan.descriptions[name],
        )
        studies[name] = writer.write(plan.roi_name)
    return PatientResult(index, pid, biology, plan, studies)


def _yes_no(value: bool) -> int:
    return int(value)


def label_row(result: PatientResult) -> dict[str, Any]:
    """The labels CSV row of one patient: features, outcomes, oracle values and UIDs."""
    bio = result.biology
    row: dict[str, Any] = {
        "patient_id": result.patient_id,
        "has_baseline": _yes_no("baseline" in result.studies),
        "has_restaging": _yes_no("restaging" in result.studies),
        "age": bio.age,
        "sex": bio.sex,
        "cea_ng_ml": round(bio.cea_ng_ml, 2),
        "ca19_9_u_ml": round(bio.ca19_9_u_ml, 2),
        "distance_anal_verge_mm": round(bio.distance_anal_verge_mm, 1),
    }
    for prefix, name in (("pre", "baseline"), ("post", "restaging")):
        tp: Timepoint = getattr(bio, name)
        present = name in result.studies
        m = tp.measurements
        values = {
            "ld_mm": round(m.longest_diameter_mm, 1),
            "mwt_mm": round(m.max_wall_thickness_mm, 1),
            "volume_ml": round(m.volume_ml, 3),
            "mrt": tp.t_stage,
            "mrn": tp.n_stage,
            "crm": _yes_no(tp.crm_positive),
            "emvi": _yes_no(tp.emvi),
            "adc": round(tp.adc, 3),
        }
        for key, value in values.items():
            row[f"{prefix}_{key}"] = value if present else ""
    row.update(
        {
            "trg": bio.trg,
            "good_response": _yes_no(bio.good_response),
            "ypn_stage": bio.ypn_stage,
            "dm_event": _yes_no(bio.dm_event),
            "dm_time_months": round(bio.dm_time_months, 1),
            "rfs_event": _yes_no(bio.rfs_event),
            "rfs_time_months": round(bio.rfs_time_months, 1),
            "oracle_p_good": round(bio.oracle_p_good, 5),
            "oracle_regression": round(bio.regression, 5),
            "oracle_log_hazard_dm": round(bio.oracle_log_hazard_dm, 5),
            "oracle_log_hazard_rfs": round(bio.oracle_log_hazard_rfs, 5),
            "oracle_subtype": SUBTYPE_NAMES[bio.subtype - 1],
        }
    )
    for name in TIMEPOINTS:
        study = result.studies.get(name)
        row[f"{name}_date"] = f"{study.study_date:%Y-%m-%d}" if study else ""
        row[f"{name}_vendor"] = study.vendor if study else ""
        row[f"{name}_study_uid"] = study.study_instance_uid if study else ""
        for role in LABEL_COLUMNS_SERIES:
            series = study.series.get(role) if study else None
            row[f"{name}_{role.value}_series_uid"] = series.series_instance_uid if series else ""
    return row


@dataclass
class CohortResult:
    """A generated cohort: where it is and what each patient got."""

    spec: CohortSpec
    out_dir: Path
    labels_path: Path
    patients: list[PatientResult]


def _generate_one(args: tuple[CohortSpec, int, Path]) -> PatientResult:
    return generate_patient(*args)


def generate_cohort(spec: CohortSpec, out_dir: Path, workers: int | None = None) -> CohortResult:
    """Write the cohort's DICOM files, ``labels.csv`` and ``manifest.json`` under ``out_dir``.

    Patients are generated in ``workers`` processes (default: one per CPU); the files do not
    depend on it.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    if any(out_dir.iterdir()) and not (out_dir / "manifest.json").exists():
        raise FileExistsError(
            f"{out_dir} is not empty and holds no larc cohort: choose an empty or new folder"
        )
    jobs = [(spec, i, out_dir) for i in range(spec.patients)]
    workers = max(1, min(workers or os.cpu_count() or 1, spec.patients))
    if workers == 1:
        results = [_generate_one(job) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(_generate_one, jobs))
    rows = [label_row(r) for r in results]
    labels_path = out_dir / "labels.csv"
    with labels_path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    manifest = {
        "generator": "larc synth",
        "generator_version": GENERATOR_VERSION,
        "spec": asdict(spec),
        "patients": len(results),
        "studies": sum(len(r.studies) for r in results),
        "instances": sum(s.instance_count for r in results for s in r.studies.values()),
        "labels": labels_path.name,
        "note": "Synthetic data for testing only. Research use - not for diagnostic decisions.",
    }
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return CohortResult(spec, out_dir, labels_path, results)


def summary_rows(result: CohortResult) -> list[dict[str, str]]:
    """One short row per patient for people: studies, scanners, instances, tumour, outcome."""
    rows = []
    for patient in result.patients:
        bio = patient.biology
        studies = patient.studies
        rows.append(
            {
                "patient": patient.patient_id,
                "studies": " + ".join(f"{t} {s.study_date:%Y-%m-%d}" for t, s in studies.items()),
                "vendor": "/".join(dict.fromkeys(s.vendor for s in studies.values())),
                "series": str(sum(len(s.series) for s in studies.values())),
                "files": str(sum(s.instance_count for s in studies.values())),
                "missing": ", ".join(_missing_pieces(patient)) or "-",
                "vol_pre_ml": f"{bio.baseline.measurements.volume_ml:.1f}",
                "vol_post_ml": f"{bio.restaging.measurements.volume_ml:.1f}",
                "TRG": str(bio.trg),
                "response": "good" if bio.good_response else "poor",
                "p_good": f"{bio.oracle_p_good:.2f}",
                "DM": f"yes@{bio.dm_time_months:.0f}mo" if bio.dm_event else "no",
            }
        )
    return rows


def _missing_pieces(patient: PatientResult) -> list[str]:
    missing = [f"no {t}" for t in TIMEPOINTS if t not in patient.studies]
    missing += [f"no ADC ({t})" for t, s in patient.studies.items() if Role.ADC not in s.series]
    return missing
