"""A labelled training cohort: DICOM studies in a folder plus an outcomes CSV.

The folder may be laid out any way (a PACS export, ``larc synth`` output): files are grouped
by their PatientID and StudyInstanceUID. Which study is the baseline and which the restaging
comes from the CSV's ``baseline_study_uid`` / ``restaging_study_uid`` columns when present,
else from the same pairing rules the daemon uses; each study's series are then selected as the
daemon selects them (:func:`dicom_io.selection.select_files`).
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from dicom_io.errors import InvalidInputError
from dicom_io.pairing import BASELINE, RESTAGING, PairingPolicy, StudyFacts, assign_timepoints
from dicom_io.roles import DEFAULT_RULES, RoleRule
from dicom_io.selection import select_files
from pipeline.case import CASE_FORMAT, CaseInputs, prepare_case
from pipeline.config import PreprocessConfig
from pipeline.errors import PipelineInputError
from pipeline.training.outcomes import load_mapping, read_outcomes

log = logging.getLogger(__name__)
_TAGS = [
    "PatientID",
    "StudyInstanceUID",
    "StudyDate",
    "StudyDescription",
    "ClinicalTrialTimePointID",
]


@dataclass
class Study:
    """One study found in the folder."""

    patient_id: str
    study_uid: str
    date: str
    description: str
    time_point_id: str
    paths: list[Path] = field(default_factory=list)


def scan_folder(root: Path) -> dict[str, dict[str, Study]]:
    """{PatientID: {StudyInstanceUID: Study}} of every DICOM file under ``root``.

    Files that are not DICOM (labels, manifests, notes) are skipped and counted in the log."""
    if not root.is_dir():
        raise FileNotFoundError(f"cohort folder {root} does not exist")
    patients: dict[str, dict[str, Study]] = defaultdict(dict)
    skipped = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        try:
            ds = pydicom.dcmread(path, specific_tags=_TAGS)
        except (InvalidDicomError, OSError):
            skipped += 1
            continue
        pid, uid = str(ds.get("PatientID", "")), str(ds.get("StudyInstanceUID", ""))
        if not pid or not uid:
            skipped += 1
            continue
        study = patients[pid].setdefault(
            uid,
            Study(
                pid,
                uid,
                str(ds.get("StudyDate", "")),
                str(ds.get("StudyDescription", "")),
                str(ds.get("ClinicalTrialTimePointID", "")),
            ),
        )
        study.paths.append(path)
    if skipped:
        log.info("cohort scan: %d files under %s are not DICOM studies, skipped", skipped, root)
    return dict(patients)


def read_labels(path: Path, columns: Path | None = None) -> dict[str, dict[str, str]]:
    """Rows of the outcomes spreadsheet (CSV or Excel) by patient id, in larc's column names
    (``columns``: a mapping file, :mod:`pipeline.training.outcomes`), every value checked."""
    return read_outcomes(path, load_mapping(columns) if columns else None)


def patient_hash(patient_id: str) -> str:
    """The short sha256 by which bundles and reports refer to a patient (never the id)."""
    return hashlib.sha256(patient_id.encode()).hexdigest()[:16]


def number(value: object) -> float:
    """A CSV cell as a number; NaN when empty or not a number."""
    try:
        return float(str(value)) if value not in (None, "") else math.nan
    except ValueError:
        return math.nan


def good_response(row: Mapping[str, str]) -> int | None:
    """1 for a good response (TRG 0-1), 0 for poor, ``None`` when the row does not say.

    ``good_response`` (0/1) is used when present, else ``trg``."""
    value = (row.get("good_response") or "").strip()
    if value in ("0", "1"):
        return int(value)
    trg = (row.get("trg") or "").strip()
    if trg in ("0", "1", "2", "3"):
        return int(int(trg) <= 1)
    return None


def timepoint_files(
    studies: Mapping[str, Study], row: Mapping[str, str], policy: PairingPolicy
) -> dict[str, list[Path]]:
    """The files of the patient's baseline and restaging studies (those found)."""
    named = {t: (row.get(f"{t}_study_uid") or "").strip() for t in (BASELINE, RESTAGING)}
    if any(named.values()):
        return {t: studies[uid].paths for t, uid in named.items() if uid in studies}
    facts = [
        StudyFacts(s.study_uid, s.date, s.description, s.time_point_id) for s in studies.values()
    ]
    chosen = assign_timepoints(facts, policy).timepoints  # a conflict: no timepoints at all
    return {
        timepoint: studies[uid].paths
        for uid, (timepoint, _) in chosen.items()
        if timepoint in (BASELINE, RESTAGING)
    }


@dataclass(frozen=True)
class Cohort:
    """A labelled cohort as training and evaluation take it."""

    rows: dict[str, dict[str, str]]  # outcomes CSV rows by patient id
    cases: dict[str, dict[str, list[Path]]]  # patient id -> timepoint -> files of that study
    rules: tuple[RoleRule, ...]  # the series-role rules to select each study's series with


def load_cohort(
    folder: Path,
    labels: Path | None,
    policy: PairingPolicy,
    rules: Sequence[RoleRule] = DEFAULT_RULES,
    columns: Path | None = None,
) -> Cohort:
    """The outcomes (``labels``, default ``folder/labels.csv``; ``columns``: the spreadsheet's
    column mapping) and each patient's baseline and restaging files (CSV study UIDs, else
    ``policy``). ``OSError``/``ValueError`` name what is wrong with the folder or the CSV."""
    rows = read_labels(labels or folder / "labels.csv", columns)
    studies = scan_folder(folder)
    cases = {p: timepoint_files(s, rows.get(p, {}), policy) for p, s in studies.items()}
    return Cohort(rows, cases, tuple(rules))


@dataclass(frozen=True)
class _Job:
    patient_id: str
    files: dict[str, list[Path]]
    config: PreprocessConfig
    signatures: tuple[str, ...]
    stacks: bool
    cache: Path | None
    rules: tuple[RoleRule, ...]


def _cache_path(job: _Job) -> Path | None:
    if job.cache is None:
        return None
    key = repr(
        (
            CASE_FORMAT,
            job.patient_id,
            job.config.fingerprint,
            job.signatures,
            job.stacks,
            sorted((t, sorted(str(p) for p in paths)) for t, paths in job.files.items()),
        )
    )
    return job.cache / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.npz"


def _prepare(job: _Job) -> tuple[str, CaseInputs | None, str]:
    cached = _cache_path(job)
    if cached is not None and cached.is_file():
        return job.patient_id, CaseInputs.load(cached), ""
    try:
        selected = {t: select_files(paths, job.rules) for t, paths in job.files.items()}
        inputs = prepare_case(selected, job.config, signatures=job.signatures, stacks=job.stacks)
    except (InvalidInputError, PipelineInputError) as exc:
        return job.patient_id, None, str(exc)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        inputs.save(cached)
    return job.patient_id, inputs, ""


def prepare_cohort(
    cases: Mapping[str, Mapping[str, Sequence[Path]]],
    config: PreprocessConfig,
    signatures: Sequence[str],
    stacks: bool = False,
    cache: Path | None = None,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    rules: Sequence[RoleRule] = DEFAULT_RULES,
) -> tuple[dict[str, CaseInputs], dict[str, str]]:
    """(inputs, failures) for each patient, prepared in ``workers`` processes.

    With ``cache``, prepared inputs are kept there (keyed by patient, files and configuration)
    so a second training run does not read the images again."""
    jobs = [
        _Job(
            pid,
            {t: list(p) for t, p in files.items()},
            config,
            tuple(signatures),
            stacks,
            cache,
            tuple(rules),
        )
        for pid, files in sorted(cases.items())
    ]
    inputs: dict[str, CaseInputs] = {}
    failures: dict[str, str] = {}
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) or 1))
    results: Iterator[tuple[str, CaseInputs | None, str]]
    if workers == 1:
        results = map(_prepare, jobs)
        pool = None
    else:
        pool = ProcessPoolExecutor(max_workers=workers)
        results = pool.map(_prepare, jobs, chunksize=4)
    try:
        for done, (pid, prepared, error) in enumerate(results, start=1):
            if prepared is None:
                failures[pid] = error
            else:
                inputs[pid] = prepared
            if progress is not None:
                progress(done, len(jobs))
    finally:
        if pool is not None:
            pool.shutdown()
    return inputs, failures
