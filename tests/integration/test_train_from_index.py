"""`larc train models --from-index`: a hospital trains on the studies larc serve already holds,
with the daemon's own pairing and series roles, and an outcomes spreadsheet keyed by PatientID."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

from daemon.harness import read_index
from daemon.harness.peers import stop_process
from tests.conftest import LARC, TrainedBundle, start_daemon, storescu
from tests.integration.test_scoring import _wait

pytestmark = pytest.mark.slow


def test_a_bundle_is_trained_from_the_studies_larc_holds(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    cohort = trained_bundle.cohort
    data_dir = tmp_path / "data"
    config = tmp_path / "larc.yaml"
    config.write_text(yaml.safe_dump({"storage": {"data_dir": str(data_dir)}}))
    # no bundle: the daemon assembles the cases without scoring them
    daemon = start_daemon(data_dir, config=config, extra=("--stable-age-s", "1"))
    try:
        sent = storescu(daemon.port, *(cohort.out_dir / p.patient_id for p in cohort.patients))
        assert sent.returncode == 0, sent.stderr[-2000:]
        _wait(
            "a response case per patient",
            lambda: (
                len(read_index(data_dir, "SELECT * FROM cases WHERE kind = 'response'"))
                == len(cohort.patients)
            ),
            300,
            daemon.log,
        )
    finally:
        stop_process(daemon.proc)
    # the outcomes of two patients the daemon never received: left out, counted with the reason
    labels = tmp_path / "outcomes.csv"
    lines = cohort.labels_path.read_text().splitlines()
    extra = [",".join(["NEVER" + str(i), *line.split(",")[1:]]) for i, line in
             enumerate(lines[1:3])]  # fmt: skip
    labels.write_text("\n".join([*lines, *extra]) + "\n")
    out = tmp_path / "bundle"
    trained = subprocess.run(
        [LARC, "train", "models", "--from-index", "--labels", str(labels), "--config",
         str(config), "--out", str(out), "--folds", "2", "--epochs", "1", "--patience", "1",
         "--width", "0.25", "--image-size", "32", "--stack-size", "32", "--stack-depth", "8",
         "--no-n4", "--test-fraction", "0"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    assert (
        f"2 of {len(cohort.patients) + 2} patients left out: 2 no case in larc's index" in (
            trained.stderr)
    )  # fmt: skip
    manifest = json.loads((out / "manifest.json").read_text())
    # every patient the daemon holds, prepared from the series it chose: the same patients
    # (by hashed id) as the bundle trained from the folder, none skipped
    assert manifest["training_data"]["patients"] == len(cohort.patients)
    assert manifest["training_data"]["skipped"] == 0
    folder = json.loads((trained_bundle.folder / "manifest.json").read_text())
    assert manifest["training_data"]["fingerprint"] == folder["training_data"]["fingerprint"]
    assert not (tmp_path / "bundle.checkpoints").exists()  # removed once the bundle is written

    # neither a cohort nor --from-index, or both: refused
    both = subprocess.run(
        [LARC, "train", "models", "--from-index", "--cohort", str(cohort.out_dir), "--labels",
         str(labels), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert both.returncode == 2
    assert "either --cohort or --from-index" in both.stderr
