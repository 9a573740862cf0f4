"""An installed larc carries every file it reads at run time: the harness's Orthanc
configuration and Lua script, the worklist's templates, the evaluation report's template."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from daemon.harness import ORTHANC_CONFIG

ROOT = Path(__file__).resolve().parents[3]


def test_the_wheel_holds_the_files_larc_reads_at_run_time(tmp_path: Path) -> None:
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("larc-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    config = ORTHANC_CONFIG.relative_to(ROOT).as_posix()
    lua = json.loads(ORTHANC_CONFIG.read_text())["LuaScripts"]
    assert config in names
    assert {f"daemon/harness/orthanc/{script}" for script in lua} <= names
    assert "pipeline/training/templates/report.html" in names
    assert {"daemon/web/templates/worklist.html", "daemon/web/templates/case.html"} <= names
    # the deploy folder users read is the same file, not a copy that can drift
    assert (ROOT / "deploy" / "orthanc" / "orthanc.json").resolve() == ORTHANC_CONFIG
