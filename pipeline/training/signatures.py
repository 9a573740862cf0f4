"""Training on a hospital's labelled cohort: ``larc train signatures``.

Reads the cohort (:mod:`pipeline.training.cohort`), prepares every patient once with
:func:`pipeline.case.prepare_case` (the function scoring uses too), holds out a stratified test
split if asked, and trains each requested signature network with k-fold out-of-fold
predictions plus a final network. Writes, under the output folder:

- ``signatures.csv``: per patient the split (train/test), fold, label and each signature
  (out-of-fold for training patients, the final network's for test patients);
- ``weights/<signature>.pt``: the final networks (state dicts, loadable with weights_only);
- ``checkpoints/<signature>/fold<k>.pt``: each fold's best network;
- ``training.json``: configurations, per-signature AUCs, best epochs, loss curves, skipped
  patients with reasons, timings and the machine.
"""

from __future__ import annotations

import csv
import json
import logging
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import train_test_split

from dicom_io.roles import DEFAULT_RULES, RoleRule
from pipeline.case import CaseInputs
from pipeline.config import PreprocessConfig
from pipeline.kinds import SIGNATURES
from pipeline.networks import device, predict_probability, save_weights, to_tensor
from pipeline.training.cohort import prepare_cohort
from pipeline.training.networks import Progress, SignatureTraining, cross_validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SignatureRun:
    """What to train and where to write it."""

    out_dir: Path
    signatures: tuple[str, ...] = SIGNATURES
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    training: SignatureTraining = field(default_factory=SignatureTraining)
    test_fraction: float = 0.0
    workers: int | None = None
    rules: tuple[RoleRule, ...] = DEFAULT_RULES


def _auc(labels: Sequence[int], scores: Sequence[float]) -> float | None:
    return float(roc_auc_score(labels, scores)) if len(set(labels)) == 2 else None


def _split(
    patients: list[str], labels: Mapping[str, int], fraction: float, seed: int
) -> tuple[list[str], list[str]]:
    if fraction <= 0:
        return patients, []
    train, test = train_test_split(
        patients,
        test_size=fraction,
        stratify=[labels[p] for p in patients],
        random_state=seed,
    )
    return sorted(train), sorted(test)


def train_signatures(
    cases: Mapping[str, Mapping[str, Sequence[Path]]],
    labels: Mapping[str, int],
    run: SignatureRun,
    progress: Progress | None = None,
    prepared: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """Prepare, split, train every signature; write the outputs; return the summary."""
    started = time.perf_counter()
    run.out_dir.mkdir(parents=True, exist_ok=True)
    unlabelled = sorted(set(cases) - set(labels))
    labelled = {p: f for p, f in cases.items() if p in labels}
    inputs, failures = prepare_cohort(
        labelled,
        run.preprocess,
        run.signatures,
        cache=run.out_dir / "prepared",
        workers=run.workers,
        progress=prepared,
        rules=run.rules,
    )
    prepared_s = time.perf_counter() - started
    patients = sorted(inputs)
    train, test = _split(patients, labels, run.test_fraction, run.training.seed)
    rows: dict[str, dict[str, Any]] = {
        p: {"patient_id": p, "split": "train", "fold": "", "good_response": labels[p]}
        for p in train
    }
    rows |= {
        p: {"patient_id": p, "split": "test", "fold": "", "good_response": labels[p]} for p in test
    }
    results: dict[str, Any] = {}
    for name in run.signatures:
        results[name] = _train_one(name, inputs, train, test, labels, run, rows, progress)
    fields = ["patient_id", "split", "fold", "good_response", *run.signatures]
    with (run.out_dir / "signatures.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, restval="")
        writer.writeheader()
        writer.writerows(rows[p] for p in patients)
    summary = {
        "preprocess": run.preprocess.model_dump(mode="json"),
        "preprocess_fingerprint": run.preprocess.fingerprint,
        "training": run.training.model_dump(mode="json"),
        "patients": {"prepared": len(patients), "train": len(train), "test": len(test)},
        "skipped": {
            **failures,
            **dict.fromkeys(unlabelled, "no outcome in the labels file"),
        },
        "signatures": results,
        "seconds": {"prepare": round(prepared_s, 1)},
        "machine": {
            "device": str(device()),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "platform": platform.platform(),
        },
    }
    summary["seconds"] = {
        "prepare": round(prepared_s, 1),
        "total": round(time.perf_counter() - started, 1),
    }
    (run.out_dir / "training.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _train_one(
    name: str,
    inputs: Mapping[str, CaseInputs],
    train: list[str],
    test: list[str],
    labels: Mapping[str, int],
    run: SignatureRun,
    rows: dict[str, dict[str, Any]],
    progress: Progress | None,
) -> dict[str, Any]:
    started = time.perf_counter()
    have = [p for p in train if name in inputs[p].slices]
    missing = {
        p: "; ".join(inputs[p].problems) for p in train + test if name not in inputs[p].slices
    }
    y = np.asarray([labels[p] for p in have], dtype=np.int64)
    if len(have) < 2 * run.training.folds or len(set(y.tolist())) < 2:
        log.warning("%s: %d usable training patients, not enough to train", name, len(have))
        return {
            "trained": False,
            "reason": f"{len(have)} usable training patients",
            **{"missing": missing},
        }
    x = to_tensor(np.stack([inputs[p].slices[name].array for p in have]))
    result = cross_validate(
        x,
        y,
        run.training,
        name=name,
        checkpoints=run.out_dir / "checkpoints" / name,
        progress=progress,
    )
    final = result.final
    if final is None:  # asked for (the default): never
        raise ValueError(f"{name}: no final network")
    (run.out_dir / "weights").mkdir(exist_ok=True)
    save_weights(final.model, run.out_dir / "weights" / f"{name}.pt")
    for p, value, fold in zip(have, result.out_of_fold, result.fold, strict=True):
        rows[p][name] = round(float(value), 6)
        rows[p]["fold"] = int(fold) + 1
    tested = [p for p in test if name in inputs[p].slices]
    test_auc = None
    if tested:
        x_test = to_tensor(np.stack([inputs[p].slices[name].array for p in tested]))
        scores = predict_probability(final.model, x_test)
        for p, value in zip(tested, scores, strict=True):
            rows[p][name] = round(float(value), 6)
        test_auc = _auc([labels[p] for p in tested], scores.tolist())
    oof_auc = _auc(y.tolist(), result.out_of_fold.tolist())
    log.info(
        "%s: out-of-fold AUC %s, test AUC %s (%d train, %d test patients)",
        name,
        f"{oof_auc:.3f}" if oof_auc is not None else "n/a",
        f"{test_auc:.3f}" if test_auc is not None else "n/a",
        len(have),
        len(tested),
    )
    return {
        "trained": True,
        "train_patients": len(have),
        "test_patients": len(tested),
        "out_of_fold_auc": oof_auc,
        "test_auc": test_auc,
        "best_epochs": [f.best_epoch for f in result.folds],
        "final_epochs": final.best_epoch,
        "final_history": final.history,
        "missing": missing,
        "seconds": round(time.perf_counter() - started, 1),
    }
