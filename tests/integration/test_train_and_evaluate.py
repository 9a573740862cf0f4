"""`larc train models` then `larc evaluate` end to end on a small synthetic cohort, with tiny
networks (this checks the plumbing, files and report; bench/models.py measures quality), and the
report opened in a real Chromium."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
import yaml

from daemon.settings import Settings
from dicom_io.selection import select_files
from pipeline.bundle import Bundle
from pipeline.case import prepare_case
from pipeline.config import PreprocessConfig
from pipeline.kinds import SIGNATURES, STACK_SEQUENCES
from pipeline.manifest import BundleError, write_manifest
from pipeline.networks import predict_probability, to_tensor
from pipeline.stats import auc_delong
from pipeline.training.cohort import load_cohort, patient_hash, prepare_cohort
from pipeline.training.evaluate import validated_copy
from pipeline.training.predictions import keyed_id
from pipeline.validation import Estimate, decide, present_outputs, validation_lines, withheld
from tests.conftest import LARC, TrainedBundle
from workers.results import unavailable_comments

pytestmark = pytest.mark.slow
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def _larc(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([LARC, *args], capture_output=True, text=True, timeout=600, check=False)


def test_train_models_then_evaluate_writes_a_bundle_and_a_report(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    cohort, bundle_dir, trained = trained_bundle.cohort, trained_bundle.folder, trained_bundle.run
    assert "bundle larc-rectal 9.9.9 written" in trained.stdout

    manifest = json.loads((bundle_dir / "manifest.json").read_text())
    assert manifest["schema_version"] == 1
    assert manifest["research_use_only"] is True
    assert manifest["training_data"]["patients"] == 48
    assert manifest["training_data"]["train"] + manifest["training_data"]["test"] == 48
    assert set(manifest["response"]["models"]) == {"FDL", "CR", "CRD"}
    assert manifest["response"]["cr_features"]  # at least one clinical-radiological feature
    assert manifest["metrics"]["patients"] == manifest["training_data"]["test"]
    assert "Research use only" in (bundle_dir / "model_card.md").read_text()
    # no patient id anywhere in the bundle
    text = " ".join(p.read_text(errors="ignore") for p in bundle_dir.rglob("*") if p.is_file())
    assert "SYN0001" not in text

    bundle = Bundle.load(bundle_dir, expected=PreprocessConfig(
        slice_size=32, stack_size=32, stack_depth=8, n4=False
    ))  # fmt: skip
    assert bundle.version == "larc-rectal 9.9.9"
    # the bundle carries the automatic segmenter, with its held-out figures and gate
    segmentation = manifest["segmentation"]
    assert segmentation["held_out"]["n"] > 0
    assert segmentation["weights"] in manifest["files"]  # hashed like every other file
    assert bundle.segmenter is not None
    assert bundle.segmenter[2].max_volume_ml > bundle.segmenter[2].min_volume_ml > 0
    card = (bundle_dir / "model_card.md").read_text()
    assert f"held-out Dice mean {segmentation['held_out']['dice_mean']:.3f}" in card
    assert "Training envelope" in card
    fdl = manifest["metrics"]["auc_FDL"]  # held out: discrimination and calibration
    assert 0.0 <= fdl["ece"] <= 1.0
    assert 0.0 <= fdl["brier"] <= 1.0
    assert f"calibration ECE {fdl['ece']:.3f}, Brier {fdl['brier']:.3f}" in card
    # the subgroups of the held-out patients where an output did clearly worse, or none
    weak = manifest["failure_modes"]["held_out"]
    assert "## Known failure modes" in card
    assert all(f"{sentence}." in card for sentence in weak) if weak else "None found" in card
    with pytest.raises(BundleError, match="other preprocessing"):
        Bundle.load(bundle_dir, expected=PreprocessConfig())
    _check_training_validation(manifest, trained.stdout, card)

    # evaluated from the outcomes as a site keeps them: an Excel export with its own column
    # names and words, read through a --columns mapping; patients hashed with the site's key
    sheet, columns = _site_spreadsheet(cohort.labels_path, tmp_path)
    key_file = tmp_path / "site.key"
    key_file.write_text("a-site-secret-of-some-length\n")
    report_dir = tmp_path / "report"
    validated_dir = tmp_path / "validated"
    evaluated = _larc(
        "evaluate", "--bundle", str(bundle_dir), "--cohort", str(cohort.out_dir),
        "--labels", str(sheet), "--columns", str(columns), "--hash-ids", "--hash-key-file",
        str(key_file), "--out", str(report_dir), "--held-out-only", "--validate",
        str(validated_dir), "--validated-version", "9.9.9+site",
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "FDL: AUC" in evaluated.stdout
    metrics = json.loads((report_dir / "metrics.json").read_text())
    # the same patients and outcomes as the training's own held-out figures: the mapping read
    # the site's spreadsheet as larc's CSV
    for model in ("FDL", "CR", "CRD"):
        assert metrics["response"]["models"][model]["auc"] == pytest.approx(
            manifest["metrics"][f"auc_{model}"]["value"]
        )
    _check_predictions(report_dir / "predictions.csv", metrics, manifest, cohort, key_file)
    _check_external_validation(bundle_dir, validated_dir, metrics, evaluated.stdout,
                               [p.patient_id for p in cohort.patients])  # fmt: skip
    assert metrics["patients_scored"] == manifest["training_data"]["test"]
    fdl = metrics["response"]["models"]["FDL"]
    assert 0.0 <= fdl["auc_ci95_delong"][0] <= fdl["auc"] <= fdl["auc_ci95_delong"][1] <= 1.0
    assert set(fdl["at_threshold"]) >= {"accuracy", "sensitivity", "specificity", "f1"}
    assert "brier" in fdl
    assert "ece" in fdl
    assert "FDL vs CR" in metrics["response"]["delong"]
    figures = {**metrics["response"]["figures"], **metrics["survival"]["figures"]}
    assert {"roc", "calibration", "decision", "nomogram"} <= set(figures)
    for name in figures.values():
        image = mpimg.imread(report_dir / name)
        assert image.shape[0] > 100
        assert image.std() > 0.01  # drawn, not blank

    html = (report_dir / "report.html").read_text()
    for name in figures.values():
        assert f'src="{name}"' in html
    shot = tmp_path / "report.png"
    opened = subprocess.run(
        [
            CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
            "--disable-background-networking", "--disable-component-update", "--no-first-run",
            "--window-size=1200,2000", f"--screenshot={shot}",
            (report_dir / "report.html").as_uri(),
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert shot.is_file(), opened.stderr[-2000:]
    pixels = mpimg.imread(shot)
    # the page shows text, tables and figures: many distinct colours, not a blank page
    assert len(np.unique(pixels.reshape(-1, pixels.shape[-1])[::7], axis=0)) > 200
    artefacts = Path("test-artifacts")
    if artefacts.is_dir():
        shutil.copy(shot, artefacts / "evaluation-report.png")


def _site_spreadsheet(labels: Path, tmp_path: Path) -> tuple[Path, Path]:
    """labels.csv as a site might export it: renamed columns, yes/no, male/female, cT3b/N1b
    stages, Responder/Non-responder, decimal commas, as .xlsx; and the mapping to read it."""
    table = pd.read_csv(labels, dtype=str, keep_default_na=False)
    names = {"patient_id": "Patient ID", "good_response": "Response (TRG 0-1)",
             "sex": "Gender", "pre_mrt": "cT", "pre_mrn": "cN", "cea_ng_ml": "CEA (ng/ml)",
             "dm_event": "Distant metastasis", "dm_time_months": "Months to DM or last FU",
             "ypn_stage": "ypN"}  # fmt: skip
    table["good_response"] = table["good_response"].map({"1": "Responder", "0": "Non-responder"})
    table["sex"] = table["sex"].map({"M": "male", "F": "female"})
    table["pre_mrt"] = "c" + table["pre_mrt"] + "b"
    table["pre_mrn"] = table["pre_mrn"] + "b"
    table["dm_event"] = table["dm_event"].map({"1": "Yes", "0": "No"})
    table["dm_time_months"] = table["dm_time_months"].str.replace(".", ",")
    sheet = tmp_path / "site-outcomes.xlsx"
    table.drop(columns=["trg"]).rename(columns=names).to_excel(sheet, index=False)
    columns = tmp_path / "columns.yaml"
    columns.write_text(yaml.safe_dump({
        "columns": names,
        "values": {"good_response": {"Responder": 1, "Non-responder": 0}},
    }))  # fmt: skip
    return sheet, columns


def _check_predictions(
    path: Path, metrics: dict[str, Any], manifest: dict[str, Any], cohort: Any, key_file: Path
) -> None:
    """One row per held-out patient and case kind, under the keyed hash of the id, with every
    score, the observed outcome and what the validation gate would not send."""
    table = pd.read_csv(path, dtype={"patient": str})
    assert len(table) == 2 * metrics["patients_scored"]
    key = key_file.read_bytes().strip()
    ids = {keyed_id(p.patient_id, key): p.patient_id for p in cohort.patients}
    assert set(table["patient"]) <= set(ids)  # keyed hashes of the cohort's ids, no id
    assert not table["patient"].str.startswith("SYN").any()
    assert set(table["split"]) == {"held-out"}
    response = table[table["kind"] == "response"]
    fdl = auc_delong(response["good_response"].astype(int), response["p_good_FDL"])
    assert fdl.auc == pytest.approx(metrics["response"]["models"]["FDL"]["auc"])
    baseline = table[table["kind"] == "baseline"]
    assert baseline["dlrs"].notna().all()
    assert set(baseline["dm_risk_group"]) <= {"high", "low"}
    assert baseline["dm_time_months"].notna().all()
    gate = withheld(manifest)
    expected = "; ".join(n for n in gate if not n.startswith("response_"))
    assert set(baseline["not_sent_by_default"].fillna("")) == {expected}


def _check_training_validation(manifest: dict[str, Any], summary: str, card: str) -> None:
    """Every output of a new bundle carries its validation: out-of-fold on the training
    patients and on the held-out patients, with CIs, and the status the rule gives."""
    validation = manifest["validation"]
    assert set(validation["outputs"]) == set(present_outputs(manifest))
    for name, entry in validation["outputs"].items():
        estimates = [Estimate.from_json(e) for e in entry["estimates"]]
        assert (entry["status"], entry["reason"]) == decide(
            entry["metric"], estimates, validation["min_events"]
        )
        for e in estimates:
            assert 0.0 <= e.low <= e.value <= e.high <= 1.0, (name, e)
            assert e.n > 0
    for name in ("response_FDL", "response_CR", "response_CRD", "distant_metastasis"):
        cohorts = [e["cohort"] for e in validation["outputs"][name]["estimates"]]
        assert cohorts[0] == "out_of_fold", (name, cohorts)
    held = validation["outputs"]["response_FDL"]["estimates"][-1]
    assert held["cohort"] == "held_out"
    assert held["value"] == manifest["metrics"]["auc_FDL"]["value"]
    # said where people read it: the training summary and the model card
    for line in validation_lines(manifest):
        assert f"  {line}" in summary
        assert f"- {line}" in card


def _check_external_validation(
    original: Path, validated: Path, metrics: dict[str, Any], stdout: str, patients: list[str]
) -> None:
    """larc evaluate --validate: a new bundle version whose validation includes the evaluated
    patients as external ones; the original bundle is untouched."""
    before = json.loads((original / "manifest.json").read_text())
    after = Bundle.load(validated).manifest
    assert after["version"] == "9.9.9+site"
    assert before["version"] == "9.9.9"
    assert "history" not in before["validation"]
    (record,) = after["validation"]["history"]
    assert record["from_version"] == "9.9.9"
    assert record["patients"] == metrics["patients_scored"]
    fdl = after["validation"]["outputs"]["response_FDL"]
    external = fdl["estimates"][-1]
    assert external["cohort"] == "external"
    assert external["value"] == pytest.approx(metrics["response"]["models"]["FDL"]["auc"])
    assert external["ci95"] == pytest.approx(
        metrics["response"]["models"]["FDL"]["auc_ci95_delong"]
    )
    assert record["outputs"]["response_FDL"] == fdl["status"]
    for line in validation_lines(after):
        assert f"  {line}" in stdout
    card = (validated / "model_card.md").read_text()
    assert f"external validation on {record['patients']} patients" in card
    assert "external" in after["failure_modes"]  # looked for among the site's patients too
    assert after["failure_modes"]["held_out"] == before["failure_modes"]["held_out"]
    # patients the bundle was trained on are no external validation
    loaded = Bundle.load(original)
    trained = json.loads((original / "manifest.json").read_text())["training_data"]
    hashes = set(trained["train_patients_sha256"])
    seen: dict[str, dict[str, Any]] = {p: {} for p in patients if patient_hash(p) in hashes}
    assert seen
    with pytest.raises(ValueError, match="trained the bundle"):
        validated_copy(loaded, original.parent / "refused", "x", seen, {p: {} for p in seen})


def test_a_spreadsheet_without_ypn_or_recurrence_trains_everything_else(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    """An imaging team's outcomes often lack pathology ypN and recurrence: the nomogram and the
    subtypes/RRS are named and left out before any training, everything else is trained, and a
    scored case (and its SR) says what this bundle does not give and why."""
    cohort = trained_bundle.cohort
    dropped = ("ypn_stage", "rfs_event", "rfs_time_months")
    lines = cohort.labels_path.read_text().splitlines()
    header = lines[0].split(",")
    keep = [i for i, name in enumerate(header) if name not in dropped]
    labels = tmp_path / "outcomes.csv"
    labels.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines))
    out = tmp_path / "bundle"
    prepared = trained_bundle.folder.with_name(trained_bundle.folder.name + ".prepared")
    if prepared.is_dir():  # the images prepared for the session's bundle: not read again
        shutil.copytree(prepared, out.with_name("bundle.prepared"))
    run = _larc(
        "train", "models", "--cohort", str(cohort.out_dir), "--labels", str(labels),
        "--out", str(out), "--folds", "2", "--epochs", "1", "--patience", "1",
        "--width", "0.25", "--image-size", "32", "--stack-size", "32", "--stack-depth", "8",
        "--no-n4", "--segmentation-epochs", "0",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    assert "not in this bundle: nomogram (no pathology ypN (ypn_stage) in the outcomes)" in (
        run.stdout
    )
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["not_in_bundle"] == {
        "nomogram": "no pathology ypN (ypn_stage) in the outcomes",
        "recurrence": "no recurrence outcome (rfs_time_months, rfs_event) in the outcomes",
    }
    assert manifest["subtypes"] is None
    assert "nomogram" not in manifest["dm"]
    card = (out / "model_card.md").read_text()
    assert "## Not in this bundle" in card
    assert "recurrence: no recurrence outcome" in card
    bundle = Bundle.load(out)
    assert bundle.nomogram is None
    assert bundle.subtypes is None
    # a case scored with it: DM risk as usual, the missing outputs named with their reason
    patient = cohort.patients[0]
    inputs = prepare_case(
        {t: select_files(sorted(patient.studies[t].directory.rglob("*.dcm")))
         for t in ("baseline", "restaging")},
        bundle.preprocess,
    )  # fmt: skip
    scores = bundle.score(inputs, require_validated=False)
    assert "distant_metastasis" in scores
    assert "recurrence" not in scores
    assert scores["not_scored"]["nomogram"].startswith("not available in this bundle: no path")
    assert unavailable_comments(scores, "baseline") == [
        "nomogram 3-year DM-free survival: not available in this bundle: no pathology ypN "
        "(ypn_stage) in the outcomes",
        "recurrence subtype and RRS: not available in this bundle: no recurrence outcome "
        "(rfs_time_months, rfs_event) in the outcomes",
    ]
    assert unavailable_comments(scores, "response") == []

    # the response label or the DM outcome missing: refused at once, before any training
    header_only = tmp_path / "no-dm.csv"
    keep = [i for i, name in enumerate(header) if not name.startswith("dm_")]
    header_only.write_text("\n".join(",".join(line.split(",")[i] for i in keep) for line in lines))
    refused = _larc("train", "models", "--cohort", str(cohort.out_dir), "--labels",
                    str(header_only), "--out", str(tmp_path / "refused"))  # fmt: skip
    assert refused.returncode == 1
    assert "the outcomes have no values in dm_event, dm_time_months" in refused.stderr
    assert not (tmp_path / "refused" / "weights").exists()


def test_a_bundle_scores_with_its_fold_networks_and_an_older_bundle_still_loads(
    tmp_path: Path, trained_bundle: TrainedBundle
) -> None:
    folder = trained_bundle.folder
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["networks"]["response"]["members"] == 2  # --folds 2
    assert manifest["networks"]["dm"]["members"] == 2
    assert not (folder / "weights" / "response" / "pre_T2.pt").exists()  # no final network
    bundle = Bundle.load(folder)
    assert {len(m) for m in [*bundle.response_networks.values(), *bundle.dm_networks.values()]} == {
        2
    }

    # a held-out patient scored through the bundle gets the signatures and DL-probs the
    # training recorded for it: the fold networks' mean, what the SVMs and the Cox model saw
    # (out of fold) for the training patients
    table = pd.read_csv(folder / "training" / "features_and_signatures.csv")
    held_out = table[table["split"] == "test"].set_index("patient_sha256")
    cohort = load_cohort(trained_bundle.cohort.out_dir, None, Settings().pairing.policy())
    patient = next(p for p in sorted(cohort.cases) if patient_hash(p) in held_out.index)
    inputs, _ = prepare_cohort({patient: cohort.cases[patient]}, bundle.preprocess, SIGNATURES,
                               stacks=True, workers=1)  # fmt: skip
    case = inputs[patient]
    recorded = held_out.loc[patient_hash(patient)]
    scored = bundle.signatures(case)
    assert set(scored) == set(SIGNATURES)
    for name, value in scored.items():
        assert value == pytest.approx(recorded[name], abs=1e-5), name
    dm = bundle.score(case, require_validated=False)["distant_metastasis"]
    assert dm["t2w_prob"] + dm["adc_prob"] == pytest.approx(recorded["dl_prob"], abs=1e-5)

    # a bundle made before (one network per signature, no members in its manifest) still loads
    # and scores with its one network
    old = tmp_path / "old"
    shutil.copytree(folder, old)
    for name in SIGNATURES:
        members = old / "weights" / "response" / name
        (members / "fold1.pt").rename(members.with_suffix(".pt"))
        shutil.rmtree(members)
    for sequence in STACK_SEQUENCES:
        shutil.rmtree(old / "weights" / "dm" / sequence)  # the final DM networks stay
    older = json.loads((old / "manifest.json").read_text())
    for networks in older["networks"].values():
        del networks["members"]
    write_manifest(old, older)
    loaded = Bundle.load(old)
    assert {len(m) for m in [*loaded.response_networks.values(), *loaded.dm_networks.values()]} == {
        1
    }
    image = to_tensor(case.slices["post_T2"].array[None])
    alone = predict_probability(bundle.response_networks["post_T2"][0], image)[0]
    assert loaded.signatures(case)["post_T2"] == pytest.approx(float(alone), abs=1e-6)
    assert (
        loaded.score(case, require_validated=False).keys()
        == bundle.score(case, require_validated=False).keys()
    )


def _network_counts(bundle: Bundle) -> set[int]:
    """How many networks make each signature and each DM probability."""
    return {len(m) for m in [*bundle.response_networks.values(), *bundle.dm_networks.values()]}
