"""The files in deploy/ are what a hospital installs from: every example configuration must load,
every larc command line in them must parse, and the unit files must pass systemd-analyze.
(No Docker engine or cluster runs here: compose and Kubernetes files are checked as data, and
rendered with kubectl kustomize where kubectl is installed.)"""

from __future__ import annotations

import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.main import get_command

from daemon.cli import app
from daemon.settings import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[3] / "deploy"
LARC = Path(sys.executable).parent / "larc"


def parse_larc(args: list[str]) -> None:
    """Parse a larc command line exactly as the console command would (without running it)."""
    group: Any = get_command(app)  # typer's click Group
    ctx = group.context_class(group, info_name="larc")
    command = group.get_command(ctx, args[0])
    assert command is not None, f"no larc subcommand {args[0]!r}"
    command.make_context(args[0], list(args[1:]), parent=ctx)


def _env_file(path: Path) -> dict[str, str]:
    pairs = [line.split("=", 1) for line in path.read_text().splitlines()
             if line.strip() and not line.startswith("#")]  # fmt: skip
    return dict(pairs)


def _check_larc_env(env: dict[str, str]) -> None:
    """Every LARC_<SECTION>__<KEY> names a real setting."""
    for key in env:
        if not key.startswith("LARC_"):
            continue
        section, _, field = key.removeprefix("LARC_").lower().partition("__")
        assert section in Settings.model_fields, key
        model = Settings.model_fields[section].annotation
        assert field in model.model_fields, key  # type: ignore[union-attr]


def _volume(spec: str) -> tuple[str, str]:
    """(source, target) of a compose short-syntax volume (``${VAR:-default}`` sources too)."""
    spec = spec.removesuffix(":ro").removesuffix(":rw")
    source, _, target = spec.rpartition(":")
    return source, target


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose" / "docker-compose.yml").read_text())


def _k8s_documents() -> list[dict[str, Any]]:
    return [d for p in sorted((DEPLOY / "k8s").glob("*.yaml"))
            for d in yaml.safe_load_all(p.read_text()) if d]  # fmt: skip


@pytest.mark.parametrize(
    "path", ["config/larc.example.yaml", "compose/larc.yaml"], ids=lambda p: p.split("/")[0]
)
def test_shipped_example_configs_load(path: str) -> None:
    settings = load_settings(DEPLOY / path)
    assert settings.scp.bind_address == "0.0.0.0"  # noqa: S104
    assert settings.scp.allowed_callers  # listening beyond loopback needs an allow-list
    assert settings.models.bundle_dir is not None
    assert settings.export.destinations


def test_config_check_accepts_the_example_and_names_a_bad_key(tmp_path: Path) -> None:
    ok = subprocess.run([LARC, "config", "check", "--config", DEPLOY / "config/larc.example.yaml"],
                        capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    bad = tmp_path / "larc.yaml"
    bad.write_text(
        (DEPLOY / "config/larc.example.yaml").read_text().replace("port: 104", "prot: 104")
    )
    run = subprocess.run([LARC, "config", "check", "--config", bad],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode != 0
    assert "prot" in run.stderr + run.stdout


def test_compose_file_runs_orthanc_redis_daemon_and_both_workers() -> None:
    compose = _compose()
    services = compose["services"]
    assert {"orthanc", "redis", "larc", "worker-cpu", "worker-gpu"} <= set(services)
    for name, service in services.items():
        assert "healthcheck" in service, f"{name} has no healthcheck"
        check = service["healthcheck"]["test"]
        if check[:2] == ["CMD", "larc"]:
            parse_larc(check[2:])
        if name.startswith(("larc", "worker")):
            parse_larc(service["command"])
            mounted = {_volume(v)[1] for v in service["volumes"]}
            assert "/etc/larc/larc.yaml" in mounted
            assert "/models" in mounted
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia"
    assert "gpu" in gpu["capabilities"]
    assert "gpu" in services["worker-gpu"]["command"]
    assert services["worker-gpu"]["build"]["args"]["VARIANT"] == "cuda"
    assert "/var/lib/larc" in {_volume(v)[1] for v in services["larc"]["volumes"]}
    named = {_volume(v)[0] for s in services.values() for v in s.get("volumes", [])
             if not v.startswith((".", "$"))}  # fmt: skip
    assert named <= set(compose["volumes"])
    for service in services.values():  # bind mounts point at files that exist
        for volume in service.get("volumes", []):
            source = _volume(volume)[0]
            if source.startswith("./") or source.startswith("../"):
                assert (DEPLOY / "compose" / source).exists(), source


def test_compose_orthanc_forwards_to_the_larc_service() -> None:
    orthanc = _compose()["services"]["orthanc"]
    env = orthanc["environment"]
    ae, host, port = json.loads(env["ORTHANC__DICOM_MODALITIES"])["larc"]
    larc = load_settings(DEPLOY / "compose" / "larc.yaml")
    assert (ae, host, port) == (larc.scp.ae_title, "larc", larc.scp.port)
    assert larc.pacs.host == "orthanc"
    assert larc.pacs.ae_title == env["ORTHANC__DICOM_AET"]
    assert "ORTHANC" in {c.ae_title for c in larc.scp.allowed_callers}
    (lua,) = json.loads(env["ORTHANC__LUA_SCRIPTS"])
    assert any(v.endswith(f"forward-to-larc.lua:{lua}:ro") for v in orthanc["volumes"])


def test_dockerfile_builds_cpu_and_cuda_variants_and_copies_what_exists() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert "ARG VARIANT=cpu" in text
    assert "cuda)" in text
    root = DEPLOY.parent
    for line in text.splitlines():
        if line.startswith("COPY "):
            source = line.split()[1]
            assert (root / source).exists(), source
    cmd = next(line for line in text.splitlines() if line.startswith("CMD "))
    parse_larc(json.loads(cmd.removeprefix("CMD ")))


def test_systemd_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed on this machine")
    env = _env_file(DEPLOY / "systemd" / "larc.env")
    _check_larc_env(env)
    for unit in ("larc.service", "larc-worker@.service"):
        text = (DEPLOY / "systemd" / unit).read_text()
        exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
        args = shlex.split(exec_start.removeprefix("ExecStart="))
        concurrency = env["WORKER_CONCURRENCY"]
        args = [a.replace("%I", "cpu,gpu").replace("${WORKER_CONCURRENCY}", concurrency)
                for a in args]  # fmt: skip
        parse_larc(args[1:])
        # verify against this machine's larc (the unit names /opt/larc/.venv/bin/larc)
        (tmp_path / unit).write_text(text.replace("/opt/larc/.venv/bin/larc", str(LARC)))
    for unit in ("larc.service", "larc-worker@gpu.service"):
        run = subprocess.run([analyze, "verify", str(tmp_path / unit)],
                             capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
        assert run.returncode == 0, run.stderr
        assert "larc" not in run.stderr, run.stderr  # no warning about our units


def test_kubernetes_manifests_daemon_workers_redis_and_gpu_scheduling() -> None:
    docs = _k8s_documents()
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert {"larc-daemon", "larc-worker-cpu", "larc-worker-gpu", "larc-redis"} <= set(deployments)
    assert deployments["larc-daemon"]["spec"]["replicas"] == 1
    gpu = deployments["larc-worker-gpu"]["spec"]["template"]["spec"]
    assert gpu["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert gpu["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    for name, deployment in deployments.items():
        if name == "larc-redis":
            continue
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        parse_larc(container["args"])
        for probe in ("readinessProbe", "livenessProbe"):
            if probe in container:
                command = container[probe]["exec"]["command"]
                assert command[0] == "larc"
                parse_larc(command[1:])
    secret = next(d for d in docs if d["kind"] == "Secret")
    _check_larc_env(secret["stringData"])


def test_kubernetes_config_map_loads(tmp_path: Path) -> None:
    config_map = next(d for d in _k8s_documents() if d["kind"] == "ConfigMap")
    path = tmp_path / "larc.yaml"
    path.write_text(config_map["data"]["larc.yaml"])
    assert load_settings(path).models.bundle_dir == Path("/models/current")


def test_kustomize_renders_the_manifests() -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed on this machine")
    run = subprocess.run([kubectl, "kustomize", str(DEPLOY / "k8s")],
                         capture_output=True, text=True, timeout=60, check=False)  # fmt: skip
    assert run.returncode == 0, run.stderr
    rendered = [d for d in yaml.safe_load_all(run.stdout) if d]
    assert all(
        d["metadata"].get("namespace") == "larc" for d in rendered if d["kind"] != "Namespace"
    )
    images = {c["image"] for d in rendered if d["kind"] == "Deployment"
              for c in d["spec"]["template"]["spec"]["containers"]}  # fmt: skip
    assert "registry.example.org/larc:0.1.0-cuda" in images
