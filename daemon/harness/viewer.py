"""The OHIF viewer next to the harness: the built ``dist/`` of npm's ``@ohif/app`` served on a
loopback port with an ``app-config.js`` of our own, and the harness Orthanc's DICOMweb root
proxied under the same origin (``/dicom-web/``), so the browser needs no CORS and no
credentials. A radiologist opens ``/viewer?StudyInstanceUIDs=<uid>`` (the worklist's
``web.viewer_url`` points there). ``deploy/setup.sh --dev`` fetches the dist into ``.ohif/``.

OHIF's own routes (``/viewer``, ``/segmentation``, …) are client-side: any path that is not a
file of the dist gets ``index.html``.
"""

from __future__ import annotations

import json
import logging
import mimetypes
import shutil
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from daemon.harness.peers import free_port

logger = logging.getLogger(__name__)

OHIF_VERSION = "3.13.2"  # the @ohif/app release deploy/setup.sh fetches
_REPO = Path(__file__).resolve().parents[2]

APP_CONFIG = """window.config = {
  routerBasename: '/',
  extensions: [],
  modes: [],
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'larc-harness-orthanc',
  investigationalUseDialog: { option: 'never' },
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'larc-harness-orthanc',
      configuration: {
        friendlyName: %(name)s,
        name: 'orthanc',
        wadoUriRoot: '/dicom-web',
        qidoRoot: '/dicom-web',
        wadoRoot: '/dicom-web',
        qidoSupportsIncludeField: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'wadors',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: false,
        supportsWildcard: true,
        dicomUploadEnabled: false,
        omitQuotationForMultipartRequest: true,
        bulkDataURI: { enabled: true },
      },
    },
  ],
};
"""


def default_dist() -> Path | None:
    """The OHIF dist ``deploy/setup.sh --dev`` fetched (beside the sources, or in the current
    folder), or ``None``."""
    for root in (_REPO, Path.cwd()):
        dist = root / ".ohif" / OHIF_VERSION / "dist"
        if (dist / "index.html").is_file():
            return dist
    return None


class _Handler(BaseHTTPRequestHandler):
    server: _ViewerServer

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("viewer: %s", format % args)

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path.startswith("/dicom-web/") or path == "/dicom-web":
            self._proxy()
        elif path == "/app-config.js":
            self._send(200, "application/javascript", self.server.app_config)
        else:
            self._static(path)

    def do_POST(self) -> None:
        if self.path.startswith("/dicom-web/"):
            self._proxy()
        else:
            self._send(405, "text/plain", b"read-only viewer")

    def _send(self, status: int, content_type: str, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _static(self, path: str) -> None:
        root = self.server.dist
        target = (root / path.lstrip("/")).resolve()
        if not target.is_relative_to(root) or not target.is_file():
            target = root / "index.html"  # a client-side route of the app
        content_type = mimetypes.guess_type(target.name)[0] or "application/octet-stream"
        if target.suffix == ".wasm":
            content_type = "application/wasm"
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(target.stat().st_size))
        self.end_headers()
        with target.open("rb") as source:
            shutil.copyfileobj(source, self.wfile)

    def _proxy(self) -> None:
        url = self.server.upstream + self.path[len("/dicom-web") :]
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        request = urllib.request.Request(url, data=body, method=self.command)  # noqa: S310
        for name in ("Accept", "Content-Type"):
            if self.headers.get(name):
                request.add_header(name, self.headers[name])
        try:
            with urllib.request.urlopen(request, timeout=120) as answer:  # noqa: S310 loopback
                status, headers, data = answer.status, answer.headers, answer.read()
        except urllib.error.HTTPError as exc:
            status, headers, data = exc.code, exc.headers, exc.read()
        except OSError as exc:
            self._send(502, "text/plain", f"Orthanc's DICOMweb did not answer: {exc}".encode())
            return
        self._send(status, headers.get("Content-Type", "application/octet-stream"), data)


class _ViewerServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, dist: Path, upstream: str) -> None:
        super().__init__(("127.0.0.1", port), _Handler)
        self.dist = dist.resolve()
        self.upstream = upstream.rstrip("/")
        self.app_config = (APP_CONFIG % {"name": json.dumps("Orthanc (larc harness)")}).encode()


class OhifViewer:
    """OHIF served on a free loopback port in a thread of this process; :meth:`stop` ends it."""

    def __init__(self, dist: Path, dicomweb_url: str) -> None:
        """``dist``: OHIF's built ``dist/``; ``dicomweb_url``: the DICOMweb root it reads
        (e.g. Orthanc's ``http://127.0.0.1:8042/dicom-web``, without authentication)."""
        if not (dist / "index.html").is_file():
            raise FileNotFoundError(
                f"{dist} holds no built OHIF viewer: run `bash deploy/setup.sh --dev` "
                f"(it fetches @ohif/app@{OHIF_VERSION} into .ohif/)"
            )
        self.port = free_port()
        self._server = _ViewerServer(self.port, dist, dicomweb_url)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="ohif-viewer", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The viewer's root (its study list)."""
        return f"http://127.0.0.1:{self.port}"

    def study_url(self, study_uid: str = "{study_uid}") -> str:
        """The address that opens a study (``{study_uid}`` left in: a ``web.viewer_url``)."""
        return f"{self.url}/viewer?StudyInstanceUIDs={study_uid}"

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)
