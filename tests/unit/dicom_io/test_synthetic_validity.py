"""Every synthetic object passes dicom3tools' IOD checker (dciodvfy) with no errors."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from dicom_io.synthetic.cohort import CohortResult
from tests.conftest import require_tool


@pytest.mark.slow
def test_dciodvfy_finds_no_errors_in_any_file(cohort: CohortResult) -> None:
    dciodvfy = require_tool("dciodvfy")
    files = sorted(cohort.out_dir.rglob("*.dcm"))

    def check(path: Path) -> list[str]:
        run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        return [
            f"{path.name}: {line}" for line in run.stderr.splitlines() if line.startswith("Error")
        ]

    with ThreadPoolExecutor(max_workers=4) as pool:
        errors = [line for lines in pool.map(check, files) for line in lines]
    assert len(files) > 500
    assert errors == []
