"""Model-quality benchmark: a synthetic cohort (300 patients, matrix 64, fixed seed), every model
trained on 70 % with `train_models`, scored on the held-out 30 % through the bundle, and compared
with the generator's oracle on the same patients. Not a test: run it by hand, record the table.

    .venv/bin/python bench/models.py [--patients 300] [--width 0.25] [--epochs 30] [--folds 3]
        [--segmentation-epochs 40]

Prints, for CR, FDL, CRD (AUC of good response) and DLRS (C-index of distant metastasis): the
test value, the oracle value and their ratio (target: FDL >= 0.9 x oracle, DLRS >= 0.9 x oracle),
with the settings used (chosen to fit 30 minutes on a 2-core CPU).

With a segmenter in the bundle (``--segmentation-epochs`` > 0; trained on the training patients
only), the held-out patients are scored a second time with no drawn mask at all: each T2W is
outlined by the bundle's segmenter (its quality gate applied, as the daemon does), the DWI and
ADC take that outline through physical space, and the table compares each model on the automatic
masks with the same model on the drawn masks of the same patients (target: >= 0.95 x).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# Run as a script, this file's folder leads sys.path and bench/pipeline.py would hide the package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import numpy as np
import pydicom
import SimpleITK as sitk  # noqa: N813
import torch
from pydicom.uid import generate_uid

from dicom_io.pairing import PairingPolicy
from dicom_io.roles import SeriesRole
from dicom_io.seg import binary_segmentation
from dicom_io.selection import select_files
from dicom_io.series import by_position
from dicom_io.synthetic.cohort import CohortSpec, generate_cohort
from pipeline.bundle import Bundle
from pipeline.case import image_and_mask
from pipeline.config import PreprocessConfig
from pipeline.segmentation import segment
from pipeline.stats import auc, harrell_c
from pipeline.training.bundle import ModelRun, train_models
from pipeline.training.cohort import scan_folder, timepoint_files
from pipeline.training.evaluate import score_cohort
from pipeline.training.networks import SignatureTraining
from pipeline.training.segmentation import SegmentationTraining

Cases = dict[str, dict[str, list[Path]]]


def outlined_automatically(bundle: Bundle, cases: Cases, out: Path) -> tuple[Cases, dict[str, str]]:
    """The patients' studies with every drawn mask taken out and the T2W outlined by the
    bundle's segmenter instead (as a SEG file next to the images); a patient one of whose
    outlines fails the gate is left out, with the reasons (the daemon declines such a case)."""
    assert bundle.segmenter is not None
    model, config, limits = bundle.segmenter
    done: Cases = {}
    declined: dict[str, str] = {}
    for patient, studies in sorted(cases.items()):
        files: dict[str, list[Path]] = {}
        for timepoint, paths in studies.items():
            selected = select_files(paths)
            t2w_files = selected.images[SeriesRole.T2W_AX].paths
            image, _ = image_and_mask(selected, SeriesRole.T2W_AX)
            dwi = image_and_mask(selected, SeriesRole.DWI)[0]
            found = segment(model, image, config, limits, dwi)
            if not found.passed:
                declined[patient] = f"{timepoint}: " + "; ".join(found.reasons)
                break
            masks = {p for m in selected.masks for p in m.paths}
            # MANUAL only so that the files' selection (which leaves machine-made masks out,
            # as the daemon leaves out another program's) reads it: the outline is the
            # segmenter's, and the daemon marks its own SEG automatic through its index
            headers = by_position([pydicom.dcmread(p, stop_before_pixels=True) for p in t2w_files])
            seg = binary_segmentation(
                headers, sitk.GetArrayFromImage(found.mask).astype(bool),
                series_instance_uid=generate_uid(), series_number=9100,
                sop_instance_uid=generate_uid(), manufacturer="larc", model="bench",
                software_version="0",
            )  # fmt: skip
            path = out / patient / f"{timepoint}-auto-seg.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            seg.save_as(path, enforce_file_format=True)
            files[timepoint] = [p for p in paths if p not in masks] + [path]
        else:
            done[patient] = files
    return done, declined


# (name, metric, score key, field, outcome): each output larc sends, compared with the
# generator's oracle on the same patients (the nomogram's risk is 1 - its 3-year DMFS)
OUTPUTS = (
    ("CR", "AUC", "response_CR", "p_good_response", "response"),
    ("FDL", "AUC", "response_FDL", "p_good_response", "response"),
    ("CRD", "AUC", "response_CRD", "p_good_response", "response"),
    ("DLRS", "C-index", "distant_metastasis", "dlrs", "dm"),
    ("nomogram", "C-index", "distant_metastasis", "nomogram_dmfs_3y", "dm"),
    ("RRS", "C-index", "recurrence", "rrs", "rfs"),
)


def against_oracle(
    scores: dict[str, dict[str, Any]], rows: dict[str, dict[str, str]], patients: list[str]
) -> list[tuple[str, str, int, float, float]]:
    """(output, metric, patients, value, oracle value on the same patients) for every output."""
    table = []
    for name, metric, key, field, outcome in OUTPUTS:
        have = [p for p in patients if field in (scores[p].get(key) or {})]
        if not have:
            continue
        values = [float(scores[p][key][field]) for p in have]
        if name == "nomogram":
            values = [1 - v for v in values]
        if outcome == "response":
            labels = np.array([int(rows[p]["good_response"]) for p in have])
            oracle = [float(rows[p]["oracle_p_good"]) for p in have]
            table.append((name, metric, len(have), auc(labels, values), auc(labels, oracle)))
            continue
        times = np.array([float(rows[p][f"{outcome}_time_months"]) for p in have])
        events = np.array([int(rows[p][f"{outcome}_event"]) for p in have])
        oracle = [float(rows[p][f"oracle_log_hazard_{outcome}"]) for p in have]
        table.append(
            (name, metric, len(have), harrell_c(times, events, values),
             harrell_c(times, events, oracle))
        )  # fmt: skip
    return table


def print_table(table: list[tuple[str, str, int, float, float]]) -> None:
    """The comparison with the oracle as a Markdown table."""
    print("| model | metric | patients | value | oracle | ratio |\n|---|---|---|---|---|---|")
    for name, metric, n, value, oracle in table:
        print(f"| {name} | {metric} | {n} | {value:.3f} | {oracle:.3f} | {value / oracle:.2f} |")


def labelled_cases(spec: CohortSpec, out: Path) -> tuple[dict[str, dict[str, str]], Cases]:
    """A generated cohort's label rows and each patient's baseline/restaging files."""
    cohort = generate_cohort(spec, out, workers=2)
    with cohort.labels_path.open() as handle:
        rows = {r["patient_id"]: r for r in csv.DictReader(handle)}
    policy = PairingPolicy("re-?stag", "baseline", 21, 200)
    cases = {p: timepoint_files(s, rows[p], policy) for p, s in scan_folder(cohort.out_dir).items()}
    return rows, cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--width", type=float, default=0.25)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--stack-size", type=int, default=48)
    parser.add_argument("--stack-depth", type=int, default=12)
    parser.add_argument("--segmentation-epochs", type=int, default=40, help="0: no segmenter")
    parser.add_argument("--dm-volume", action="store_true", help="DLRS with log tumour volume")
    parser.add_argument("--no-n4", action="store_true", help="skip N4 (faster, as the demo)")
    parser.add_argument(
        "--independent-seed",
        type=int,
        help="also score every patient of an independent cohort drawn with this seed",
    )
    parser.add_argument("--independent-patients", type=int, default=100)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec = CohortSpec(
            patients=args.patients, seed=args.seed, matrix=64, slices=12, missing_fraction=0.0
        )
        rows, cases = labelled_cases(spec, Path(tmp) / "cohort")
        generated = time.perf_counter() - started
        common = {"epochs": args.epochs, "folds": args.folds, "patience": 8, "seed": args.seed}
        run = ModelRun(
            out_dir=Path(tmp) / "bundle",
            preprocess=PreprocessConfig(
                slice_size=args.image_size,
                stack_size=args.stack_size,
                stack_depth=args.stack_depth,
                n4=not args.no_n4,
            ),
            response=SignatureTraining.model_validate({**common, "width": args.width}),
            dm=SignatureTraining.model_validate(
                {**common, "width": args.width, "backbone": "resnet18"}
            ),
            test_fraction=0.3,
            workers=2,
            cache=Path(tmp) / "prepared",
            segmentation=SegmentationTraining(epochs=args.segmentation_epochs, patch=64, seed=0)
            if args.segmentation_epochs
            else None,
            dm_covariates=("log_pre_volume_ml",) if args.dm_volume else (),
        )
        manifest = train_models(cases, rows, run)
        trained = time.perf_counter() - started - generated
        bundle = Bundle.load(run.out_dir)
        scores, _, _ = score_cohort(bundle, cases, rows, held_out_only=True, cache=run.cache)
        auto_scores: dict[str, dict[str, Any]] = {}
        declined: dict[str, str] = {}
        if bundle.segmenter is not None:
            held_out = {p: cases[p] for p in scores}
            auto_cases, declined = outlined_automatically(bundle, held_out, Path(tmp) / "auto")
            auto_scores, _, _ = score_cohort(bundle, auto_cases, rows, held_out_only=True)
        independent = None
        if args.independent_seed is not None:
            spec = CohortSpec(
                patients=args.independent_patients, seed=args.independent_seed, matrix=64,
                slices=12, missing_fraction=0.0, id_prefix="IND",
            )  # fmt: skip
            other_rows, other_cases = labelled_cases(spec, Path(tmp) / "independent")
            other_scores, _, _ = score_cohort(bundle, other_cases, other_rows)
            independent = (other_scores, other_rows, sorted(other_scores))
    test = sorted(scores)
    train_hashes = set(manifest["training_data"]["train_patients_sha256"])
    assert not any(hashlib.sha256(p.encode()).hexdigest()[:16] in train_hashes for p in test)
    table = against_oracle(scores, rows, test)
    independent_table: list[tuple[str, str, int, float, float]] = []
    if independent is not None:
        independent_table = against_oracle(*independent)
    auto_table = []
    for name, key, field in (("CR", "response_CR", "p_good_response"),
                             ("FDL", "response_FDL", "p_good_response"),
                             ("CRD", "response_CRD", "p_good_response"),
                             ("DLRS", "distant_metastasis", "dlrs")):  # fmt: skip
        both = [p for p in test if key in scores[p] and key in auto_scores.get(p, {})]
        if not both:
            continue
        drawn = [scores[p][key][field] for p in both]
        auto_ = [auto_scores[p][key][field] for p in both]
        if name == "DLRS":
            times = np.array([float(rows[p]["dm_time_months"]) for p in both])
            events = np.array([int(rows[p]["dm_event"]) for p in both])
            if not events.any():
                continue  # no event among them: no C-index
            pair = harrell_c(times, events, drawn), harrell_c(times, events, auto_)
        else:
            labels = np.array([int(rows[p]["good_response"]) for p in both])
            pair = auc(labels, drawn), auc(labels, auto_)
        auto_table.append((name, len(both), *pair))
    total = time.perf_counter() - started
    print(
        f"{args.patients} synthetic patients (seed {args.seed}, matrix 64, 12 slices), 70/30 "
        "split; "
        f"networks: DenseNet121 / ResNet18 at width {args.width}, {args.image_size}^2 slices, "
        f"{args.stack_depth} x {args.stack_size}^2 stacks, {args.folds} folds, <= {args.epochs} "
        f"epochs; {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    )
    print(f"generate {generated:.0f} s, train {trained:.0f} s, total {total:.0f} s")
    print_table(table)
    if independent_table:
        print(
            f"\nan independent cohort ({args.independent_patients} patients, seed "
            f"{args.independent_seed}), every patient scored by the same bundle"
        )
        print_table(independent_table)
    if auto_table:
        scored = len(test) - len(declined)
        print(
            "\nheld-out patients with no drawn mask, outlined by the bundle's segmenter: "
            f"{scored} scored, {len(declined)} declined by the gate"
        )
        print("| model | patients | drawn masks | automatic masks | ratio |\n|---|---|---|---|---|")
        for name, n, drawn_value, auto_value in auto_table:
            ratio = auto_value / drawn_value
            print(f"| {name} | {n} | {drawn_value:.3f} | {auto_value:.3f} | {ratio:.2f} |")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "table": table,
                    "independent": independent_table,
                    "automatic_masks": auto_table,
                    "declined": declined,
                    "seconds": total,
                    "args": vars(args),
                },
                default=str,
            )
        )


if __name__ == "__main__":
    main()
