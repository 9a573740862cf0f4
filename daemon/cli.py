"""The ``larc`` command."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from daemon import __version__
from daemon.logs import configure_logging
from daemon.settings import ConfigError, Settings, load_settings

logger = logging.getLogger(__name__)

app = typer.Typer(
    name="larc",
    help=(
        "larc: AI scoring of rectal-cancer MRI next to a PACS (research use only - not for "
        "diagnostic decisions).\n\nlarc serve receives studies over DICOM, stores and indexes "
        "them, pairs each patient's baseline and restaging studies, scores every ready case "
        "(worker threads, or larc worker processes on a Redis broker) and sends the results - "
        "a TID 1500 SR and Grad-CAM Secondary Captures - back to the PACS (or an outbox "
        "folder). Also: status, config, retry-exports, worker, health checks (echo, "
        "ping-workers), the synthetic cohort generator (synth), the demo, the harness (a real "
        "Orthanc, Redis and workers on this machine), and training and evaluation of the "
        "models (train, evaluate). With web.token set, larc serve also serves the web worklist, "
        "its JSON API, /healthz and /metrics on web.port."
    ),
    no_args_is_help=True,
    add_completion=False,
)


config_app = typer.Typer(help="Check and show the configuration.", no_args_is_help=True)
app.add_typer(config_app, name="config")

ConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--config",
        envvar="LARC_CONFIG",
        help="YAML configuration file (environment LARC_* variables override it).",
    ),
]


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **{k: v for k, v in overrides.items() if v})
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc


def _version(value: bool) -> None:
    if value:
        typer.echo(f"larc {__version__}")
        raise typer.Exit


@app.callback()
def main(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
    log_level: Annotated[
        str | None,
        typer.Option("--log-level", help="DEBUG, INFO, WARNING or ERROR [default: log.level]."),
    ] = None,
    log_json: Annotated[
        bool, typer.Option("--log-json", help="Log JSON lines instead of plain text.")
    ] = False,
) -> None:
    """Common options."""
    if log_level is not None and log_level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise typer.BadParameter(f"unknown log level {log_level!r}", param_hint="--log-level")
    # what the global options asked for; commands that load settings fill the gaps from `log.*`
    ctx.obj = {"log_level": log_level, "log_json": log_json}
    configure_logging(log_level or "INFO", log_json)


def _print_table(rows: list[dict[str, str]]) -> None:
    if not rows:
        return
    widths = {k: max(len(k), *(len(r[k]) for r in rows)) for k in rows[0]}
    typer.echo("  ".join(k.ljust(widths[k]) for k in rows[0]))
    for row in rows:
        typer.echo("  ".join(row[k].ljust(widths[k]) for k in row))


def _synth(
    out: Path,
    patients: int,
    seed: int,
    matrix: int,
    slices: int,
    missing_fraction: float,
    seg_fraction: float,
    workers: int,
    series: str = "all",
) -> None:
    from dicom_io.synthetic.cohort import CohortSpec, generate_cohort, summary_rows
    from dicom_io.synthetic.vendors import Role

    chosen = (
        tuple(Role)
        if series.strip() == "all"
        else tuple(s.strip().lower() for s in series.split(",") if s.strip())
    )
    try:
        spec = CohortSpec(
            patients=patients,
            seed=seed,
            matrix=matrix,
            slices=slices,
            missing_fraction=missing_fraction,
            seg_fraction=seg_fraction,
            series=chosen,
        )
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from exc
    started = time.perf_counter()
    try:
        result = generate_cohort(spec, out, workers=workers or None)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    elapsed = time.perf_counter() - started
    _print_table(summary_rows(result))
    files = sum(s.instance_count for p in result.patients for s in p.studies.values())
    size = sum(f.stat().st_size for f in out.rglob("*.dcm"))
    typer.echo(
        f"\n{len(result.patients)} patients, {files} DICOM files, {size / 1e6:.1f} MB in {out} "
        f"({elapsed:.1f} s, {elapsed / len(result.patients):.2f} s and "
        f"{size / 1e6 / len(result.patients):.1f} MB per patient)"
    )
    typer.echo(f"labels: {result.labels_path}")


@app.command()
def synth(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write the cohort to (new or empty).")
    ],
    patients: Annotated[int, typer.Option(help="Number of patients.")] = 20,
    seed: Annotated[int, typer.Option(help="Seed: the same options give identical files.")] = 0,
    matrix: Annotated[int, typer.Option(help="T2W/CE-T1 matrix (64 for tests, 256 real).")] = 64,
    slices: Annotated[int, typer.Option(help="Slices of the oblique-axial T2W series.")] = 24,
    missing_fraction: Annotated[
        float,
        typer.Option(help="Fraction of patients missing a study, and of studies missing ADC."),
    ] = 0.15,
    seg_fraction: Annotated[
        float, typer.Option(help="Fraction of studies that also get a DICOM SEG on DWI high-b.")
    ] = 0.4,
    workers: Annotated[
        int, typer.Option(help="Processes to generate patients in (0: one per CPU).")
    ] = 0,
    series: Annotated[
        str,
        typer.Option(
            help="Series each study gets, comma-separated, or 'all': localizer, t2w_sag, t2w, "
            "t2w_cor, dwi, adc, ce_t1, rtstruct, seg (t2w and rtstruct always; e.g. "
            "'t2w,dwi,rtstruct' for a fast training cohort)."
        ),
    ] = "all",
) -> None:
    """Write a synthetic rectal-MRI cohort: DICOM studies, labels.csv and manifest.json.

    Each patient gets a baseline and a restaging study 8-14 weeks later (some only one), each
    with localizer, sagittal/coronal/oblique-axial T2W, DWI (b0 + 800/1000, vendor b-value
    tags), ADC (most studies), CE-T1, an RTSTRUCT of the tumour and, for some, a SEG on DWI.
    """
    _synth(out, patients, seed, matrix, slices, missing_fraction, seg_fraction, workers, series)


@app.command()
def serve(
    ctx: typer.Context,
    config: ConfigOption = None,
    port: Annotated[int | None, typer.Option(help="DICOM port (scp.port).")] = None,
    ae_title: Annotated[str | None, typer.Option(help="Our AE title (scp.ae_title).")] = None,
    bind: Annotated[
        str | None, typer.Option(help="Address to listen on (scp.bind_address).")
    ] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Storage root (storage.data_dir).")] = None,
    stable_age_s: Annotated[
        float | None, typer.Option(help="Quiet seconds before a study is stable.")
    ] = None,
    bundle: Annotated[
        Path | None, typer.Option(help="Model bundle folder (models.bundle_dir).")
    ] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Port of the web worklist (web.port).")
    ] = None,
) -> None:
    """Run the daemon: DICOM listener, durable store and index, study assembly, scoring, export.

    Every instance is fsynced and indexed before the sender hears success. Ready cases are
    scored in worker threads (no broker.url) or by larc worker processes (broker.url set);
    results go to export.destinations, or to <data_dir>/outbox/. With web.token (or
    web.trusted_user_header) set, the web worklist, its JSON API (/api, OpenAPI at
    /api/openapi.json), /healthz and /metrics listen on web.bind_address:web.port. Stops
    cleanly on SIGTERM or Ctrl-C. Refuses to start when reachable from the network with no
    allow-list.
    """
    from daemon.service import Daemon

    settings = _settings(
        config,
        scp={
            k: v
            for k, v in {"port": port, "ae_title": ae_title, "bind_address": bind}.items()
            if v is not None
        },
        storage={"data_dir": data_dir} if data_dir else None,
        assembly={"stable_age_s": stable_age_s} if stable_age_s else None,
        models={"bundle_dir": bundle} if bundle else None,
        web={"port": web_port} if web_port else None,
    )
    asked = ctx.obj or {}
    configure_logging(
        asked.get("log_level") or settings.log.level,
        bool(asked.get("log_json")) or settings.log.json_lines,
    )
    try:
        daemon = Daemon(settings)
        daemon.start()
    except (ConfigError, ValueError, OSError, RuntimeError) as exc:
        typer.echo(f"error: cannot start: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(
        f"larc listening as {settings.scp.ae_title} on {settings.scp.bind_address}:"
        f"{daemon.listener.port}, storing under {settings.storage.data_dir}",
        err=True,
    )
    daemon.wait()


@config_app.command("check")
def config_check(config: ConfigOption = None) -> None:
    """Validate the configuration (file + environment) and print the result as YAML."""
    import yaml

    settings = _settings(config)
    try:
        settings.check_secure()
    except ConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from exc
    typer.echo(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False).rstrip())
    typer.echo("configuration OK", err=True)


@config_app.command("reference")
def config_reference() -> None:
    """Print the configuration reference (Markdown): every setting, default, variable, meaning."""
    from daemon.settings import reference_markdown

    typer.echo(reference_markdown().rstrip())


def _print_studies(index: Any, patient_id: str) -> None:
    for study in index.query(
        "SELECT s.*, (SELECT COUNT(*) FROM instances i JOIN series r USING (series_uid) "
        "WHERE r.study_uid = s.study_uid) AS n FROM studies s WHERE patient_id = ? "
        "ORDER BY study_date",
        (patient_id,),
    ):
        state = "stable" if study["stable_at"] else "receiving"
        timepoint = study["timepoint"] or "-"
        typer.echo(
            f"  study {study['study_date']} {study['description']!r}: {study['n']} instances, "
            f"{state}, timepoint {timepoint}"
            + (f" ({study['timepoint_reason']})" if study["timepoint_reason"] else "")
        )
        for series in index.series_of_study(study["study_uid"]):
            role = series["role"] or "(not yet classified)"
            why = series["role_reason"] or series["ignored_reason"] or ""
            typer.echo(
                f"    series {series['series_number']} {series['modality']} "
                f"{series['description']!r}: {series['n']} instances -> {role}"
                + (f" ({why})" if why else "")
            )


def score_summary(kind: str, scores: dict[str, Any]) -> str:
    """One line of a case's main scores."""
    if kind == "response":
        parts = [
            f"P(good response) {name} {scores[f'response_{name}']['p_good_response']:.2f}"
            for name in ("FDL", "CRD", "CR")
            if scores.get(f"response_{name}")
        ]
    else:
        dm = scores.get("distant_metastasis") or {}
        recurrence = scores.get("recurrence") or {}
        parts = [f"DM risk {dm['risk_group']} (DLRS {dm['dlrs']:.2f})"] if dm else []
        parts += [f"3y DMFS {dm['dmfs_3y']:.2f}"] if dm else []
        parts += [f"subtype {recurrence['subtype']}"] if recurrence else []
    return ", ".join(parts) or "no score: " + "; ".join(
        f"{k}: {v}" for k, v in (scores.get("not_scored") or {}).items()
    )


def _print_result(index: Any, case: Any) -> None:
    import json

    if not case["work_key"]:
        return
    rows = index.query("SELECT * FROM results WHERE work_key = ?", (case["work_key"],))
    if not rows:
        return
    result = rows[0]
    scores = json.loads(result["scores"])
    typer.echo(f"    scores ({scores.get('model')}): {score_summary(case['kind'], scores)}")
    files = result["files"].split("\n")
    typer.echo(f"    results: SR {result['sr_sop_uid']} + {len(files) - 1} Secondary Capture(s)")
    for export in index.query("SELECT * FROM exports WHERE work_key = ?", (case["work_key"],)):
        error = f" ({export['last_error']})" if export["last_error"] else ""
        typer.echo(
            f"    export to {export['destination']}: {export['state']}, "
            f"{export['attempts']} tries{error}"
        )


def open_index(settings: Settings) -> Any:
    """The index under ``storage.data_dir``; exits with the reason when there is none."""
    from daemon.index import Index
    from daemon.service import INDEX_FILE

    path = settings.storage.data_dir / INDEX_FILE
    if not path.exists():
        typer.echo(f"error: no index at {path}: has larc serve run with this data_dir?", err=True)
        raise typer.Exit(code=2)
    return Index(path)


@app.command()
def status(config: ConfigOption = None) -> None:
    """List patients, studies (timepoints), series (roles and why), cases, recent rejections."""
    settings = _settings(config)
    index = open_index(settings)
    try:
        for patient in index.query("SELECT * FROM patients ORDER BY patient_id"):
            typer.echo(f"patient {patient['patient_id']}")
            _print_studies(index, patient["patient_id"])
            for case in index.query(
                "SELECT * FROM cases WHERE patient_id = ? ORDER BY kind", (patient["patient_id"],)
            ):
                typer.echo(
                    f"  case {case['case_id']} {case['kind']} v{case['version']}: "
                    f"{case['state']} - {case['reason']}"
                )
                _print_result(index, case)
        rejections = index.query("SELECT * FROM rejections ORDER BY id DESC LIMIT 20")
        if rejections:
            typer.echo("recent rejections:")
            for row in rejections:
                typer.echo(f"    from {row['calling_ae']} 0x{row['status']:04X}: {row['reason']}")
    finally:
        index.close()


def _register_subcommands() -> None:
    from daemon.demo import demo
    from daemon.harness_cli import harness
    from daemon.health_cli import echo, ping_workers
    from daemon.models_cli import evaluate, train_app
    from daemon.workers_cli import retry_exports, worker

    app.command("demo")(demo)
    app.command("harness")(harness)
    app.command("echo")(echo)
    app.command("ping-workers")(ping_workers)
    app.add_typer(train_app, name="train")
    app.command("evaluate")(evaluate)
    app.command("worker")(worker)
    app.command("retry-exports")(retry_exports)


_register_subcommands()
