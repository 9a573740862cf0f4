"""``larc demo``: the main job on its embedded default, on synthetic data, in a few minutes."""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Annotated

import typer

from daemon.cases import FINISHED, CaseState
from daemon.cli.common import demo_bundle, print_table, score_summary, write_synthetic_cohort
from daemon.index import AutoMaskState, Index
from daemon.logs import configure_logging
from daemon.settings import load_settings
from pipeline.training.demo import DEMO_MATRIX, DEMO_SLICES

DEMO_BUNDLE_NAME = "larc-demo-synthetic"


def demo(
    ctx: typer.Context,
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's files.")] = Path(
        "larc-demo"
    ),
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 6,
    without_masks: Annotated[
        int,
        typer.Option(
            help="How many of them (the last) are sent without drawn tumour masks: larc "
            "outlines their tumours itself (the bundle's segmenter)."
        ),
    ] = 2,
    bundle: Annotated[
        Path | None,
        typer.Option(help="Score with this model bundle instead of the demo bundle."),
    ] = None,
) -> None:
    """The main job on its embedded default (no broker, no PACS).

    Trains a small demo bundle on synthetic data on the first run (OUT/bundle, kept), generates
    a synthetic cohort, starts the daemon on a free loopback port with scoring in worker
    threads, sends the cohort in over DICOM, waits, and prints each patient's cases, scores
    and where the SR and heat-map Secondary Captures went (OUT/larc-data/outbox/). The last
    --without-masks patients are sent with no RTSTRUCT or SEG, as routine studies arrive: their
    tumours are outlined automatically (an AUTOMATIC DICOM SEG, sent with the results and
    marked unreviewed), or their cases are declined when the outline fails its quality check.
    The demo bundle is trained on synthetic data: its scores mean nothing clinically.
    """
    started = time.perf_counter()
    if not (ctx.obj or {}).get("log_level"):  # the tables are the output; logs only if asked
        configure_logging("WARNING", bool((ctx.obj or {}).get("log_json")))
    out.mkdir(parents=True, exist_ok=True)
    bundle = bundle or demo_bundle(out)
    cohort = out / "cohort"
    shutil.rmtree(cohort, ignore_errors=True)
    shutil.rmtree(out / "larc-data", ignore_errors=True)
    write_synthetic_cohort(cohort, patients, seed=0, matrix=DEMO_MATRIX, slices=DEMO_SLICES,
                           missing_fraction=0.15, seg_fraction=0.4, workers=0)  # fmt: skip
    maskless = _drop_masks(cohort, without_masks)
    if maskless:
        typer.echo(
            f"{', '.join(maskless)}: sent without drawn tumour masks (no RTSTRUCT, no SEG); "
            "larc outlines their tumours itself"
        )
    _demo_run(out, cohort, bundle)
    typer.echo(f"\ndemo finished in {time.perf_counter() - started:.0f} s")


def _drop_masks(cohort: Path, count: int) -> list[str]:
    """Delete the drawn masks (RTSTRUCT and SEG series) of the cohort's last ``count``
    patients; their patient IDs."""
    chosen = sorted(p for p in cohort.iterdir() if p.is_dir())[-count:] if count > 0 else []
    for patient in chosen:
        for series in patient.glob("*/*"):
            if series.is_dir() and series.name.endswith(("_rtstruct", "_seg")):
                shutil.rmtree(series)
    return [p.name for p in chosen]


def _settled(index: Index) -> bool:
    """Every case finished and no automatic outline still being made or not yet used."""
    states = index.case_states()
    if not states or not all(s in FINISHED for s in states):
        return False
    return all(
        m.state in (AutoMaskState.PASSED, AutoMaskState.FAILED) and m.announced
        for m in index.auto_masks()
    )


def _demo_run(out: Path, cohort: Path, bundle: Path) -> None:
    from daemon.harness.peers import free_port
    from daemon.service import Daemon
    from dicom_io.scu import send_files

    stable_age_s = 2.0
    settings = load_settings(
        None,
        scp={"port": free_port(), "bind_address": "127.0.0.1", "allowed_callers": []},
        storage={"data_dir": out / "larc-data"},
        assembly={"stable_age_s": stable_age_s},
        pacs={"ae_title": None, "host": None, "port": None},
        broker={"url": None},
        models={"bundle_dir": bundle},
        export={"destinations": []},
    )
    daemon = Daemon(settings)
    daemon.start()
    try:
        files = sorted(p for p in cohort.rglob("*.dcm"))
        sent_at = time.perf_counter()
        result = send_files("127.0.0.1", daemon.listener.port, settings.scp.ae_title, "DEMO", files)
        elapsed = time.perf_counter() - sent_at
        typer.echo(
            f"\nsent {result.sent} instances to larc over DICOM in {elapsed:.1f} s "
            f"({result.sent / elapsed:.0f}/s), {len(result.failed)} refused; scoring..."
        )
        time.sleep(stable_age_s)
        deadline = time.monotonic() + 240
        calm = 0  # passes in a row with nothing left to do (an outline just used is re-decided)
        while time.monotonic() < deadline and calm < 2:
            time.sleep(1.0)
            quiet = not daemon.index.has_unstable_study() and _settled(daemon.index)
            calm = calm + 1 if quiet else 0
        _print_results(daemon.index, out)
        _print_validation(bundle)
    finally:
        daemon.stop()


def _print_validation(bundle: Path) -> None:
    """What the demo bundle's validation backs, and so what larc sent (or not), with why."""
    import json

    from pipeline.validation import validation_lines

    manifest = json.loads((bundle / "manifest.json").read_text())
    typer.echo(
        "\nwhat the demo bundle's validation backs (only that is sent: scoring.require_validated"
        "; its held-out figures are weak where the CI's lower bound is near or under 0.5):"
    )
    for line in validation_lines(manifest):
        typer.echo(f"  {line}")


def _print_results(index: Index, out: Path) -> None:
    from pipeline.training.demo import DEMO_BUNDLE_NAME

    rows = []
    cases = sorted(index.cases(), key=lambda c: c.kind, reverse=True)  # response first
    cases.sort(key=lambda c: c.patient_id)
    automatic = {m.seg_series_uid for m in index.auto_masks(AutoMaskState.PASSED)}
    for case in cases:
        result = index.result(case.work_key) if case.work_key else None
        n_seg = sum(1 for key, uid in case.inputs.items() if key.endswith("_mask")
                    and uid in automatic)  # fmt: skip
        if result is not None:
            scores = score_summary(case.kind, result.scores)
            n_sc = len(result.files) - 1 - n_seg
            objects = f"SR + {n_sc} SC" + (f" + {n_seg} SEG" if n_seg else "")
            went = f"{objects} -> outbox" if case.state == CaseState.EXPORTED else case.state
        else:
            scores, went = f"{case.state}: {case.reason}", "-"
        if n_seg:
            went += "; tumour outline automatic, not reviewed"
        rows.append(
            {"patient": case.patient_id, "case": case.kind, "scores": scores, "results": went}
        )
    typer.echo("")
    print_table(rows)
    typer.echo(
        f"\nresults (one DICOM file per SOP instance): {out / 'larc-data' / 'outbox'}\n"
        f"model: {DEMO_BUNDLE_NAME}, trained on synthetic data - the scores mean nothing "
        "clinically. Research use only - not for diagnostic decisions."
    )
