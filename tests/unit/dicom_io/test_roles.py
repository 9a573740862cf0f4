"""Series roles: every vendor's synthetic study is classified right, with reasons."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset

from dicom_io.roles import SeriesRole, SeriesSummary, assign_role, referenced_series
from dicom_io.synthetic.biology import draw_patient
from dicom_io.synthetic.cohort import CohortSpec, patient_rng, patient_scenes
from dicom_io.synthetic.study import Identity, StudyOptions, StudyWriter
from dicom_io.synthetic.vendors import VENDORS, Role

EXPECTED = {
    Role.LOCALIZER: SeriesRole.IGNORED,
    Role.T2W_SAG: SeriesRole.IGNORED,
    Role.T2W_COR: SeriesRole.IGNORED,
    Role.T2W: SeriesRole.T2W_AX,
    Role.DWI: SeriesRole.DWI,
    Role.ADC: SeriesRole.ADC,
    Role.CE_T1: SeriesRole.CE_T1,
    Role.RTSTRUCT: SeriesRole.RTSTRUCT,
    Role.SEG: SeriesRole.SEG,
}


@pytest.mark.parametrize("vendor", sorted(VENDORS))
def test_each_vendor_study_gets_the_right_roles(vendor: str, tmp_path: Path) -> None:
    spec = CohortSpec(patients=1, seed=2, matrix=32, slices=10)
    biology = draw_patient(patient_rng(spec.seed, 0, 0))
    record = StudyWriter(
        out_dir=tmp_path,
        identity=Identity("R1", "SYNTHETIC^R1", datetime.date(1960, 1, 1), "M", seed=2),
        scene=patient_scenes(spec, 0, biology)["baseline"],
        vendor=VENDORS[vendor],
        timepoint="baseline",
        study_datetime=datetime.datetime(2025, 5, 5, 9, 0),
        rng=np.random.default_rng(1),
        options=StudyOptions(matrix=32, slices=10, with_seg=True),
        study_description="MRI PELVIS",
    ).write("GTV")
    for role, series in record.series.items():
        headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in series.files]
        assigned, reason = assign_role(SeriesSummary.from_headers(headers))
        assert assigned == EXPECTED[role], (vendor, role, reason)
        assert reason
        if role in (Role.RTSTRUCT, Role.SEG):
            target = Role.T2W if role is Role.RTSTRUCT else Role.DWI
            assert referenced_series(headers[0]) == record.series[target].series_instance_uid


def test_unknown_series_is_ignored_with_a_reason() -> None:
    summary = SeriesSummary("MR", "t1_tse_tra", "ORIGINAL\\PRIMARY", (), False, (0, 0, 1), 20)
    assert assign_role(summary) == (SeriesRole.IGNORED, "no rule matched")


def test_enhanced_mr_orientation_b_values_and_frames_are_read() -> None:
    ds = Dataset()
    ds.Modality = "MR"
    ds.SeriesDescription = "DWI enhanced"
    ds.NumberOfFrames = 4
    plane = Dataset()
    plane.ImageOrientationPatient = [1, 0, 0, 0, 0.96, -0.28]
    shared = Dataset()
    shared.PlaneOrientationSequence = [plane]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = []
    for b in (0, 800, 0, 800):
        diffusion = Dataset()
        diffusion.DiffusionBValue = b
        frame = Dataset()
        frame.MRDiffusionSequence = [diffusion]
        frames.append(frame)
    ds.PerFrameFunctionalGroupsSequence = frames
    summary = SeriesSummary.from_headers([ds])
    assert summary.normal is not None
    assert summary.normal[2] == pytest.approx(0.96)
    assert summary.b_values == (0.0, 800.0)
    assert summary.instances == 4
    assert assign_role(summary)[0] is SeriesRole.DWI
