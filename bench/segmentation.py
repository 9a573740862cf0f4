"""Segmentation benchmark: train the automatic tumour segmenter on a synthetic cohort, then, on
the held-out patients, compare the automatic T2W outline with the drawn one, and answer the
DWI question of issue 16 for the carried path: the T2W outline carried to the DWI b-high grid
through physical space, against the DWI's own drawn SEG (the drawn T2W mask carried the same
way is the ceiling of carrying). Also the segmentation time per study. Not a test: run it by
hand and record the figures in the README.

    .venv/bin/python bench/segmentation.py [--patients 120] [--matrix 64] [--slices 16]
        [--epochs 40] [--steps 40] [--seed 9] [--json FILE]

Runs on the GPU when torch sees one.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder leads sys.path and its name would hide the pipeline package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import SimpleITK as sitk  # noqa: N813
import torch

from dicom_io.masks import resample_mask
from dicom_io.roles import SeriesRole
from dicom_io.selection import select_files
from dicom_io.synthetic.cohort import CohortSpec, generate_cohort
from pipeline.case import image_and_mask
from pipeline.networks import device
from pipeline.segmentation import GateLimits, SegmenterConfig, dice, segment
from pipeline.training.cohort import patient_hash, scan_folder
from pipeline.training.segmentation import (
    WEIGHTS,
    SegmentationTraining,
    train_segmenter,
)


def _array(image: sitk.Image) -> object:
    return sitk.GetArrayFromImage(image) > 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=120)
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--slices", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--seed", type=int, default=9)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = CohortSpec(patients=args.patients, seed=args.seed, matrix=args.matrix,
                          slices=args.slices, missing_fraction=0.0, seg_fraction=1.0,
                          series=("t2w", "dwi", "rtstruct", "seg"))  # fmt: skip
        generate_cohort(spec, Path(tmp) / "cohort", workers=2)
        studies = scan_folder(Path(tmp) / "cohort")
        cases = {p: {uid: s.paths for uid, s in found.items()} for p, found in studies.items()}
        training = SegmentationTraining(
            epochs=args.epochs,
            steps_per_epoch=args.steps,
            patience=15,
            patch=min(96, args.matrix),
            seed=0,
        )
        started = time.perf_counter()
        record = train_segmenter(cases, Path(tmp) / "segmenter", training)
        trained_s = time.perf_counter() - started
        config = SegmenterConfig.from_json(record["network"])
        model = config.network()
        model.load_state_dict(torch.load(Path(tmp) / "segmenter" / WEIGHTS, weights_only=True))
        limits = GateLimits.from_json(record["gate"])
        by_hash = {patient_hash(p)[:12]: p for p in cases}
        rows = []
        for entry in record["held_out_volumes"]:
            hashed, uid = entry["volume"].split(" ", 1)
            selected = select_files(list(cases[by_hash[hashed]][uid]))
            t2w, drawn = image_and_mask(selected, SeriesRole.T2W_AX)
            dwi, dwi_drawn = image_and_mask(selected, SeriesRole.DWI)
            if drawn is None or dwi_drawn is None:
                continue
            clock = time.perf_counter()
            found = segment(model, t2w, config, limits, dwi)
            seconds = time.perf_counter() - clock
            truth = _array(dwi_drawn)
            rows.append({
                "t2w_auto_vs_drawn": dice(_array(found.mask), _array(drawn)),
                "dwi_carried_auto_vs_drawn": dice(_array(resample_mask(found.mask, dwi)), truth),
                "dwi_carried_drawn_vs_drawn": dice(_array(resample_mask(drawn, dwi)), truth),
                "gate_passed": found.passed,
                "seconds": seconds,
            })  # fmt: skip
    figures = {
        key: {"mean": round(statistics.mean(r[key] for r in rows), 3),
              "median": round(statistics.median(r[key] for r in rows), 3)}
        for key in ("t2w_auto_vs_drawn", "dwi_carried_auto_vs_drawn",
                    "dwi_carried_drawn_vs_drawn")
    }  # fmt: skip
    result = {
        "machine": f"{platform.machine()}, {torch.get_num_threads()} threads, {device()}",
        "date": time.strftime("%Y-%m-%d"),
        "cohort": vars(args) | {"json": None},
        "volumes": len(rows),
        "training_seconds": round(trained_s, 1),
        "held_out": record["held_out"],
        "dice": figures,
        "gate_pass_rate": round(sum(r["gate_passed"] for r in rows) / len(rows), 3),
        "segmentation_seconds_per_study_median": round(
            statistics.median(r["seconds"] for r in rows), 3
        ),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
