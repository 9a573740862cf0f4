"""`larc train models --from-index`: a hospital trains on the studies larc serve already holds,
with the daemon's own pairing and series roles, and an outcomes spreadsheet keyed by PatientID."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import pytest
import yaml

from daemon.harness import read_index
from daemon.harness.peers import stop_process
from pipeline.training.cohort import patient_hash
from tests.conftest import LARC, TrainedBundle, start_daemon, storescu
from tests.integration.test_scoring import _wait

pytestmark = pytest.mark.slow


def test_a_bundle_is_trained_from_the_studies_larc_holds(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    cohort = trained_bundle.cohort
    sent_patients = cohort.patients[:24]  # half of them: enough to train on, a shorter test
    data_dir = tmp_path / "data"
    config = tmp_path / "larc.yaml"
    config.write_text(yaml.safe_dump({"storage": {"data_dir": str(data_dir)}}))
    # no bundle: the daemon assembles the cases without scoring them
    daemon = start_daemon(data_dir, config=config, extra=("--stable-age-s", "1"))
    try:
        sent = storescu(daemon.port, *(cohort.out_dir / p.patient_id for p in sent_patients))
        assert sent.returncode == 0, sent.stderr[-2000:]
        _wait(
            "a response case per patient",
            lambda: (
                len(read_index(data_dir, "SELECT * FROM cases WHERE kind = 'response'"))
                == len(sent_patients)
            ),
            300,
            daemon.log,
        )
    finally:
        stop_process(daemon.proc)
    # the outcomes of every patient of the cohort, 24 of whom the daemon never received: left
    # out, counted with the reason
    labels = cohort.labels_path
    out = tmp_path / "bundle"
    trained = subprocess.run(
        [LARC, "train", "models", "--from-index", "--labels", str(labels), "--config",
         str(config), "--out", str(out), "--folds", "2", "--epochs", "1", "--patience", "1",
         "--width", "0.25", "--image-size", "32", "--stack-size", "32", "--stack-depth", "8",
         "--no-n4", "--test-fraction", "0"],
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    assert trained.returncode == 0, trained.stderr[-3000:]
    left = len(cohort.patients) - len(sent_patients)
    assert (
        f"{left} of {len(cohort.patients)} patients left out: {left} no case in larc's index"
        in (trained.stderr)
    )
    manifest = json.loads((out / "manifest.json").read_text())
    # every patient the daemon holds, prepared from the series it chose, none skipped
    assert manifest["training_data"]["patients"] == len(sent_patients)
    assert manifest["training_data"]["skipped"] == 0
    hashes = "\n".join(sorted(patient_hash(p.patient_id) for p in sent_patients))
    assert (
        manifest["training_data"]["fingerprint"]
        == (hashlib.sha256(hashes.encode()).hexdigest()[:32])
    )
    assert not (tmp_path / "bundle.checkpoints").exists()  # removed once the bundle is written

    # neither a cohort nor --from-index, or both: refused
    both = subprocess.run(
        [LARC, "train", "models", "--from-index", "--cohort", str(cohort.out_dir), "--labels",
         str(labels), "--out", str(tmp_path / "x")],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert both.returncode == 2
    assert "either --cohort or --from-index" in both.stderr
