"""Scoring end to end: a cohort sent to ``larc serve`` comes back as one SR and the Grad-CAM
Secondary Captures per case, with the numbers the pipeline gives when called directly.

- Embedded default (no broker): results in the outbox; the daemon is killed while a case is
  in flight and restarted (preparing cases in a pool of two processes), and every case still
  ends exported exactly once, with the pipeline's numbers.
- Redis: the cases are queued in Redis, which restarts (no persistence) before any worker
  runs and loses them; the daemon sees the restart and queues them again. ``larc worker``
  processes that cannot see the daemon's storage (a private mount
  namespace with an empty tmpfs over it) score the cases; the first worker is killed in the
  middle of a task (it stalls in every task, through a Celery signal in its own process), the
  task is redelivered to a second worker, and Orthanc, checked through its REST API, holds no
  duplicate.
- A destination that is down: the export is parked as failed-export after its tries, and
  ``larc retry-exports`` sends it once the PACS is up.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
import yaml

from daemon.harness import Redis, read_index
from daemon.harness.peers import Orthanc, free_port, stop_process
from dicom_io.sr import read_report
from dicom_io.synthetic.cohort import CohortResult, PatientResult
from tests.conftest import (
    LARC,
    TrainedBundle,
    larc_status,
    require_tool,
    start_daemon,
    storescu,
)
from tests.integration.scoring_checks import SR_CLASS, check_sr, orthanc_dataset, orthanc_instances
from tests.unit.dicom_io.test_result_objects import dciodvfy_errors, sr_template_errors

pytestmark = pytest.mark.slow

FINISHED = ("exported", "failed", "failed-export")
STALL_WORKER = """
import sys, time
from celery.signals import task_prerun

@task_prerun.connect
def _stall(sender=None, **_):  # this worker stalls in every analysis until it is killed
    if sender is not None and sender.name == "larc.analyse":
        time.sleep(600)

from daemon.cli import app
app(prog_name="larc")
"""


def _cases(data_dir: Path) -> list[dict[str, Any]]:
    return read_index(data_dir, "SELECT * FROM cases")


def _wait(what: str, ready: Callable[[], bool], timeout_s: float, log: Callable[[], str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not ready():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}:\n{log()[-4000:]}")
        time.sleep(0.2)


def _all_finished(data_dir: Path, count: int) -> bool:
    cases = _cases(data_dir)
    return len(cases) == count and all(c["state"] in FINISHED for c in cases)


def _check_numbers(
    srs: list[pydicom.Dataset], bundle: TrainedBundle, patients: list[PatientResult]
) -> None:
    """Every patient has a response SR and a baseline SR with the direct pipeline's scores."""
    for patient in patients:
        kinds = sorted(
            check_sr(sr, bundle, patient) for sr in srs if sr.PatientID == patient.patient_id
        )
        assert kinds == ["baseline", "response"]


def _scored(cohort: CohortResult) -> list[PatientResult]:
    """The patients these tests send: one complete one (a baseline and a response case, the
    two kinds of result) keeps the suite short."""
    return cohort.patients[:1]


def _patient_folders(cohort: CohortResult) -> list[Path]:
    return [cohort.out_dir / p.patient_id for p in _scored(cohort)]


def _config(tmp_path: Path, **sections: Any) -> Path:
    path = tmp_path / "larc.yaml"
    path.write_text(yaml.safe_dump(json.loads(json.dumps(sections, default=str))))
    return path


def test_embedded_default_scores_every_case_once_across_a_crash(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    data_dir = tmp_path / "data"
    extra = ("--bundle", str(trained_bundle.folder), "--stable-age-s", "1")
    daemon = start_daemon(data_dir, extra=extra)
    n_cases = 2 * len(_scored(cohort))
    try:
        sent = storescu(daemon.port, *_patient_folders(cohort))
        assert sent.returncode == 0, sent.stderr
        _wait(
            "a case in flight",
            lambda: any(c["state"] in ("queued", "running") for c in _cases(data_dir)),
            120,
            daemon.log,
        )
        daemon.proc.kill()  # a crash, not a clean stop
        daemon.proc.wait(timeout=30)
    finally:
        stop_process(daemon.proc)
    # restarted preparing two cases at once, each in a process of a pool: the same numbers
    pool = _config(tmp_path, workers={"prepare_processes": 2})
    daemon = start_daemon(data_dir, config=pool, extra=extra)
    try:
        _wait("every case exported", lambda: _all_finished(data_dir, n_cases), 300, daemon.log)
        status = larc_status(data_dir)
    finally:
        stop_process(daemon.proc)
    assert {c["state"] for c in _cases(data_dir)} == {"exported"}, _cases(data_dir)
    assert any("queued again" in reason for reason in _history(data_dir))
    outbox = sorted((data_dir / "outbox").glob("*.dcm"))
    objects = [pydicom.dcmread(p) for p in outbox]
    assert len({o.SOPInstanceUID for o in objects}) == len(objects)
    srs = [o for o in objects if o.SOPClassUID == SR_CLASS]
    scs = [o for o in objects if o.SOPClassUID != SR_CLASS]
    assert len(srs) == n_cases  # one SR per case, none twice after the crash
    assert len(scs) == len(_scored(cohort)) * (6 + 2)  # 6 response inputs, T2W + ADC stacks
    assert all(sc.BurnedInAnnotation == "YES" for sc in scs)
    _check_numbers(srs, trained_bundle, _scored(cohort))
    by_kind = {read_report(sr).groups[0].method: sr for sr in srs}  # one SR per kind of case
    assert len(by_kind) == 2
    for sr in by_kind.values():
        assert dciodvfy_errors(sr, tmp_path) == []
        assert sr_template_errors(sr, tmp_path) == []
    assert dciodvfy_errors(scs[0], tmp_path) == []
    assert status.returncode == 0, status.stderr
    assert "P(good response) FDL" in status.stdout
    assert "export to outbox: sent" in status.stdout


def _history(data_dir: Path) -> list[str]:
    db = sqlite3.connect(f"file:{data_dir / 'index.sqlite3'}?mode=ro", uri=True)
    try:
        return [r[0] for r in db.execute("SELECT reason FROM case_history")]
    finally:
        db.close()


def _worker(
    tmp_path: Path, name: str, config: Path, hidden: Path, stall: bool
) -> tuple[subprocess.Popen[bytes], Path]:
    """``larc worker`` in its own mount namespace, with an empty tmpfs over ``hidden`` (the
    daemon's storage root): it cannot read a single stored instance."""
    require_tool("/usr/bin/unshare")
    log_path = tmp_path / f"{name}.log"
    program = [LARC]
    if stall:
        script = tmp_path / "stall_worker.py"
        script.write_text(STALL_WORKER)
        program = [sys.executable, str(script)]
    hide = 'mount -t tmpfs larc-hidden "$1" && shift && exec "$@"'
    args = ["unshare", "-m", "sh", "-c", hide, "sh", str(hidden), *program, "worker"]
    args += ["--config", str(config), "--queues", "cpu,gpu"]
    env = {**os.environ, "LARC_STORAGE__DATA_DIR": str(tmp_path / f"{name}-data")}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            args, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return proc, log_path


def test_redis_workers_without_storage_survive_a_redis_restart_and_a_killed_worker_once(
    tmp_path: Path,
    cohort: CohortResult,
    trained_bundle: TrainedBundle,
    redis_server: Redis,
    orthanc: Orthanc,
) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    config = _config(
        tmp_path,
        broker={"url": redis_server.url, "visibility_timeout_s": 5},
        models={"bundle_dir": trained_bundle.folder},
        export={
            "destinations": [
                {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            ]
        },
    )
    daemon = start_daemon(data_dir, config=config, extra=("--stable-age-s", "1"))
    first = second = None
    n_cases = 2 * len(_scored(cohort))
    redis = redis_server
    try:
        sent = storescu(daemon.port, *_patient_folders(cohort))
        assert sent.returncode == 0, sent.stderr
        # no worker yet: the tasks wait in Redis, which restarts (no persistence) and loses
        # them; Celery would call them PENDING for ever, the daemon sees the restart
        _wait(
            "every case queued in the broker",
            lambda: (
                len(cases := _cases(data_dir)) == n_cases
                and all(c["state"] == "queued" for c in cases)
            ),
            120,
            daemon.log,
        )
        redis.stop()
        redis = Redis.start(tmp_path / "redis", port=redis_server.port)
        first, first_log = _worker(tmp_path, "worker-1", config, data_dir, stall=True)
        _wait(
            "the first worker to take a task",
            lambda: "larc.analyse[" in first_log.read_text(),
            180,
            lambda: first_log.read_text() + daemon.log(),
        )
        time.sleep(2)  # its pool process is inside the task now (stalled, not finished)
        taken = [
            line.split("[")[1].split("]")[0]
            for line in first_log.read_text().splitlines()
            if "larc.analyse[" in line and "received" in line
        ]
        os.killpg(first.pid, signal.SIGKILL)  # worker and its pool process, mid-task
        first.wait(timeout=30)
        second, second_log = _worker(tmp_path, "worker-2", config, data_dir, stall=False)
        _wait(
            "every case exported",
            lambda: _all_finished(data_dir, n_cases),
            300,
            lambda: second_log.read_text() + daemon.log(),
        )
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(timeout=30)
        stop_process(daemon.proc)
        redis.stop()
    assert {c["state"] for c in _cases(data_dir)} == {"exported"}, _cases(data_dir)
    assert "the broker restarted: queueing again what it held" in daemon.log()
    assert taken, "the first worker received no task"
    assert taken[0] in second_log.read_text()  # the killed task was redelivered
    assert "succeeded" not in first_log.read_text()

    stored = orthanc_instances(orthanc)
    assert len(stored.get("SR", [])) == n_cases  # one per case: no duplicate after the kill
    assert len(stored.get("OT", [])) == len(_scored(cohort)) * 8
    srs = [orthanc_dataset(orthanc, i) for i in stored["SR"]]
    _check_numbers(srs, trained_bundle, _scored(cohort))


def test_failed_export_is_parked_and_sent_by_retry_exports(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle
) -> None:
    pacs_port = free_port()  # nothing listens there yet: the PACS is down
    config = _config(
        tmp_path,
        models={"bundle_dir": trained_bundle.folder},
        export={
            "destinations": [{"ae_title": "ORTHANC", "host": "127.0.0.1", "port": pacs_port}],
            "max_attempts": 2,
            "backoff_s": 0.2,
        },
    )
    data_dir = tmp_path / "data"
    daemon = start_daemon(data_dir, config=config, extra=("--stable-age-s", "1"))
    patient = cohort.patients[0]
    try:
        sent = storescu(daemon.port, cohort.out_dir / patient.patient_id)
        assert sent.returncode == 0, sent.stderr
        _wait("both cases finished", lambda: _all_finished(data_dir, 2), 180, daemon.log)
    finally:
        stop_process(daemon.proc)
    assert {c["state"] for c in _cases(data_dir)} == {"failed-export"}
    env = {"LARC_STORAGE__DATA_DIR": str(data_dir), "PATH": "/usr/bin:/bin"}
    status = larc_status(data_dir)
    assert "failed-export" in status.stdout
    assert "cannot reach" in status.stdout or "refused" in status.stdout

    orthanc = Orthanc.start(tmp_path / "orthanc", dicom_port=pacs_port)
    try:
        retried = subprocess.run(
            [LARC, "retry-exports", "--config", str(config)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
            env=env,
        )
        assert retried.returncode == 0, retried.stdout + retried.stderr
        assert "2 failed export(s) queued again: 2 sent" in retried.stdout
        stored = orthanc_instances(orthanc)
    finally:
        orthanc.stop()
    assert len(stored.get("SR", [])) == 2
    assert len(stored.get("OT", [])) == 8
    assert {c["state"] for c in _cases(data_dir)} == {"exported"}


def test_exports_resume_by_themselves_when_orthanc_comes_back(
    tmp_path: Path, cohort: CohortResult, trained_bundle: TrainedBundle, orthanc: Orthanc
) -> None:
    """The baseline case is exported to Orthanc; Orthanc then goes down (stopped by its PID)
    and the response case's export fails; Orthanc restarts on its own storage and port, and the
    export goes through by itself: each case's objects in Orthanc once, the first ones kept."""
    config = _config(
        tmp_path,
        models={"bundle_dir": trained_bundle.folder},
        export={
            "destinations": [
                {"ae_title": orthanc.aet, "host": "127.0.0.1", "port": orthanc.dicom_port}
            ],
            "max_attempts": 50,
            "backoff_s": 0.2,
            "backoff_max_s": 1.0,
        },
    )
    data_dir = tmp_path / "data"
    daemon = start_daemon(data_dir, config=config, extra=("--stable-age-s", "1"))
    patient = cohort.patients[0]
    baseline, restaging = sorted((cohort.out_dir / patient.patient_id).iterdir())
    assert "baseline" in baseline.name
    assert "restaging" in restaging.name
    pacs = orthanc
    try:
        assert storescu(daemon.port, baseline).returncode == 0
        _wait(
            "the baseline case exported",
            lambda: any(
                c["kind"] == "baseline" and c["state"] == "exported" for c in _cases(data_dir)
            ),
            180,
            daemon.log,
        )
        pacs.stop()  # the destination goes away
        assert storescu(daemon.port, restaging).returncode == 0
        _wait(
            "a failed try to export the response case",
            lambda: any(
                e["attempts"] > 0 and e["state"] != "sent"
                for e in read_index(data_dir, "SELECT * FROM exports")
            ),
            180,
            daemon.log,
        )
        pacs = Orthanc.start(tmp_path / "orthanc", dicom_port=orthanc.dicom_port)
        _wait("both cases exported", lambda: _all_finished(data_dir, 2), 180, daemon.log)
        stored = orthanc_instances(pacs)
    finally:
        stop_process(daemon.proc)
        pacs.stop()
    assert {c["state"] for c in _cases(data_dir)} == {"exported"}
    exports = read_index(data_dir, "SELECT * FROM exports")
    assert max(e["attempts"] for e in exports) > 1  # the response case's export was tried again
    assert len(stored.get("SR", [])) == 2  # one per case: nothing lost, nothing twice
    assert len(stored.get("OT", [])) == 8
