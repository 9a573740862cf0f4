"""Pipeline benchmark: one synthetic patient at realistic size (matrix 256, 24 T2W slices, all
sequences, both timepoints) outlined automatically, prepared and scored as a response case plus a
baseline case, with the time of each stage, the process CPU time and the peak memory. Not a test:
run it by hand and record the figure in the README.

    .venv/bin/python bench/pipeline.py [--matrix 256] [--slices 24] [--runs 3] [--json FILE]

Networks carry random weights (the arithmetic is the same as trained ones): six DenseNet121 on
256 x 256 slices (science A), two ResNet18 on 20 x 112 x 112 crop stacks (science B), one
Grad-CAM per network; the tumour segmenter (the default DynUNet, science C) on both T2W volumes
by sliding window, and the SEG of each outline written (highdicom; the drawn mask stands in for
the outline, since random weights outline nothing). Runs on the GPU when torch sees one.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Run as a script, this file's folder leads sys.path and its name would hide the pipeline package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813
import torch
from pydicom.uid import generate_uid

from dicom_io.masks import rtstruct_mask
from dicom_io.roles import SeriesRole
from dicom_io.seg import binary_segmentation
from dicom_io.selection import SelectedStudy, select_files
from dicom_io.series import by_position, read_series
from dicom_io.synthetic.cohort import CohortSpec, generate_patient
from pipeline.case import prepare_case
from pipeline.config import PreprocessConfig
from pipeline.gradcam import gradcam
from pipeline.kinds import SIGNATURES, STACK_SEQUENCES
from pipeline.networks import (
    GRADCAM_LAYERS,
    device,
    dm_network,
    predict_probability,
    response_network,
    to_tensor,
)
from pipeline.segmentation import GateLimits, SegmenterConfig, segment
from pipeline.timing import Stopwatch


def outline(selected: dict[str, SelectedStudy], clock: Stopwatch) -> None:
    """The automatic-segmentation stages of the daemon for each study's T2W: the segmenter
    (random weights), then the SEG written for an outline."""
    config = SegmenterConfig()
    torch.manual_seed(0)
    network = config.network()
    for study in selected.values():
        t2w = by_position([pydicom.dcmread(p) for p in study.images[SeriesRole.T2W_AX].paths])
        with clock.stage("segmentation (T2W)"):
            segment(network, read_series(t2w), config, GateLimits())
        drawn = next(m for m in study.masks if m.role == SeriesRole.RTSTRUCT)
        mask = rtstruct_mask(pydicom.dcmread(drawn.paths[0]), t2w)
        with clock.stage("SEG writing"):
            binary_segmentation(
                [pydicom.dcmread(p, stop_before_pixels=True) for p in
                 study.images[SeriesRole.T2W_AX].paths],
                sitk.GetArrayFromImage(mask).astype(bool), series_instance_uid=generate_uid(),
                series_number=9100, sop_instance_uid=generate_uid(), manufacturer="larc",
                model="bench", software_version="0", manual=False,
            )  # fmt: skip


def one_run(files: dict[str, list[Path]], config: PreprocessConfig) -> dict[str, float]:
    """Seconds per stage (wall), CPU seconds of the process, for one whole case."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    selected = {t: select_files(paths) for t, paths in files.items()}  # headers, roles
    clock = Stopwatch()
    outline(selected, clock)
    inputs = prepare_case(selected, config)
    inputs.require(slices=SIGNATURES, stacks=STACK_SEQUENCES)
    with clock.stage("load networks"):
        torch.manual_seed(0)
        response = {name: response_network("densenet121") for name in SIGNATURES}
        dm = {name: dm_network("resnet18") for name in STACK_SEQUENCES}
    with clock.stage("forward"):
        for name, model in response.items():
            predict_probability(model, to_tensor(inputs.slices[name].array[None]))
        for name, model in dm.items():
            predict_probability(model, inputs.stacks[name].array[None])
    with clock.stage("grad-cam"):
        for name, model in response.items():
            gradcam(
                model, to_tensor(inputs.slices[name].array[None])[0], GRADCAM_LAYERS["densenet121"]
            )
        for name, model in dm.items():
            gradcam(model, inputs.stacks[name].array, "backbone." + GRADCAM_LAYERS["resnet18"])
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    stages = {**inputs.seconds, **clock.seconds}
    stages["total (wall)"] = time.perf_counter() - wall0
    stages["total (CPU)"] = time.process_time() - cpu0
    return stages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--matrix", type=int, default=256)
    parser.add_argument("--slices", type=int, default=24)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    spec = CohortSpec(
        patients=1, seed=5, matrix=args.matrix, slices=args.slices, missing_fraction=0.0
    )
    with tempfile.TemporaryDirectory() as tmp:
        # generated in another process, so the peak memory below is the scoring's alone
        with ProcessPoolExecutor(max_workers=1) as pool:
            patient = pool.submit(generate_patient, spec, 0, Path(tmp)).result()
        files = {
            t: [f for s in study.series.values() for f in s.files]
            for t, study in patient.studies.items()
        }
        n_files = sum(len(v) for v in files.values())
        config = PreprocessConfig()
        one_run(files, config)  # warm-up: imports, allocator, disk cache
        runs = [one_run(files, config) for _ in range(args.runs)]
    stages = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    machine = {
        "device": str(device()),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "date": time.strftime("%Y-%m-%d"),
    }
    print(
        f"one response + baseline case: {n_files} DICOM files, matrix {args.matrix}, "
        f"{args.slices} T2W slices; median of {args.runs} runs on {machine['device']}"
        + (f" ({machine['gpu']})" if machine["gpu"] else "")
        + f", {machine['threads']} torch threads"
    )
    print("| stage | seconds |\n|---|---|")
    for name, seconds in stages.items():
        print(f"| {name} | {seconds:.2f} |")
    print(f"| peak memory (RSS) | {peak_mb:.0f} MB |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {"stages": stages, "peak_rss_mb": peak_mb, "machine": machine, "runs": runs},
                indent=2,
            )
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
