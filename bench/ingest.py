"""Ingest benchmark: the same N MR instances (256 x 256) sent with dcmtk storescu to dcmtk
storescp, Orthanc and `larc serve`, runs alternated; prints instances/s (median of the runs),
the ratios and larc's peak memory (VmHWM of the serve process). With ``--senders K`` the
instances are split over K storescu processes sending at once (K associations). Not a test:
run it by hand and record the figure.

    .venv/bin/python bench/ingest.py [--instances 1000] [--runs 3] [--senders 1]
    .venv/bin/python bench/ingest.py --large-mb 300 --runs 3   # one multi-frame object
    .venv/bin/python bench/ingest.py --senders 4 --listener-processes 2
"""

from __future__ import annotations

import argparse
import cProfile
import platform
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# Run as a script, this file's folder leads sys.path and bench/pipeline.py would hide the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

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
from daemon.index import Index
from daemon.intake.ingest import Ingest
from dicom_io.scp import StoreRequest
from dicom_io.storage import InstanceStore
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


def make_large(folder: Path, megabytes: int) -> Path:
    """One Enhanced MR Image-class object of 512 x 512 16-bit frames (0.5 MiB each) adding up to
    ``megabytes`` MiB of pixel data, in a folder of its own."""
    cohort = generate_cohort(
        CohortSpec(patients=1, matrix=64, slices=4, seg_fraction=0.0, missing_fraction=0.0),
        folder / "cohort",
        workers=1,
    )
    ds = pydicom.dcmread(next(cohort.out_dir.rglob("*_t2w/*.dcm")))
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.4.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows = ds.Columns = 512
    ds.NumberOfFrames = frames = megabytes * 2
    ds.PixelData = bytes(range(256)) * (512 * 512 * 2 * frames // 256)
    out = folder / "large"
    out.mkdir()
    ds.save_as(out / "multiframe.dcm", enforce_file_format=True)
    return out


SENDERS = 1  # set from --senders: folders source/part0 .. part<K-1>, one association each
PEAK_RSS: list[int] = []  # larc serve's VmHWM (kB) per run


def split(source: Path, senders: int) -> None:
    """Hard-link the instances into ``senders`` folders ``part<k>`` (round robin)."""
    files = sorted(source.glob("*.dcm"))
    for k in range(senders):
        (source / f"part{k}").mkdir(exist_ok=True)
    for n, path in enumerate(files):
        (source / f"part{n % senders}" / path.name).hardlink_to(path)


def timed_send(port: int, aet: str, source: Path) -> float:
    folders = [source / f"part{k}" for k in range(SENDERS)] if SENDERS > 1 else [source]
    started = time.perf_counter()
    with ThreadPoolExecutor(len(folders)) as pool:
        runs = list(pool.map(lambda folder: store_files(port, aet, folder), folders))
    elapsed = time.perf_counter() - started
    for run in runs:
        if run.returncode != 0:
            raise RuntimeError(f"storescu to {aet} failed: {run.stderr[-1000:]}")
    return elapsed


def children(pid: int) -> list[int]:
    """Process ids whose parent is ``pid`` (larc's receiver processes)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError):
            continue
    return found


def peak_rss_kb(pid: int) -> int:
    """The process's peak resident set (VmHWM), in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


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


LISTENER_PROCESSES = 1  # set from --listener-processes (scp.listener_processes)


def run_larc(work: Path, source: Path) -> float:
    port = free_port()
    config = work.parent / f"{work.name}.yaml"
    config.write_text(f"scp:\n  listener_processes: {LISTENER_PROCESSES}\n")
    log_path = work.parent / f"{work.name}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [LARC, "serve", "--port", str(port), "--data-dir", str(work), "--config", str(config)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_for_port(port, proc, timeout_s=60)
        deadline = time.monotonic() + 60  # receiver processes start after the main listener
        while LISTENER_PROCESSES > 1 and "share port" not in log_path.read_text():
            if time.monotonic() > deadline:
                raise RuntimeError(f"larc's receiver processes did not start: {log_path}")
            time.sleep(0.1)
        elapsed = timed_send(port, "LARC", source)
        # the daemon's and its receiver processes' together
        PEAK_RSS.append(sum(peak_rss_kb(p) for p in [proc.pid, *children(proc.pid)]))
        return elapsed
    finally:
        stop_process(proc)


def profile_handler(work: Path, source: Path) -> None:
    """Where larc's own time goes per instance: the store handler (parse, checks, hash,
    durable write, index commit) called directly on each file's bytes in this process, under
    cProfile, with no network. The rest of the time per instance is pynetdicom's."""
    files = sorted(source.glob("*.dcm"))
    requests = []
    for path in files:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        requests.append(
            StoreRequest("BENCH", "127.0.0.1", str(ds.SOPClassUID), str(ds.SOPInstanceUID),
                         str(ds.file_meta.TransferSyntaxUID), path.read_bytes(), 0x0008)
        )  # fmt: skip
    work.mkdir(parents=True)
    ingest = Ingest(InstanceStore(work / "instances"), Index(work / "index.sqlite3"), "reject")
    profiler = cProfile.Profile()
    started = time.perf_counter()
    profiler.enable()
    statuses = [ingest(r) for r in requests]
    profiler.disable()
    elapsed = time.perf_counter() - started
    assert set(statuses) == {0}, set(statuses)
    print(
        f"store handler alone, {len(files)} instances: {elapsed:.2f} s, "
        f"{elapsed / len(files) * 1000:.2f} ms per instance ({len(files) / elapsed:.0f} inst/s)"
    )
    pstats.Stats(profiler).sort_stats("tottime").print_stats(12)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--senders", type=int, default=1, help="associations at once")
    parser.add_argument(
        "--profile", action="store_true", help="profile larc's store handler alone, then stop"
    )
    parser.add_argument(
        "--large-mb", type=int, default=0, help="send one multi-frame object of this many MiB"
    )
    parser.add_argument(
        "--listener-processes", type=int, default=1, help="larc's scp.listener_processes"
    )
    args = parser.parse_args()
    global SENDERS, LISTENER_PROCESSES  # noqa: PLW0603  (a script's settings)
    SENDERS = args.senders
    LISTENER_PROCESSES = args.listener_processes
    peers: dict[str, Callable[[Path, Path], float]] = {
        "dcmtk storescp": run_storescp,
        "Orthanc": run_orthanc,
        "larc serve": run_larc,
    }
    with tempfile.TemporaryDirectory(prefix="larc-bench-") as tmp:
        root = Path(tmp)
        if args.large_mb:
            source = make_large(root, args.large_mb)
            args.instances = 1
        else:
            source = make_instances(root, args.instances)
        if args.profile:
            profile_handler(root / "profile", source)
            return
        if args.senders > 1:
            split(source, args.senders)
        times: dict[str, list[float]] = {name: [] for name in peers}
        for run in range(args.runs):
            for name, peer in peers.items():  # alternate the peers within each round
                times[name].append(peer(root / f"{name.split()[-1]}-{run}", source))
    rates = {name: args.instances / statistics.median(t) for name, t in times.items()}
    what = (
        f"one {args.large_mb} MiB multi-frame MR object (512x512x{args.large_mb * 2})"
        if args.large_mb
        else f"{args.instances} MR instances 256x256"
    )
    print(
        f"ingest: {what}, {args.senders} association(s) at once, larc with "
        f"{args.listener_processes} listener process(es), TCP_NODELAY, "
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
    print(
        f"larc serve peak RSS: {max(PEAK_RSS) / 1024:.0f} MB (largest of the runs; "
        "with its child processes)"
    )


if __name__ == "__main__":
    main()
