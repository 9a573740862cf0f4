"""Dispatch: ready cases become work for the workers, and their results come back.

A case moves ``ready`` -> ``queued`` -> ``running`` -> ``done`` (results stored under
``<data_dir>/results/``, its exports queued), to ``declined`` when its inputs must not be
scored (:mod:`daemon.scoring.checks`: nothing is sent), or to ``failed`` with the stage and
reason; the exporter (:mod:`daemon.export`) takes it from ``done``. The index is the queue: a
restarted daemon picks up where it stopped.
"""

from __future__ import annotations

import base64
import json
import logging
import multiprocessing
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pydicom

from daemon.cases import CaseState, recorded_series
from daemon.index import CaseRow, Index
from daemon.loops import BackgroundLoop
from daemon.scoring.checks import CaseDeclined, InputPolicy
from daemon.scoring.executors import Executor, WorkState
from daemon.scoring.model import ModelInfo
from daemon.scoring.segmenting import AutoSegmenter
from daemon.scoring.work_order import WorkOrders, prepare
from dicom_io.errors import InvalidInputError
from dicom_io.storage import InstanceStore
from pipeline.case import CaseInputs
from pipeline.errors import PipelineInputError

logger = logging.getLogger(__name__)

RESULTS_DIR = "results"


class Dispatcher:
    """Ready cases -> work orders -> executor -> results; a loop in a thread."""

    def __init__(
        self,
        index: Index,
        data_dir: Path,
        model: ModelInfo,
        executor: Executor,
        destinations: Sequence[str],
        manufacturer: str,
        lease_s: float,
        embedded: bool,
        on_result: Callable[[], None] | None = None,
        policy: InputPolicy | None = None,
        segmenter: AutoSegmenter | None = None,
        prepare_processes: int = 1,
    ) -> None:
        """``destinations``: the export destinations each result is queued for;
        ``on_result``: called after a result is stored (the exporter's wake-up); ``policy``:
        what to do with inputs outside the training envelope (``scoring.*``); ``segmenter``:
        makes the automatic masks the assembler asks for (``None``: none are made);
        ``prepare_processes``: above 1, that many cases are prepared at once, each in a
        process of a pool (1: one at a time in the dispatch thread)."""
        self.segmenter = segmenter
        self.prepare_processes = prepare_processes
        self._pool: ProcessPoolExecutor | None = None
        self._preparing: dict[tuple[str, int], tuple[CaseRow, Future[CaseInputs]]] = {}
        self.index = index
        self.data_dir = data_dir
        self.model = model
        self.executor = executor
        self.destinations = list(destinations)
        self.orders = WorkOrders(index, model, manufacturer, policy)
        self.lease_s = lease_s
        self.embedded = embedded
        self.on_result = on_result
        self.results = InstanceStore(data_dir / RESULTS_DIR)
        self._loop = BackgroundLoop("dispatch", self.run_once, interval_s=1.0)

    # -- start-up ------------------------------------------------------------------------------

    def requeue_stale(self, now: float | None = None, everything: bool = False) -> int:
        """Queue again the cases whose work was lost: every queued/running one in embedded
        mode (its threads died with the process) or when ``everything`` (the broker
        restarted), those past the lease with a broker."""
        now = time.time() if now is None else now
        every = self.embedded or everything
        reason = (
            "queued again: the broker restarted and the work it held may be lost"
            if everything
            else "queued again: its work was lost when larc stopped"
        )
        count = 0
        for case in self.index.cases(CaseState.QUEUED, CaseState.RUNNING):
            lost = every or case.updated_at < now - self.lease_s
            if lost and self.index.set_case_state(
                case.case_id, case.version, CaseState.READY, reason
            ):
                count += 1
        if count:
            logger.warning(
                "%d case(s) %s", count, reason if everything else "queued again after a restart"
            )
        if self.segmenter is not None:
            masks = self.segmenter.requeue_lost(every)
            if masks:
                logger.warning("%d automatic mask(s) asked again: their work was lost", masks)
        return count

    # -- one pass ------------------------------------------------------------------------------

    def run_once(self) -> None:
        """Make the automatic masks asked for, dispatch ready cases and collect finished work.
        After a broker restart, everything queued or running is queued again (a result that
        still comes from the old work is not read: the case holds the new task's handle, and
        a case's results are stored and exported once)."""
        if self.executor.broker_restarted():
            logger.warning("the broker restarted: queueing again what it held")
            self.requeue_stale(everything=True)
        if self.segmenter is not None:
            self.segmenter.run_once()
        for case in self.index.cases(CaseState.READY):
            if self._loop.stopping:
                return
            if self._pool is None:
                self._dispatch(case)
                self._collect()
            elif (case.case_id, case.version) not in self._preparing:
                if len(self._preparing) >= self.prepare_processes:
                    break
                self._start_preparing(case)
        self._finish_prepared()
        self._collect()

    def _start_preparing(self, case: CaseRow) -> None:
        """Hand the case's preparation to the pool (it stays ready meanwhile)."""
        if self._pool is None:
            return
        try:
            plan = self.orders.plan(case)
        except (PipelineInputError, InvalidInputError, OSError) as exc:
            self._prepare_failed(case, str(exc))
            return
        future = self._pool.submit(prepare, plan)
        future.add_done_callback(lambda _: self._loop.wake())
        self._preparing[(case.case_id, case.version)] = (case, future)

    def _finish_prepared(self) -> None:
        """Dispatch the cases whose preparation ended."""
        for key, (case, future) in list(self._preparing.items()):
            if not future.done():
                continue
            del self._preparing[key]
            try:
                inputs = future.result()
            except (PipelineInputError, InvalidInputError, OSError) as exc:
                self._prepare_failed(case, str(exc))
                continue
            except BrokenProcessPool:
                # a preparation process died (killed, out of memory): a new pool for the rest
                self._prepare_failed(case, "its preparation process died")
                self._pool = self._new_pool()
                continue
            self._dispatch(case, inputs)

    def _prepare_failed(self, case: CaseRow, reason: str) -> None:
        self.index.set_case_state(
            case.case_id, case.version, CaseState.FAILED, f"prepare: {reason}"
        )
        logger.error("case %s failed while preparing its inputs: %s", case.case_id, reason)

    def _new_pool(self) -> ProcessPoolExecutor:
        # spawned, not forked: this process runs threads (the listener, the web app)
        return ProcessPoolExecutor(
            self.prepare_processes, mp_context=multiprocessing.get_context("spawn")
        )

    def _dispatch(self, case: CaseRow, inputs: CaseInputs | None = None) -> None:
        """Build the case's payload (from ``inputs`` when they were prepared already) and
        submit it."""
        try:
            payload = (
                self.orders.build(case) if inputs is None else self.orders.finish(case, inputs)
            )
        except CaseDeclined as exc:
            reason = "; ".join(exc.reasons)  # the state says declined; the reason says why
            self.index.set_case_state(case.case_id, case.version, CaseState.DECLINED, reason)
            logger.warning("case %s version %d declined: %s", case.case_id, case.version, reason)
            return
        except (PipelineInputError, InvalidInputError, OSError) as exc:
            self.index.set_case_state(
                case.case_id, case.version, CaseState.FAILED, f"prepare: {exc}"
            )
            logger.error("case %s failed while preparing its inputs: %s", case.case_id, exc)
            return
        if self.index.result(payload.key) is not None:
            self._after_result(case.case_id, case.version, payload.key)  # done before
            return
        handle = self.executor.submit(payload.to_json())
        warned = ""
        if payload.warnings:
            warned = f" with warnings (the SR lists them): {'; '.join(payload.warnings)}"
            logger.warning("case %s version %d scored%s", case.case_id, case.version, warned)
        if self.index.set_case_state(
            case.case_id, case.version, CaseState.QUEUED,
            f"queued for {self.model.label}{warned}", payload.key, handle,
        ):  # fmt: skip
            logger.info("case %s version %d queued", case.case_id, case.version)

    def _collect(self) -> None:
        for case in self.index.cases(CaseState.QUEUED, CaseState.RUNNING, with_task=True):
            poll = self.executor.poll(case.task or "")
            case_id, version = case.case_id, case.version
            if poll.state == WorkState.RUNNING and case.state == CaseState.QUEUED:
                self.index.set_case_state(case_id, version, CaseState.RUNNING, "scoring")
            elif poll.state == WorkState.LOST:
                self.index.set_case_state(
                    case_id, version, CaseState.READY, "queued again: work lost"
                )
            elif poll.state == WorkState.FAILED:
                self._failed(case_id, version, f"worker error: {poll.error}")
            elif poll.state == WorkState.DONE and poll.result is not None:
                if poll.result.get("failed"):
                    self._failed(case_id, version, str(poll.result["failed"]))
                else:
                    self._store(case, poll.result)

    def _failed(self, case_id: str, version: int, reason: str) -> None:
        self.index.set_case_state(case_id, version, CaseState.FAILED, reason)
        logger.error("case %s version %d failed: %s", case_id, version, reason)

    def _store(self, case: CaseRow, result: dict[str, Any]) -> None:
        key = case.work_key or ""
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
        files.extend(self._automatic_masks(case))
        self.index.record_result(
            {
                "work_key": key,
                "case_id": case.case_id,
                "version": case.version,
                "study_uid": sr["study"],
                "sr_sop_uid": sr["sop"],
                "sr_series_uid": sr["series"],
                "scores": json.dumps(result["scores"], sort_keys=True),
                "files": "\n".join(files),
            },
            self.destinations,
        )
        self._after_result(case.case_id, case.version, key)

    def _automatic_masks(self, case: CaseRow) -> list[str]:
        """The stored automatic SEGs the case was scored on: exported with its results."""
        files: list[str] = []
        for series in recorded_series(case.inputs, case.kind).values():
            for mask in series.masks:
                if self.index.auto_mask_of_seg(mask) is not None:
                    files.extend(
                        str(path.relative_to(self.data_dir))
                        for path in self.index.instance_paths(mask)
                        if path.is_relative_to(self.data_dir)
                    )
        return files

    def _after_result(self, case_id: str, version: int, key: str) -> None:
        stored = self.index.result(key)
        count = len(stored.files) if stored else 0
        self.index.set_case_state(
            case_id, version, CaseState.DONE, f"scored: {count} result objects stored",
            work_key=key,
        )  # fmt: skip
        logger.info("case %s version %d scored", case_id, version)
        if self.on_result is not None:
            self.on_result()

    # -- background loop -----------------------------------------------------------------------

    def wake(self, *_args: object) -> None:
        """Look for ready cases now (the assembler calls this)."""
        self._loop.wake()

    def start(self) -> None:
        """Re-queue lost work, then run :meth:`run_once` every second or when woken."""
        self.requeue_stale()
        if self.prepare_processes > 1:
            self._pool = self._new_pool()
        self._loop.start()

    def stop(self) -> None:
        """End the loop and stop taking work (cases in preparation stay ready)."""
        self._loop.stop()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self.executor.shutdown()
