"""prepare_case on synthetic studies: every input found, masks from the right series, measurements
close to the phantom's, missing pieces named, and a lossless round trip through .npz."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.errors import InvalidInputError
from dicom_io.selection import SelectedStudy, select_files
from dicom_io.synthetic.cohort import CohortResult, PatientResult
from dicom_io.synthetic.vendors import Role
from pipeline.case import CaseInputs, prepare_case
from pipeline.config import PreprocessConfig
from pipeline.errors import PipelineInputError
from pipeline.kinds import SIGNATURES

FAST = PreprocessConfig(slice_size=64, stack_size=32, stack_depth=8)


def _paths(patient: PatientResult, leave_out: tuple[Role, ...] = ()) -> dict[str, list[Path]]:
    return {
        timepoint: [f for role, s in study.series.items() if role not in leave_out for f in s.files]
        for timepoint, study in patient.studies.items()
    }


def _files(patient: PatientResult, leave_out: tuple[Role, ...] = ()) -> dict[str, SelectedStudy]:
    """Each study's series selected as the daemon and training select them."""
    return {t: select_files(paths) for t, paths in _paths(patient, leave_out).items()}


@pytest.fixture(scope="module")
def prepared(cohort: CohortResult) -> tuple[PatientResult, CaseInputs]:
    patient = cohort.patients[0]
    return patient, prepare_case(_files(patient), FAST)


def test_every_input_is_built_from_the_right_series(
    prepared: tuple[PatientResult, CaseInputs],
) -> None:
    patient, inputs = prepared
    assert inputs.problems == []
    assert set(inputs.slices) == set(SIGNATURES)
    assert set(inputs.stacks) == {"T2", "ADC"}
    for name, piece in inputs.slices.items():
        timepoint = "baseline" if name.startswith("pre_") else "restaging"
        series = patient.studies[timepoint].series
        role = {"T2": Role.T2W, "DWI": Role.DWI, "CE": Role.CE_T1}[name.split("_")[1]]
        assert piece.series_uid == series[role].series_instance_uid
        assert piece.array.shape == (64, 64)
        assert piece.array.min() >= 0
        assert piece.array.max() <= 255
        assert piece.array.std() > 10  # an image, not a blank
        # the slice named is an image of that series (a high-b one for DWI)
        source = {
            str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID): f
            for f in series[role].files
        }
        assert piece.sop_instance_uid in source
        # the native slice the heat map is drawn on: that image's pixels around the tumour
        assert piece.native is not None
        assert piece.native_mask is not None
        assert piece.native_spacing is not None
        assert piece.native.shape == piece.native_mask.shape
        assert piece.native_mask.any()
        image = pydicom.dcmread(source[piece.sop_instance_uid])
        if role != Role.DWI:  # one frame per file (DWI: b-values interleaved, same spacing)
            assert piece.native_spacing == pytest.approx(
                [float(v) for v in image.PixelSpacing], rel=1e-4
            )
            assert piece.native.shape[0] <= int(image.Rows)
    # every study of this cohort has a SEG on DWI: the DWI uses it, the others the RTSTRUCT
    assert inputs.slices["pre_DWI"].mask_source.startswith("SEG ")
    assert inputs.slices["pre_T2"].mask_source.startswith("RTSTRUCT ")
    assert inputs.slices["pre_CE"].mask_source.endswith("on T2W_AX, carried")
    adc_series = patient.studies["baseline"].series[Role.ADC].series_instance_uid
    assert inputs.stacks["ADC"].series_uid == adc_series
    assert inputs.stacks["T2"].array.shape == (8, 32, 32)


def test_measurements_are_close_to_the_phantom(
    cohort: CohortResult, prepared: tuple[PatientResult, CaseInputs]
) -> None:
    patient, inputs = prepared
    with cohort.labels_path.open() as handle:
        row = next(r for r in csv.DictReader(handle) if r["patient_id"] == patient.patient_id)
    for prefix, timepoint in (("pre", "baseline"), ("post", "restaging")):
        measured = inputs.features[timepoint]
        # measured on a matrix-48 grid with 3-4 mm slices, against the analytic phantom
        assert measured.volume_ml == pytest.approx(float(row[f"{prefix}_volume_ml"]), rel=0.2)
        assert measured.longest_diameter_mm == pytest.approx(
            float(row[f"{prefix}_ld_mm"]), rel=0.15
        )
        assert measured.max_wall_thickness_mm == pytest.approx(
            float(row[f"{prefix}_mwt_mm"]), rel=0.25
        )


def test_missing_series_are_named_and_require_refuses(cohort: CohortResult) -> None:
    patient = cohort.patients[1]
    files = _files(patient, leave_out=(Role.CE_T1, Role.ADC))
    files.pop("baseline")
    inputs = prepare_case(files, FAST, signatures=("post_T2", "post_CE"))
    assert set(inputs.slices) == {"post_T2"}
    assert any("post_CE: no CE_T1 series" in p for p in inputs.problems)
    inputs.require(slices=["post_T2"])
    with pytest.raises(PipelineInputError, match=r"no post_CE.*no CE_T1 series"):
        inputs.require(slices=["post_T2", "post_CE"])
    with pytest.raises(PipelineInputError, match="T2 stack"):
        inputs.require(stacks=["T2"])


def test_adc_is_computed_from_dwi_when_the_study_has_no_adc_series(cohort: CohortResult) -> None:
    patient = cohort.patients[2]
    files = {"baseline": _files(patient, leave_out=(Role.ADC,))["baseline"]}
    inputs = prepare_case(files, FAST, signatures=())
    assert inputs.stacks["ADC"].series_uid.startswith("computed from DWI ")
    with_series = prepare_case({"baseline": _files(patient)["baseline"]}, FAST, signatures=())
    # the same tumour, the same crop: the computed map correlates with the scanner's map
    a = inputs.stacks["ADC"].array.ravel()
    b = with_series.stacks["ADC"].array.ravel()
    assert np.corrcoef(a, b)[0, 1] > 0.8


def test_round_trip_through_npz_is_exact(
    prepared: tuple[PatientResult, CaseInputs], tmp_path: Path
) -> None:
    _, inputs = prepared
    path = tmp_path / "case.npz"
    inputs.save(path)
    again = CaseInputs.load(path)
    assert again.config_fingerprint == FAST.fingerprint
    assert again.features == inputs.features
    for name, piece in inputs.slices.items():
        assert np.array_equal(again.slices[name].array, piece.array)
        assert again.slices[name].sop_instance_uid == piece.sop_instance_uid
        assert np.array_equal(again.slices[name].native, piece.native)
        assert np.array_equal(again.slices[name].native_mask, piece.native_mask)
        assert again.slices[name].native_spacing == piece.native_spacing
    for name, stack in inputs.stacks.items():
        assert np.array_equal(again.stacks[name].array, stack.array)
    assert again.acquisition == inputs.acquisition


def test_the_facts_of_every_series_read_are_recorded_for_the_envelope(
    prepared: tuple[PatientResult, CaseInputs],
) -> None:
    _, inputs = prepared
    assert set(inputs.acquisition) == {
        f"{t} {s}" for t in ("baseline", "restaging") for s in ("T2W", "DWI", "CE-T1")
    } | {"baseline ADC"}
    t2w = inputs.acquisition["baseline T2W"]
    assert t2w.matrix == 48
    assert t2w.orientation == "axial"  # oblique-axial, within 30 degrees
    assert t2w.slice_thickness_mm is not None
    assert t2w.manufacturer
    volume = inputs.features["baseline"].volume_ml  # the same mask as the measurements
    assert t2w.tumour_volume_ml == pytest.approx(volume)
    assert t2w.intensity_p5 is not None
    assert t2w.intensity_p95 is not None
    assert t2w.intensity_p5 <= (t2w.intensity_p50 or 0) <= t2w.intensity_p95
    dwi = inputs.acquisition["restaging DWI"]
    assert len(dwi.b_values) >= 2
    assert dwi.b_values[0] == 0


def test_a_mask_drawn_in_another_frame_of_reference_is_not_used(
    cohort: CohortResult, tmp_path: Path
) -> None:
    patient = cohort.patients[1]
    paths = []
    for role, series in patient.studies["baseline"].series.items():
        for source in series.files:
            if role is Role.RTSTRUCT:
                ds = pydicom.dcmread(source)
                ds.ReferencedFrameOfReferenceSequence[0].FrameOfReferenceUID = "1.2.3.999"
                source = tmp_path / source.name  # noqa: PLW2901
                ds.save_as(source)
            if role is not Role.SEG:
                paths.append(source)
    inputs = prepare_case({"baseline": select_files(paths)}, FAST, signatures=("pre_T2",))
    assert "pre_T2" not in inputs.slices
    assert any(
        "is drawn in frame of reference 1.2.3.999, not the frame of reference" in p
        and "it does not lie on the images" in p
        for p in inputs.problems
    ), inputs.problems


def test_a_broken_file_is_a_clear_error(cohort: CohortResult, tmp_path: Path) -> None:
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all")
    paths = _paths(cohort.patients[0])
    with pytest.raises(InvalidInputError, match=r"junk\.dcm is not readable DICOM"):
        prepare_case({"baseline": select_files([*paths["baseline"], junk])}, FAST)
    files = _files(cohort.patients[0])
    with pytest.raises(ValueError, match="unknown signatures"):
        prepare_case(files, FAST, signatures=("post_XYZ",))


def test_config_fingerprint_changes_with_any_parameter() -> None:
    assert PreprocessConfig().fingerprint == PreprocessConfig().fingerprint
    assert PreprocessConfig().fingerprint != PreprocessConfig(n4_margin_mm=30).fingerprint
    assert PreprocessConfig().fingerprint != PreprocessConfig(slice_size=128).fingerprint
