"""The running daemon: every stage of ``larc serve`` wired from the settings.

DICOM listener -> :mod:`daemon.intake` (ingest, assembly, priors) -> :mod:`daemon.scoring`
(dispatcher, executors) -> :mod:`daemon.export` (exporter), all sharing one :class:`Index`; the
web app (:mod:`daemon.web`) reads through its own connection. Each stage runs its own thread;
they meet only in the index and through wake-up calls.
"""

from __future__ import annotations

import logging
import signal
import threading
from dataclasses import replace
from types import FrameType
from typing import TYPE_CHECKING

from daemon.export import Exporter
from daemon.export.destinations import dicomweb_node
from daemon.index import INDEX_FILE, Index
from daemon.intake.assembly import Assembler, AutoSegmentation, log_ready
from daemon.intake.ingest import Ingest
from daemon.intake.priors import Archive, DicomWebArchive, DimseArchive, PriorRetriever
from daemon.intake.receivers import Receivers, ReceiverSpec
from daemon.scoring.checks import InputPolicy
from daemon.scoring.dispatcher import Dispatcher
from daemon.scoring.executors import CeleryExecutor, EmbeddedExecutor, Executor
from daemon.scoring.model import ModelInfo
from daemon.scoring.segmenting import AutoSegmenter
from daemon.settings import Destination, Settings
from dicom_io.reception import SPOOL_PREFIX
from dicom_io.roles import load_rules
from dicom_io.scp import Caller, Listener, ListenerOptions
from dicom_io.scu import PacsNode
from dicom_io.storage import InstanceStore
from workers.app import CeleryConfig
from workers.app import configure as configure_celery

if TYPE_CHECKING:
    from daemon.web.server import WebServer

logger = logging.getLogger(__name__)

INSTANCES_DIR = "instances"
SPOOL_DIR = "spool"  # received data sets as they arrive, until stored (same file system)


def celery_config(settings: Settings) -> CeleryConfig:
    """The Celery app's configuration from larc's settings (broker must be set)."""
    broker = settings.broker
    if broker.url is None:
        raise ValueError("broker.url is not set: larc worker needs the broker larc serve uses")
    url = broker.url.get_secret_value()
    backend = broker.result_backend.get_secret_value() if broker.result_backend else url
    return CeleryConfig(
        broker_url=url,
        result_backend=backend,
        visibility_timeout_s=broker.visibility_timeout_s,
        task_time_limit_s=settings.workers.task_time_limit_s,
        max_retries=settings.workers.max_retries,
        retry_backoff_max_s=settings.workers.retry_backoff_max_s,
        bundle_dir=settings.models.bundle_dir,
    )


class Daemon:
    """Everything ``larc serve`` runs. :meth:`start`, then :meth:`wait` or :meth:`stop`."""

    def __init__(self, settings: Settings) -> None:
        settings.check_secure()
        self.settings = settings
        data_dir = settings.storage.data_dir
        self.store = InstanceStore(data_dir / INSTANCES_DIR)
        self.index = Index(data_dir / INDEX_FILE)
        scp = settings.scp
        self.ingest = Ingest(
            self.store,
            self.index,
            settings.storage.duplicate_policy,
            settings.storage.watermark(),
        )
        self.listener = Listener(
            ListenerOptions(
                ae_title=scp.ae_title,
                bind_address=scp.bind_address,
                port=scp.port,
                max_associations=scp.max_associations,
                max_pdu=scp.max_pdu,
                allowed_callers=[Caller(c.ae_title, c.host) for c in scp.allowed_callers],
                ssl_context=scp.tls.server_context(),
                spool_dir=data_dir / SPOOL_DIR,
                reuse_port=scp.listener_processes > 1,
                spool_watermark=self.ingest.watermark,
            ),
            self.ingest,
        )
        self.exporter = Exporter(self.index, data_dir, settings.export, scp.ae_title)
        commitment = any(
            isinstance(d, Destination) and d.commitment != "off"
            for d in settings.export.destinations
        )
        if commitment and scp.listener_processes > 1:
            raise ValueError(
                "scp.listener_processes > 1 cannot be used with storage commitment "
                "(export.destinations[].commitment): a PACS's commitment report could reach a "
                "receiver process, which cannot act on it; set scp.listener_processes: 1"
            )
        if commitment:
            self.listener = Listener(
                self.listener.options, self.ingest, on_commitment=self.exporter.on_commitment
            )
        self.receivers = self._receivers(settings)
        self.priors = self._prior_retriever(settings)
        rules = load_rules(settings.roles.rules_file)
        self.dispatcher = self._dispatcher(settings)
        self.assembler = Assembler(
            self.index,
            settings.assembly.stable_age_s,
            settings.pairing.policy(),
            rules,
            on_ready=self.dispatcher.wake if self.dispatcher else log_ready,
            priors=self.priors,
            auto=self._auto_segmentation(settings),
            on_request=self.dispatcher.wake if self.dispatcher else None,
        )
        self.web_index: Index | None = None
        self.web = self._web(settings)
        self._stop_requested = threading.Event()
        self._closed = False

    def _receivers(self, settings: Settings) -> Receivers | None:
        extra = settings.scp.listener_processes - 1
        if extra == 0:
            return None
        spec = ReceiverSpec(
            options=replace(self.listener.options, ssl_context=None),
            tls=settings.scp.tls,
            store_root=self.store.root,
            data_dir=settings.storage.data_dir,
            duplicate_policy=settings.storage.duplicate_policy,
            watermark=self.ingest.watermark,
            log_level=logging.getLevelName(logging.getLogger().level),
            log_json=settings.log.json_lines,
        )
        return Receivers(spec, extra)

    def _listening(self) -> bool:
        """Whether the listener, and every receiver process, is up."""
        return self.listener.running and (self.receivers is None or self.receivers.alive())

    def _web(self, settings: Settings) -> WebServer | None:
        web = settings.web
        if not web.enabled:
            return None
        if not web.authenticated:
            logger.warning(
                "web worklist not started: it shows patient data and needs web.token "
                "(LARC_WEB__TOKEN) or web.trusted_user_header; or set web.enabled: false"
            )
            return None
        # imported here: FastAPI and uvicorn load only when the web app runs
        from daemon.web.app import WebContext, create_app  # noqa: PLC0415
        from daemon.web.server import WebServer  # noqa: PLC0415

        model = self.dispatcher.model if self.dispatcher else None
        # its own connection: worklist reads (WAL) never wait on the listener's writes
        self.web_index = Index(settings.storage.data_dir / INDEX_FILE)
        app = create_app(
            WebContext(
                self.web_index,
                settings,
                listener_ok=self._listening,
                wake=self.dispatcher.wake if self.dispatcher else None,
                model_label=model.label if model else None,
                cr_features=model.cr_features if model else (),
            )
        )
        return WebServer(app, web.bind_address, web.port)

    def _dispatcher(self, settings: Settings) -> Dispatcher | None:
        if settings.models.bundle_dir is None:
            logger.warning("no models.bundle_dir configured: cases are assembled but not scored")
            return None
        model = ModelInfo.read(settings.models.bundle_dir)
        executor: Executor
        if settings.broker.url is None:
            executor = EmbeddedExecutor(settings.workers.embedded_threads, model.folder)
            logger.info(
                "no broker configured: scoring in %d worker thread(s) with %s",
                settings.workers.embedded_threads, model.label,
            )  # fmt: skip
        else:
            configure_celery(celery_config(settings))
            executor = CeleryExecutor()
            logger.info("scoring through the broker's cpu/gpu queues with %s", model.label)
        segmenter = None
        if settings.segmentation.mode != "manual" and model.segmenter:
            segmenter = AutoSegmenter(
                self.index,
                model,
                executor,
                self.ingest,
                settings.export.manufacturer,
                settings.segmentation.series_number,
                settings.segmentation.gate.overrides(),
            )
        return Dispatcher(
            self.index,
            settings.storage.data_dir,
            model,
            executor,
            self.exporter.destinations(),
            settings.export.manufacturer,
            settings.workers.lease_s,
            embedded=settings.broker.url is None,
            on_result=self.exporter.wake,
            policy=InputPolicy(
                settings.scoring.out_of_range,
                settings.scoring.envelope_margin,
                settings.scoring.require_validated,
            ),
            segmenter=segmenter,
            prepare_processes=settings.workers.prepare_processes,
        )

    def _auto_segmentation(self, settings: Settings) -> AutoSegmentation | None:
        """How T2W series without a drawn mask get one (``None``: they wait for one): made by
        the dispatcher's segmenter, when it has one."""
        if self.dispatcher is None:
            return None
        mode, model = settings.segmentation.mode, self.dispatcher.model
        if self.dispatcher.segmenter is None:
            if mode != "manual":
                logger.warning(
                    "segmentation.mode is %s but model bundle %s has no segmenter: cases "
                    "without a drawn tumour mask wait for one (train one with larc train "
                    "models --segmentation-epochs N)", mode, model.label,
                )  # fmt: skip
            return None
        logger.info("T2W series without a drawn tumour mask are segmented by %s (%s)",
                    model.label, mode)  # fmt: skip
        return AutoSegmentation(model.label, always=mode == "auto_always")

    def _prior_retriever(self, settings: Settings) -> PriorRetriever | None:
        pacs = settings.pacs
        how = pacs.prior_source  # the settings model checked that what it needs is set
        archive: Archive
        if how == "dimse" and pacs.ae_title and pacs.host and pacs.port:
            node = PacsNode(pacs.ae_title, pacs.host, pacs.port, calling_ae=settings.scp.ae_title)
            archive = DimseArchive(node, settings.scp.ae_title)
        elif how == "dicomweb" and pacs.dicomweb is not None:
            archive = DicomWebArchive(dicomweb_node(pacs.dicomweb), self.ingest)
        else:
            return None
        return PriorRetriever(archive, self.index.study_uids_of_patient)

    def start(self) -> None:
        """Clean up after a crash, then start listening."""
        leftovers = self.store.remove_leftovers() if self.store.root.exists() else 0
        spool = self.listener.options.spool_dir
        if spool is not None and spool.exists():
            for partial in spool.glob(f"{SPOOL_PREFIX}*"):  # none of them was acknowledged
                partial.unlink(missing_ok=True)
                leftovers += 1
        if leftovers:
            logger.warning("removed %d partial files left by an interrupted write", leftovers)
        if self.web is not None:  # first: a clash on its port stops us before DICOM arrives
            self.web.start()
        self.listener.start()
        if self.receivers is not None:
            self.receivers.start(self.listener.port)
        self.assembler.start()
        if self.dispatcher is not None:
            self.dispatcher.start()
        self.exporter.start()

    def stop(self) -> None:
        """Stop listening and close the index."""
        if self._closed:
            return
        self._closed = True
        if self.web is not None:
            self.web.stop()
        if self.receivers is not None:
            self.receivers.stop()
        self.listener.stop()
        self.assembler.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        self.exporter.stop()
        if self.priors is not None:
            self.priors.stop()
        if self.web_index is not None:
            self.web_index.close()
        self.index.close()
        logger.info("stopped")

    def wait(self) -> None:
        """Block until SIGTERM or SIGINT, then stop."""

        def _signal(signum: int, _frame: FrameType | None) -> None:
            logger.info("received %s, stopping", signal.Signals(signum).name)
            self._stop_requested.set()

        signal.signal(signal.SIGTERM, _signal)
        signal.signal(signal.SIGINT, _signal)
        self._stop_requested.wait()
        self.stop()
