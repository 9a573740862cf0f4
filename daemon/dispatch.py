"""Dispatch: ready cases become work for the workers, and their results come back.

A case moves ``ready`` -> ``queued`` -> ``running`` -> ``done`` (results stored under
``<data_dir>/results/``) -> ``exported`` (or ``failed-export``), or to ``failed`` with the stage
and reason. The index is the queue: a restarted daemon picks up where it stopped.

The daemon holds the DICOM files, so it prepares each case's model inputs itself (science
preprocessing, a few seconds of CPU) and hands workers a self-contained payload
(:mod:`workers.payload`): workers need the model bundle, not the storage. Two executors run the
same task functions: :class:`CeleryExecutor` (Redis broker, ``larc worker`` processes anywhere)
and :class:`EmbeddedExecutor` (worker threads in this process, no broker).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pydicom
from celery import chain
from celery.result import AsyncResult

from daemon.export import Exporter
from daemon.index import Index
from dicom_io.errors import InvalidInputError
from dicom_io.roles import RoleRule
from dicom_io.storage import InstanceStore
from pipeline.case import PREFIX, SIGNATURES, prepare_case
from pipeline.config import PreprocessConfig
from pipeline.errors import PipelineInputError
from pipeline.manifest import verify_bundle
from workers.app import ANALYSE, REPORT, app
from workers.payload import CasePayload, header, idempotency_key

logger = logging.getLogger(__name__)

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
READY = "ready"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
RESULTS_DIR = "results"


@dataclass(frozen=True)
class Poll:
    """Where a submitted piece of work stands."""

    state: str  # queued, running, done, failed, lost
    result: dict[str, Any] | None = None
    error: str | None = None


class Executor(Protocol):
    """Runs a case's analyse + report tasks somewhere."""

    def submit(self, payload: dict[str, Any]) -> str:
        """Start the work; returns a handle to :meth:`poll` (kept in the index)."""

    def poll(self, handle: str) -> Poll:
        """The state of the work behind ``handle``."""

    def shutdown(self) -> None:
        """Stop taking work."""


class EmbeddedExecutor:
    """Worker threads in the daemon: the embedded default, no broker. Durable because the
    index is the queue: work lost with the process is queued again at the next start."""

    def __init__(self, threads: int, bundle_dir: Path) -> None:
        self.bundle_dir = bundle_dir
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="score")
        self._futures: dict[str, Future[dict[str, Any]]] = {}
        self._started: set[str] = set()
        self._lock = threading.Lock()

    def _run(self, handle: str, payload: dict[str, Any]) -> dict[str, Any]:
        # imported here: torch and the networks load with the first case, not at start-up
        from workers.tasks import run_analyse, run_report  # noqa: PLC0415

        with self._lock:
            self._started.add(handle)
        return run_report(run_analyse(payload, self.bundle_dir), payload)

    def submit(self, payload: dict[str, Any]) -> str:
        """Queue the work on the threads."""
        handle = f"embedded:{payload['key']}:{time.monotonic_ns()}"
        with self._lock:
            self._futures[handle] = self._pool.submit(self._run, handle, payload)
        return handle

    def poll(self, handle: str) -> Poll:
        """State of the work (``lost`` when this process did not start it)."""
        with self._lock:
            future = self._futures.get(handle)
            started = handle in self._started
        if future is None:
            return Poll("lost")
        if not future.done():
            return Poll(RUNNING if started else QUEUED)
        with self._lock:
            self._futures.pop(handle, None)
            self._started.discard(handle)
        error = future.exception()
        if error is not None:
            return Poll(FAILED, error=f"{type(error).__name__}: {error}")
        return Poll(DONE, result=future.result())

    def shutdown(self) -> None:
        """Finish the task in hand; queued ones are picked up again at the next start."""
        self._pool.shutdown(wait=False, cancel_futures=True)


class CeleryExecutor:
    """``larc.analyse`` (gpu queue) then ``larc.report`` (cpu queue) through the broker."""

    def submit(self, payload: dict[str, Any]) -> str:
        """Send the chain (tasks by name: the daemon never imports the networks); the handle
        holds both task ids."""
        analyse = app.signature(ANALYSE, args=(payload,))
        report = app.signature(REPORT, args=(payload,))
        result = chain(analyse, report).apply_async()
        return json.dumps({"analyse": result.parent.id, "report": result.id})

    def poll(self, handle: str) -> Poll:
        """State from the result backend (the workers' reports)."""
        try:
            ids = json.loads(handle)
        except ValueError:
            return Poll("lost")
        report, analyse = AsyncResult(ids["report"], app=app), AsyncResult(ids["analyse"], app=app)
        if report.state == "SUCCESS":
            return Poll(DONE, result=report.result)
        for step in (report, analyse):
            if step.state == "FAILURE":
                return Poll(FAILED, error=f"{type(step.result).__name__}: {step.result}")
        if analyse.state in ("STARTED", "RETRY", "SUCCESS"):
            return Poll(RUNNING)
        return Poll(QUEUED)

    def shutdown(self) -> None:
        """Nothing to stop: the work stays with the broker and the workers."""


@dataclass(frozen=True)
class ModelInfo:
    """What the daemon needs of the model bundle (read from its manifest)."""

    folder: Path
    name: str
    version: str
    preprocess: PreprocessConfig
    cr_features: tuple[str, ...] = ()  # the radiologist-read features of the CR/CRD models

    @property
    def label(self) -> str:
        """``name version`` as :class:`pipeline.bundle.Bundle` calls it."""
        return f"{self.name} {self.version}"

    @classmethod
    def read(cls, folder: Path) -> ModelInfo:
        """From ``folder`` (checked: files, hashes, preprocessing); :class:`BundleError`
        (a ``ValueError``) naming what is wrong."""
        manifest, preprocess = verify_bundle(folder)
        cr = tuple(str(f) for f in (manifest.get("response") or {}).get("cr_features") or ())
        return cls(folder, str(manifest["name"]), str(manifest["version"]), preprocess, cr)


class Dispatcher:
    """Ready cases -> payloads -> executor -> results -> exports; a loop in a thread."""

    def __init__(
        self,
        index: Index,
        data_dir: Path,
        model: ModelInfo,
        executor: Executor,
        exporter: Exporter,
        rules: Sequence[RoleRule],
        manufacturer: str,
        lease_s: float,
        embedded: bool,
    ) -> None:
        self.index = index
        self.data_dir = data_dir
        self.model = model
        self.executor = executor
        self.exporter = exporter
        self.rules = rules
        self.manufacturer = manufacturer
        self.lease_s = lease_s
        self.embedded = embedded
        self.results = InstanceStore(data_dir / RESULTS_DIR)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- start-up ------------------------------------------------------------------------------

    def requeue_stale(self, now: float | None = None) -> int:
        """Queue again the cases whose work was lost: every queued/running one in embedded
        mode (its threads died with the process), those past the lease with a broker."""
        now = time.time() if now is None else now
        rows = self.index.query("SELECT * FROM cases WHERE state IN ('queued', 'running')")
        count = 0
        for case in rows:
            if self.embedded or case["updated_at"] < now - self.lease_s:
                reason = "queued again: its work was lost when larc stopped"
                if self.index.set_case_state(case["case_id"], case["version"], READY, reason):
                    count += 1
        if count:
            logger.warning("%d case(s) queued again after a restart", count)
        return count

    # -- one pass ------------------------------------------------------------------------------

    def run_once(self) -> None:
        """Dispatch ready cases, collect finished work, send due exports."""
        for case in self.index.query(
            "SELECT * FROM cases WHERE state = 'ready' ORDER BY updated_at"
        ):
            if self._stop.is_set():
                return
            self._dispatch(case)
            self._collect()
        self._collect()
        self.exporter.run_due()

    def _files(self, study_uid: str | None) -> list[Path]:
        if study_uid is None:
            return []
        return [
            Path(r["path"])
            for r in self.index.query(
                "SELECT i.path FROM instances i JOIN series s USING (series_uid) "
                "WHERE s.study_uid = ?",
                (study_uid,),
            )
        ]

    def _header(self, sop_uid: str) -> dict[str, Any] | None:
        row = self.index.instance(sop_uid)
        if row is None:
            return None
        return header(pydicom.dcmread(row["path"], stop_before_pixels=True))

    def _first_instance(self, series_uid: str) -> dict[str, Any] | None:
        rows = self.index.query(
            "SELECT sop_uid FROM instances WHERE series_uid = ? ORDER BY instance_number, sop_uid "
            "LIMIT 1",
            (series_uid,),
        )
        return self._header(rows[0]["sop_uid"]) if rows else None

    def payload(self, case: Any) -> CasePayload:
        """Prepare the case's inputs and gather what the workers need (see the module doc)."""
        kind = case["kind"]
        studies = {"baseline": self._files(case["baseline_study_uid"])}
        if kind == "response":
            studies["restaging"] = self._files(case["restaging_study_uid"])
        inputs = prepare_case(
            studies,
            self.model.preprocess,
            self.rules,
            signatures=SIGNATURES if kind == "response" else (),
            stacks=kind == "baseline",
        )
        recorded = json.loads(case["inputs"] or "{}")
        evidence: list[dict[str, Any]] = []
        for item in inputs.slices.values():
            found = self._header(item.sop_instance_uid) if item.sop_instance_uid else None
            if found is not None:
                evidence.append(found)
        masks: dict[str, dict[str, str]] = {}
        for timepoint in PREFIX:
            series_uid = recorded.get(f"{timepoint}_mask")
            found = self._first_instance(series_uid) if series_uid else None
            if found is not None:
                evidence.append(found)
                ds = pydicom.Dataset.from_json(found)
                masks[timepoint] = {
                    "sop_class_uid": str(ds.SOPClassUID),
                    "sop_instance_uid": str(ds.SOPInstanceUID),
                    "series_instance_uid": str(ds.SeriesInstanceUID),
                    "study_instance_uid": str(ds.StudyInstanceUID),
                }
        target_study = case["restaging_study_uid"] if kind == "response" else (
            case["baseline_study_uid"]
        )  # fmt: skip
        target = next(
            (e for e in evidence if pydicom.Dataset.from_json(e).StudyInstanceUID == target_study),
            None,
        )
        if target is None:
            t2w = recorded.get(f"{'restaging' if kind == 'response' else 'baseline'}_t2w_ax", "")
            target = self._first_instance(t2w.split(":")[0]) if t2w else None
        if target is None:
            raise PipelineInputError("no instance of the target study to attach results to")
        key = idempotency_key(case["case_id"], case["fingerprint"] or "", self.model.label)
        ready_at = (
            self.index.query(
                "SELECT MIN(at) AS at FROM case_history WHERE case_id = ? AND version = ?",
                (case["case_id"], case["version"]),
            )[0]["at"]
            or time.time()
        )
        previous = self.index.query(
            "SELECT * FROM results WHERE case_id = ? AND work_key != ? "
            "ORDER BY created_at DESC LIMIT 1",
            (case["case_id"], key),
        )
        predecessor = None
        if previous:
            predecessor = {
                "sop_class_uid": COMPREHENSIVE_3D_SR,
                "sop_instance_uid": previous[0]["sr_sop_uid"],
                "series_instance_uid": previous[0]["sr_series_uid"],
                "study_instance_uid": previous[0]["study_uid"],
            }
        return CasePayload(
            case_id=case["case_id"],
            kind=kind,
            version=int(case["version"]),
            key=key,
            model_version=self.model.label,
            algorithm={
                "name": self.model.name,
                "version": self.model.version,
                "manufacturer": self.manufacturer,
            },
            created_at=dt.datetime.fromtimestamp(ready_at).isoformat(timespec="seconds"),
            inputs_b64=base64.b64encode(inputs.to_bytes()).decode(),
            target_study=target,
            evidence=evidence,
            masks=masks,
            predecessor=predecessor,
            clinical=self.index.readings(case["case_id"]),
        )

    def _dispatch(self, case: Any) -> None:
        case_id, version = case["case_id"], int(case["version"])
        try:
            payload = self.payload(case)
        except (PipelineInputError, InvalidInputError, OSError) as exc:
            self.index.set_case_state(case_id, version, FAILED, f"prepare: {exc}")
            logger.error("case %s failed while preparing its inputs: %s", case_id, exc)
            return
        if self.index.query("SELECT 1 FROM results WHERE work_key = ?", (payload.key,)):
            self._after_result(case_id, version, payload.key)  # done before: nothing to run
            return
        handle = self.executor.submit(payload.to_json())
        if self.index.set_case_state(
            case_id, version, QUEUED, f"queued for {self.model.label}", payload.key, handle
        ):
            logger.info("case %s version %d queued", case_id, version)

    def _collect(self) -> None:
        for case in self.index.query(
            "SELECT * FROM cases WHERE state IN ('queued', 'running') AND task IS NOT NULL"
        ):
            poll = self.executor.poll(case["task"])
            case_id, version = case["case_id"], int(case["version"])
            if poll.state == RUNNING and case["state"] == QUEUED:
                self.index.set_case_state(case_id, version, RUNNING, "scoring")
            elif poll.state == "lost":
                self.index.set_case_state(case_id, version, READY, "queued again: work lost")
            elif poll.state == FAILED:
                self._failed(case_id, version, f"worker error: {poll.error}")
            elif poll.state == DONE and poll.result is not None:
                if poll.result.get("failed"):
                    self._failed(case_id, version, str(poll.result["failed"]))
                else:
                    self._store(case, poll.result)

    def _failed(self, case_id: str, version: int, reason: str) -> None:
        self.index.set_case_state(case_id, version, FAILED, reason)
        logger.error("case %s version %d failed: %s", case_id, version, reason)

    def _store(self, case: Any, result: dict[str, Any]) -> None:
        key = case["work_key"]
        files: list[str] = []
        sr: dict[str, str] = {}
        for obj in result["objects"]:
            data = base64.b64decode(obj["data"])
            ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), stop_before_pixels=True)
            path = self.results.path_for(
                str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)
            )
            self.results.write(path, data)
            files.append(str(path.relative_to(self.data_dir)))
            if obj["name"] == "sr":
                sr = {
                    "sop": str(ds.SOPInstanceUID),
                    "series": str(ds.SeriesInstanceUID),
                    "study": str(ds.StudyInstanceUID),
                }
        self.index.record_result(
            {
                "work_key": key,
                "case_id": case["case_id"],
                "version": case["version"],
                "study_uid": sr["study"],
                "sr_sop_uid": sr["sop"],
                "sr_series_uid": sr["series"],
                "scores": json.dumps(result["scores"], sort_keys=True),
                "files": "\n".join(files),
            },
            self.exporter.destinations(),
        )
        self._after_result(case["case_id"], int(case["version"]), key)

    def _after_result(self, case_id: str, version: int, key: str) -> None:
        rows = self.index.query("SELECT files FROM results WHERE work_key = ?", (key,))
        count = len(rows[0]["files"].split("\n")) if rows else 0
        self.index.set_case_state(
            case_id, version, DONE, f"scored: {count} result objects stored", work_key=key
        )
        logger.info("case %s version %d scored", case_id, version)
        self.exporter.update_case(key, case_id, version)

    # -- background loop -----------------------------------------------------------------------

    def wake(self, *_args: object) -> None:
        """Look for ready cases now (the assembler calls this)."""
        self._wake.set()

    def start(self) -> None:
        """Re-queue lost work, then run :meth:`run_once` every second or when woken."""
        self.requeue_stale()

        def loop() -> None:
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception:  # keep dispatching; the next pass retries
                    logger.exception("dispatch pass failed")
                self._wake.wait(1.0)
                self._wake.clear()

        self._thread = threading.Thread(target=loop, name="dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop and stop taking work."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        self.executor.shutdown()
