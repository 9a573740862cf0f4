"""The `larc` console command, run as a user runs it."""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest

from tests.conftest import TrainedBundle

LARC = shutil.which("larc", path=str(Path(sys.executable).parent)) or "larc"


def larc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LARC, *args], capture_output=True, text=True, timeout=300, check=False)


def test_help_lists_every_command() -> None:
    run = larc("--help")
    assert run.returncode == 0
    for command in ("serve", "status", "config", "synth", "demo", "train"):
        assert command in run.stdout
    assert "research use only" in run.stdout


def test_version() -> None:
    run = larc("--version")
    assert run.returncode == 0
    assert run.stdout.startswith("larc ")


def test_synth_writes_a_cohort_and_prints_one_row_per_patient(tmp_path: Path) -> None:
    out = tmp_path / "cohort"
    run = larc("synth", "--out", str(out), "--patients", "2", "--matrix", "32", "--slices", "6")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].split()[:2] == ["patient", "studies"]
    assert lines[1].startswith("SYN0001")
    assert lines[2].startswith("SYN0002")
    assert "2 patients" in run.stdout
    with (out / "labels.csv").open() as handle:
        assert [row["patient_id"] for row in csv.DictReader(handle)] == ["SYN0001", "SYN0002"]
    assert len(list(out.rglob("*.dcm"))) > 50
    assert "SYNTHETIC^" not in run.stderr  # no patient names in logs


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--matrix", "8"), "matrix"),
        (("--patients", "0"), "patients"),
        (("--missing-fraction", "1.5"), "missing_fraction"),
    ],
)
def test_synth_rejects_bad_options_with_a_clear_message(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    run = larc("synth", "--out", str(tmp_path / "x"), *args)
    assert run.returncode == 2
    assert message in run.stderr


def test_synth_refuses_a_folder_that_holds_other_files(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a cohort")
    run = larc(
        "synth", "--out", str(tmp_path), "--patients", "1", "--matrix", "32", "--slices", "6"
    )
    assert run.returncode == 2
    assert "not empty" in run.stderr
    assert (tmp_path / "notes.txt").exists()


def test_demo_sends_the_cohort_to_the_daemon_and_prints_the_scores(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    # the tests' bundle stands in for the demo bundle the first run trains (2 minutes)
    out = tmp_path / "demo"
    run = larc(
        "demo", "--out", str(out), "--patients", "2", "--without-masks", "1",
        "--bundle", str(trained_bundle.folder),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert (out / "cohort" / "manifest.json").exists()
    assert ", 0 refused" in run.stdout
    assert "SYN0002: sent without drawn tumour masks" in run.stdout
    assert not list((out / "cohort" / "SYN0002").glob("*/*_rtstruct"))
    table = run.stdout[run.stdout.index("patient  case") :]
    rows = {tuple(line.split()[:2]): line for line in table.splitlines()[1:] if line.strip()}
    # SYN0001 (seed 0) has both studies and drawn masks: both its cases are scored
    assert "P(good response) FDL" in rows["SYN0001", "response"], table
    assert "DM risk" in rows["SYN0001", "baseline"], table
    assert "what the demo bundle's validation backs" in run.stdout
    assert "-> outbox" in rows["SYN0001", "response"], table
    assert "-> outbox" in rows["SYN0001", "baseline"], table
    # SYN0002 was outlined automatically by the tests' seconds-trained segmenter: each of its
    # cases is either scored on the outline (said so, its SEG sent with the results) or
    # declined with the reason (nothing sent for it): by the quality gate, or by the training
    # envelope on what the outline measured
    scored = 0
    for kind in ("response", "baseline"):
        row = rows["SYN0002", kind]
        if "-> outbox" in row:
            scored += 1
            assert "tumour outline automatic, not reviewed" in row, table
            assert "SEG" in row, table
        else:
            assert "declined: " in row, table
            gate = "automatic segmentation failed its check (" in row
            assert gate or "tumour outline automatic, not reviewed" in row, table
    modalities = [
        pydicom.dcmread(p, stop_before_pixels=True).Modality
        for p in (out / "larc-data" / "outbox").glob("*.dcm")
    ]
    assert modalities.count("SR") == 2 + scored  # one SR per case sent
    assert ("SEG" in modalities) == (scored > 0)


def test_config_check_prints_the_effective_configuration(tmp_path: Path) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text("scp:\n  port: 4242\n")
    run = larc("config", "check", "--config", str(config))
    assert run.returncode == 0, run.stderr
    assert "port: 4242" in run.stdout
    assert "configuration OK" in run.stderr


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    config = tmp_path / "larc.yaml"
    config.write_text("storage:\n  duplicate_policy: keep_all\n")
    run = larc("config", "check", "--config", str(config))
    assert run.returncode == 2
    assert "storage.duplicate_policy" in run.stderr


def test_synth_series_subset_and_its_errors(tmp_path: Path) -> None:
    out = tmp_path / "lean"
    run = larc(
        "synth", "--out", str(out), "--patients", "1", "--matrix", "32", "--slices", "6",
        "--series", "t2w,dwi,rtstruct", "--missing-fraction", "0",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    folders = sorted(p.name.split("_", 1)[1] for p in out.glob("SYN0001/*/*") if p.is_dir())
    assert folders == ["dwi", "dwi", "rtstruct", "rtstruct", "t2w", "t2w"]
    bad = larc("synth", "--out", str(tmp_path / "x"), "--series", "dwi,rtstruct")
    assert bad.returncode == 2
    assert "must include t2w and rtstruct" in bad.stderr


def test_train_signatures_refuses_bad_input_clearly(tmp_path: Path) -> None:
    run = larc("train", "signatures", "--cohort", str(tmp_path), "--out", str(tmp_path / "o"),
               "--signatures", "post_XYZ")  # fmt: skip
    assert run.returncode == 2
    assert "unknown signature(s) post_XYZ" in run.stderr
    missing = larc("train", "signatures", "--cohort", str(tmp_path / "none"), "--out", "o")
    assert missing.returncode == 2
    assert "labels.csv" in missing.stderr or "does not exist" in missing.stderr


def test_larc_worker_without_a_broker_says_what_to_set(tmp_path: Path) -> None:
    run = subprocess.run(
        [LARC, "worker"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        cwd=tmp_path,
    )
    assert run.returncode == 2
    assert "broker.url is not set" in run.stderr


def test_harness_asked_for_a_viewer_it_does_not_have_says_how_to_get_one(tmp_path: Path) -> None:
    run = larc("harness", "--folder", str(tmp_path / "h"), "--viewer",
               "--ohif-dist", str(tmp_path / "nothing"))  # fmt: skip
    assert run.returncode == 2
    assert "no OHIF viewer in" in run.stderr
    assert "deploy/setup.sh --dev" in run.stderr
    assert not (tmp_path / "h").exists()  # nothing started, nothing trained
