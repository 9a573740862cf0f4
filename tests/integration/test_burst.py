"""A burst after a PACS outage: 50 studies (25 patients, baseline and restaging) sent at once over
five associations to ``larc serve`` with its embedded workers. Every instance is acknowledged
(no sender times out), every one of the 50 cases ends exported with one SR, and the backlog is
visible in /metrics while it lasts and gone at the end."""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

import httpx
import pydicom
import pytest
import yaml

from daemon.harness import read_index
from daemon.harness.peers import NODELAY_ENV, free_port, stop_process
from dicom_io.synthetic.cohort import CohortSpec, generate_cohort
from tests.conftest import TrainedBundle, start_daemon
from tests.integration.scoring_checks import SR_CLASS

pytestmark = pytest.mark.slow

TOKEN = "burst-metrics-token-0123456789"  # noqa: S105 (a test token)
PATIENTS, SENDERS = 25, 5
DEPTH = re.compile(r'^larc_queue_depth\{queue="daemon"\} (\d+)', re.MULTILINE)


def test_fifty_studies_at_once_are_all_scored_with_the_backlog_in_metrics(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    # the bundle's geometry (matrix 48, 12 slices); outlines drawn, so every case can be scored
    spec = CohortSpec(
        patients=PATIENTS, seed=31, matrix=48, slices=12, missing_fraction=0.0, seg_fraction=1.0
    )
    cohort = generate_cohort(spec, tmp_path / "cohort", workers=2)
    web_port = free_port()
    config = tmp_path / "larc.yaml"
    config.write_text(yaml.safe_dump({"web": {"token": TOKEN, "port": web_port}}))
    data_dir = tmp_path / "data"
    extra = ("--bundle", str(trained_bundle.folder), "--stable-age-s", "2")
    daemon = start_daemon(data_dir, config=config, extra=extra)
    depths: list[int] = []
    stop_polling = threading.Event()

    def poll_metrics() -> None:
        while not stop_polling.wait(0.5):
            try:
                text = httpx.get(
                    f"http://127.0.0.1:{web_port}/metrics",
                    headers={"Authorization": f"Bearer {TOKEN}"},
                    timeout=30,
                ).text
            except httpx.HTTPError:
                continue
            if found := DEPTH.search(text):
                depths.append(int(found.group(1)))

    poller = threading.Thread(target=poll_metrics, daemon=True)
    poller.start()
    try:
        folders = [cohort.out_dir / p.patient_id for p in cohort.patients]
        senders = [
            subprocess.Popen(
                ["/usr/bin/storescu", "--required", "-aet", "PACS", "-aec", "LARC", "+sd", "+r",
                 "127.0.0.1", str(daemon.port), *map(str, folders[k::SENDERS])],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=NODELAY_ENV,
            )
            for k in range(SENDERS)
        ]  # fmt: skip
        for sender in senders:
            output, _ = sender.communicate(timeout=600)
            assert sender.returncode == 0, output[-2000:]
            assert "Failed" not in output, output[-2000:]
            assert "Timeout" not in output, output[-2000:]
        sent = sum(1 for _ in cohort.out_dir.rglob("*.dcm"))
        (stored,) = read_index(data_dir, "SELECT COUNT(*) AS n FROM instances")
        assert stored["n"] == sent, "every instance of the burst acknowledged and stored"

        deadline = time.monotonic() + 900
        while True:
            cases = read_index(data_dir, "SELECT state FROM cases")
            if len(cases) == 2 * PATIENTS and all(c["state"] == "exported" for c in cases):
                break
            failed = [c for c in cases if c["state"] in ("failed", "failed-export", "held")]
            assert not failed, (failed, daemon.log()[-4000:])
            assert time.monotonic() < deadline, (cases, daemon.log()[-4000:])
            time.sleep(1)
        time.sleep(1.5)  # one more look at /metrics after the last case
    finally:
        stop_polling.set()
        poller.join(timeout=30)
        stop_process(daemon.proc)

    objects = [
        pydicom.dcmread(p, stop_before_pixels=True) for p in (data_dir / "outbox").glob("*.dcm")
    ]
    srs = [o for o in objects if o.SOPClassUID == SR_CLASS]
    assert len(srs) == 2 * PATIENTS, "one SR per case"
    assert len({sr.StudyInstanceUID for sr in srs}) == 2 * PATIENTS, "one per study, none twice"
    assert max(depths, default=0) >= 10, f"the backlog shows in /metrics: {depths}"
    assert depths[-1] == 0, f"and is gone at the end: {depths[-10:]}"
    assert "Traceback" not in daemon.log()
