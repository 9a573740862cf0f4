"""Benchmark of the web worklist's API on a large index: the time to answer the worklist (first
and last page, filters, sorts) and a case, over 10,000 and 50,000 cases. Not a test: run it by
hand and record the figures in the README.

    .venv/bin/python bench/worklist.py [--patients 5000 25000] [--repeat 20]

The index holds synthetic rows (two cases per patient, scores for the exported ones; see
tests/unit/daemon/web/web_data.py); requests go through the whole FastAPI app in-process
(authentication, SQL, JSON), without a network hop. No like-for-like peer exists here (Orthanc
has no worklist of scored cases), so the figures are absolute, on this machine.
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder leads sys.path and bench/pipeline.py would hide the
# pipeline package; the repository root is added for tests.unit.daemon.web.web_data.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from starlette.testclient import TestClient

from daemon.index import Index
from daemon.settings import load_settings
from daemon.web.app import WebContext, create_app
from tests.unit.daemon.web.web_data import seed_cases

TOKEN = "benchmark-token-0123456789"  # noqa: S105 (a throw-away index)
QUERIES = {
    "first page (newest)": "/api/cases",
    "last page": "/api/cases?page={last}",
    "state=failed": "/api/cases?state=failed",
    "risk_group=high": "/api/cases?risk_group=high",
    "patient search": "/api/cases?patient=P0001234",
    "study dates + kind": "/api/cases?date_from=2025-03-01&date_to=2025-03-31&kind=response",
    "sort by P(good)": "/api/cases?sort=p_good&order=desc",
    "HTML worklist page": "/?state=exported",
    "case detail": "/api/cases/resp-0001234",
}


def run(patients: int, repeat: int) -> None:
    """Seed an index with ``patients`` x 2 cases and time each query."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        index = Index(root / "index.sqlite3")
        db = sqlite3.connect(root / "index.sqlite3")
        seed_cases(db, patients)
        db.close()
        settings = load_settings(storage={"data_dir": root}, web={"token": TOKEN})
        client = TestClient(create_app(WebContext(index, settings, listener_ok=lambda: True)))
        headers = {"Authorization": f"Bearer {TOKEN}"}
        last = -(-2 * patients // settings.web.page_size)
        print(f"\n{2 * patients} cases ({patients} patients), median of {repeat} requests")
        for name, template in QUERIES.items():
            url = template.format(last=last)
            assert client.get(url, headers=headers).status_code == 200, url
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                client.get(url, headers=headers)
                times.append(time.perf_counter() - start)
            print(f"  {name:<22} {1000 * statistics.median(times):7.1f} ms")
        index.close()


def main() -> None:
    """Parse the arguments and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, nargs="+", default=[5000, 25000])
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    print(f"{platform.node()} {platform.processor() or platform.machine()}, "
          f"{time.strftime('%Y-%m-%d')}")  # fmt: skip
    for patients in args.patients:
        run(patients, args.repeat)


if __name__ == "__main__":
    main()
