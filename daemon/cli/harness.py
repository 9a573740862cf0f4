"""``larc harness``: Orthanc + Redis + ``larc serve`` + ``larc worker``s on this machine."""

from __future__ import annotations

import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Annotated

import typer

from daemon.cli.common import demo_bundle, write_synthetic_cohort
from daemon.logs import configure_logging
from pipeline.training.demo import DEMO_MATRIX, DEMO_SLICES


def _viewer_dist(viewer: bool | None, ohif_dist: Path | None) -> Path | None:
    """The OHIF dist the harness serves: ``None`` with --no-viewer, or (by default) when
    setup fetched none; exits when --viewer was asked for and there is none."""
    from daemon.harness.viewer import OHIF_VERSION, default_dist

    if viewer is False:
        return None
    dist = ohif_dist or default_dist()
    if viewer is None and dist is None:
        typer.echo(
            f"note: no OHIF viewer in .ohif/ (`bash deploy/setup.sh --dev` fetches "
            f"@ohif/app@{OHIF_VERSION}): the worklist links to Orthanc Explorer",
            err=True,
        )
    elif dist is None or not (dist / "index.html").is_file():
        typer.echo(
            f"error: no OHIF viewer in {dist or '.ohif/'}: run `bash deploy/setup.sh --dev` "
            f"(it fetches @ohif/app@{OHIF_VERSION}), give --ohif-dist, or use --no-viewer",
            err=True,
        )
        raise typer.Exit(code=2)
    return dist


def harness(
    folder: Annotated[
        Path, typer.Option(help="Folder for every server's files and logs (emptied first).")
    ] = Path("larc-harness"),
    bundle: Annotated[
        Path | None,
        typer.Option(
            help="Model bundle to score with [default: the demo bundle, trained on synthetic "
            "data on the first run into FOLDER/bundle]."
        ),
    ] = None,
    workers: Annotated[
        int,
        typer.Option(
            min=0, max=16, help="larc worker processes on Redis (0: score in the daemon, no Redis)."
        ),
    ] = 1,
    patients: Annotated[
        int,
        typer.Option(
            min=0, help="Synthetic patients to push into Orthanc with storescu (0: none)."
        ),
    ] = 4,
    matrix: Annotated[
        int,
        typer.Option(
            help="Matrix of the synthetic T2W images (the demo bundle's training envelope "
            "holds 48: other matrices are declined unless scoring.out_of_range is warn)."
        ),
    ] = DEMO_MATRIX,
    cohort: Annotated[
        Path | None,
        typer.Option(
            help="Push this folder of DICOM files into Orthanc instead of synthetic ones."
        ),
    ] = None,
    orthanc_stable_age_s: Annotated[
        int, typer.Option(help="Orthanc's StableAge: quiet seconds before it forwards a study.")
    ] = 2,
    stable_age_s: Annotated[float, typer.Option(help="larc's assembly.stable_age_s.")] = 1.0,
    keep_running: Annotated[
        bool,
        typer.Option(
            "--keep-running/--exit-when-done",
            help="Keep everything running until Ctrl-C (default), or stop once every case is "
            "finished and print larc status.",
        ),
    ] = True,
    timeout_s: Annotated[
        float, typer.Option(help="With --exit-when-done: give up after this many seconds.")
    ] = 900,
    viewer: Annotated[
        bool | None,
        typer.Option(
            "--viewer/--no-viewer",
            help="Serve the OHIF viewer against Orthanc's DICOMweb (needs orthanc-dicomweb and "
            "the viewer that deploy/setup.sh --dev fetches into .ohif/); the worklist links "
            "each study to it. [default: when the viewer is there]",
            show_default=False,
        ),
    ] = None,
    ohif_dist: Annotated[
        Path | None,
        typer.Option(help="OHIF's built dist/ folder [default: .ohif/<version>/dist]."),
    ] = None,
) -> None:
    """Run larc as a hospital would, on free loopback ports of this machine.

    Starts a real Orthanc playing the PACS (deploy/orthanc configuration: its Lua script
    forwards every stable MR study with its RTSTRUCT/SEG to larc; larc is declared in it for
    C-MOVE of priors and as the results' destination), Redis, larc serve and WORKERS larc
    worker processes; pushes a synthetic cohort (or --cohort) into Orthanc with dcmtk storescu
    as a scanner would; prints where everything listens. Look at the results in the OHIF viewer
    (--viewer, the default: served against Orthanc's DICOMweb), in Orthanc Explorer (the
    printed REST URL) and with larc status --config FOLDER/larc.yaml. Every process is stopped
    by PID on Ctrl-C, SIGTERM or when done.
    """
    from daemon.harness import Harness, HarnessSpec

    dist = _viewer_dist(viewer, ohif_dist)

    configure_logging("WARNING", False)
    if folder.exists():
        for child in folder.iterdir():  # keep a trained demo bundle for the next run
            if child.name not in ("bundle", "bundle.prepared"):
                shutil.rmtree(child) if child.is_dir() else child.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    bundle = bundle or demo_bundle(folder)
    sources: list[Path] = []
    if cohort is not None:
        sources = [cohort]
    elif patients:
        generated = folder / "cohort"
        write_synthetic_cohort(generated, patients, seed=0, matrix=matrix, slices=DEMO_SLICES,
                               missing_fraction=0.15, seg_fraction=0.4, workers=0)  # fmt: skip
        sources = sorted(p for p in generated.iterdir() if p.is_dir())  # patient folders
    spec = HarnessSpec(
        folder=folder,
        bundle=bundle,
        workers=workers,
        orthanc_stable_age_s=orthanc_stable_age_s,
        stable_age_s=stable_age_s,
        viewer=dist,
    )
    stop = threading.Event()
    with Harness(spec) as running:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
        info = running.describe()
        typer.echo(
            f"Orthanc (PACS): REST {info['orthanc']['rest']}, DICOM {info['orthanc']['dicom']}"
        )
        typer.echo(f"larc serve: DICOM {info['larc']['dicom']}, config {info['larc']['config']}")
        typer.echo(f"worklist: {info['web']['worklist']} (token {info['web']['token']})")
        if info["viewer"]:
            typer.echo(f"OHIF viewer: {info['viewer']} (Orthanc's DICOMweb)")
        typer.echo(f"Redis: {info['redis'] or 'not started (embedded scoring)'}")
        typer.echo(f"workers: {', '.join(info['workers']) or 'none (embedded scoring)'}")
        typer.echo(f"logs: {folder}/*.log")
        if sources:
            started = time.perf_counter()
            running.send_to_pacs(*sources)
            typer.echo(f"pushed {', '.join(s.name for s in sources)} into Orthanc "
                       f"in {time.perf_counter() - started:.1f} s")  # fmt: skip
        if keep_running:
            typer.echo("running; Ctrl-C stops everything")
            stop.wait()
            return
        try:
            running.wait_settled(timeout_s=timeout_s)
        except (TimeoutError, RuntimeError) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(code=1) from exc
        typer.echo(running.status())
