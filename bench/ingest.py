"""Ingest benchmark: the same N MR instances (256 x 256) sent with dcmtk storescu in one
association to dcmtk storescp, Orthanc and `larc serve`, runs alternated; prints instances/s
(median of the runs) and the ratios. Not a test: run it by hand and record the figure.

    .venv/bin/python bench/ingest.py [--instances 1000] [--runs 3]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from daemon.harness.peers import (
    Orthanc,
    Storescp,
    free_port,
    stop_process,
    store_files,
    wait_for_port,
)
from dicom_io.synthetic.cohort import CohortSpec, generate_cohort

LARC = str(Path(sys.executable).parent / "larc")


def make_instances(folder: Path, count: int) -> Path:
    """``count`` MR instances of 256 x 256, copies of a synthetic T2W slice with new UIDs."""
    cohort = generate_cohort(
        CohortSpec(patients=1, matrix=256, slices=4, seg_fraction=0.0, missing_fraction=0.0),
        folder / "cohort",
        workers=1,
    )
    template = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    out = folder / "instances"
    out.mkdir()
    template.SeriesInstanceUID = generate_uid()
    for n in range(count):
        template.SOPInstanceUID = template.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        template.InstanceNumber = n + 1
        template.save_as(out / f"{n:05d}.dcm")
    return out


def timed_send(port: int, aet: str, source: Path) -> float:
    started = time.perf_counter()
    run = store_files(port, aet, source)
    elapsed = time.perf_counter() - started
    if run.returncode != 0:
        raise RuntimeError(f"storescu to {aet} failed: {run.stderr[-1000:]}")
    return elapsed


def run_storescp(work: Path, source: Path) -> float:
    server = Storescp.start(work)
    try:
        return timed_send(server.port, server.aet, source)
    finally:
        server.stop()


def run_orthanc(work: Path, source: Path) -> float:
    server = Orthanc.start(work)
    try:
        return timed_send(server.dicom_port, server.aet, source)
    finally:
        server.stop()


def run_larc(work: Path, source: Path) -> float:
    port = free_port()
    with (work.parent / f"{work.name}.log").open("wb") as log:
        proc = subprocess.Popen(
            [LARC, "serve", "--port", str(port), "--data-dir", str(work)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, timeout_s=60)
        return timed_send(port, "LARC", source)
    finally:
        stop_process(proc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    peers: dict[str, Callable[[Path, Path], float]] = {
        "dcmtk storescp": run_storescp,
        "Orthanc": run_orthanc,
        "larc serve": run_larc,
    }
    with tempfile.TemporaryDirectory(prefix="larc-bench-") as tmp:
        root = Path(tmp)
        source = make_instances(root, args.instances)
        times: dict[str, list[float]] = {name: [] for name in peers}
        for run in range(args.runs):
            for name, peer in peers.items():  # alternate the peers within each round
                times[name].append(peer(root / f"{name.split()[-1]}-{run}", source))
    rates = {name: args.instances / statistics.median(t) for name, t in times.items()}
    print(
        f"ingest: {args.instances} MR instances 256x256, one association, TCP_NODELAY, "
        f"{args.runs} runs each, {platform.node()} {time.strftime('%Y-%m-%d')}"
    )
    print(f"{'receiver':<16}{'median s':>10}{'inst/s':>10}   runs (s)")
    for name, t in times.items():
        print(
            f"{name:<16}{statistics.median(t):>10.2f}{rates[name]:>10.0f}   "
            + " ".join(f"{x:.2f}" for x in t)
        )
    print(f"larc / Orthanc   = {rates['larc serve'] / rates['Orthanc']:.2f}")
    print(f"larc / storescp  = {rates['larc serve'] / rates['dcmtk storescp']:.2f}")


if __name__ == "__main__":
    main()
