"""What a bundle's validation backs: each output's estimates with CIs, and whether it may be sent.

Every output of a bundle (the three response models, the DLRS, the nomogram, the recurrence
subtypes and RRS) carries its validation in the manifest (``validation``)::

    {"min_events": 10,
     "outputs": {"distant_metastasis": {
         "metric": "c_index",
         "estimates": [{"cohort": "out_of_fold", "value": 0.64, "ci95": [0.55, 0.72],
                        "n": 100, "events": 31}, {"cohort": "held_out", ...},
                       {"cohort": "external", "date": ..., "fingerprint": ..., ...}],
         "status": "validated" | "not validated",
         "reason": "C-index 0.64 (95% CI 0.55-0.72; out-of-fold on the training patients, ...)"}}}

The rule (:func:`decide`): an estimate counts when it has at least ``min_events`` events (binary
outputs: at least that many of each outcome). When a hospital has evaluated the bundle on its
own patients (``external``, added by ``larc evaluate --validate``), the latest such estimate
decides; otherwise every counting out-of-fold and held-out estimate must show discrimination.
Discrimination means the lower bound of the 95 % CI of the AUC or C-index lies above 0.5. No
counting estimate: not validated (too few events). With ``scoring.require_validated`` (the
default) an output that is not validated is not sent: :meth:`pipeline.bundle.Bundle.score` puts
it in ``not_scored`` with the reason a radiologist reads in the SR and the worklist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

DEFAULT_MIN_EVENTS = 10
VALIDATED, NOT_VALIDATED = "validated", "not validated"

# output (the key of Bundle.score's result and not_scored) -> (metric, words for people)
OUTPUTS: dict[str, tuple[str, str]] = {
    "response_FDL": ("auc", "P(good response) FDL and the response signatures"),
    "response_CR": ("auc", "P(good response) CR"),
    "response_CRD": ("auc", "P(good response) CRD"),
    "distant_metastasis": ("c_index", "distant-metastasis risk (DLRS, risk group, 3-year DMFS)"),
    "nomogram": ("c_index", "nomogram 3-year DM-free survival"),
    "recurrence": ("c_index", "recurrence subtype and RRS"),
}
_METRIC_NAME = {"auc": "AUC", "c_index": "C-index"}
_COHORT_WORDS = {
    "out_of_fold": "out-of-fold on the training patients",
    "held_out": "held-out patients",
    "external": "external patients",
}
NO_VALIDATION = (
    "not available - this bundle records no validation (trained by an older larc): retrain it, "
    "validate it with larc evaluate --validate, or set scoring.require_validated: false"
)


@dataclass(frozen=True)
class Estimate:
    """One validation of one output: the AUC or C-index on a set of patients, with its CI."""

    cohort: str  # out_of_fold, held_out or external
    value: float
    low: float
    high: float
    n: int
    events: int  # binary: good responses; survival: events
    non_events: int | None = None  # binary only: poor responses
    note: str = ""  # e.g. what makes an out-of-fold estimate optimistic

    def counts(self, min_events: int) -> bool:
        """Whether it has enough events to decide on."""
        return self.events >= min_events and (
            self.non_events is None or self.non_events >= min_events
        )

    def tally(self) -> str:
        """``30 events`` or ``25 good and 35 poor responses``."""
        if self.non_events is not None:
            return f"{self.events} good and {self.non_events} poor responses"
        return f"{self.events} events"

    def words(self, metric: str) -> str:
        """``C-index 0.49, 95% CI 0.40-0.59, held-out patients, n = 100, 30 events``."""
        return (
            f"{_METRIC_NAME[metric]} {self.value:.2f}, 95% CI {self.low:.2f}-{self.high:.2f}, "
            f"{_COHORT_WORDS.get(self.cohort, self.cohort)}, n = {self.n}, {self.tally()}"
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest's form."""
        out: dict[str, Any] = {
            "cohort": self.cohort,
            "value": self.value,
            "ci95": [self.low, self.high],
            "n": self.n,
            "events": self.events,
        }
        if self.non_events is not None:
            out["non_events"] = self.non_events
        if self.note:
            out["note"] = self.note
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Estimate:
        """Inverse of :meth:`to_json` (extra keys, such as an external cohort's date, kept out)."""
        low, high = data["ci95"]
        return cls(
            str(data["cohort"]), float(data["value"]), float(low), float(high), int(data["n"]),
            int(data["events"]), None if data.get("non_events") is None
            else int(data["non_events"]), str(data.get("note", "")),
        )  # fmt: skip


def decide(
    metric: str, estimates: Sequence[Estimate], min_events: int = DEFAULT_MIN_EVENTS
) -> tuple[str, str]:
    """(status, reason) of one output (see the module docstring for the rule). A reason of an
    output that is not validated reads after "this bundle's model"."""
    counting = [e for e in estimates if e.counts(min_events)]
    external = [e for e in counting if e.cohort == "external"]
    deciding = external[-1:] if external else counting
    if not deciding:
        if not estimates:
            return NOT_VALIDATED, "has no validation estimate"
        most = max(estimates, key=lambda e: min(e.events, e.non_events or e.events))
        return NOT_VALIDATED, (
            f"could not be validated: too few events ({most.tally()} in the "
            f"{_COHORT_WORDS.get(most.cohort, most.cohort)}; at least {min_events}"
            f"{' of each' if most.non_events is not None else ''} needed)"
        )
    failing = [e for e in deciding if e.low <= 0.5]
    if failing:
        return NOT_VALIDATED, "showed no discrimination in validation (" + "; ".join(
            e.words(metric) for e in failing
        ) + ")"
    return VALIDATED, "; ".join(e.words(metric) for e in deciding)


def output_entry(
    name: str, estimates: Sequence[Estimate], min_events: int = DEFAULT_MIN_EVENTS
) -> dict[str, Any]:
    """The manifest's ``validation.outputs[name]``."""
    metric = OUTPUTS[name][0]
    status, reason = decide(metric, estimates, min_events)
    return {
        "metric": metric,
        "estimates": [e.to_json() for e in estimates],
        "status": status,
        "reason": reason,
    }


def withheld(manifest: Mapping[str, Any]) -> dict[str, str]:
    """The outputs the bundle has that are not validated, each with the sentence the SR and the
    worklist show (``not available - ...``). A bundle without a validation record withholds all
    of them."""
    validation = manifest.get("validation")
    present = present_outputs(manifest)
    if not validation:
        return dict.fromkeys(present, NO_VALIDATION)
    out = {}
    for name in present:
        entry = (validation.get("outputs") or {}).get(name)
        if entry is None:
            out[name] = "not available - this bundle's model has no validation estimate"
        elif entry["status"] != VALIDATED:
            out[name] = f"not available - this bundle's model {entry['reason']}"
    return out


def unavailable(scores: Mapping[str, Any], response: bool) -> dict[str, str]:
    """The outputs of a case kind (``response``: the response case, else the baseline case)
    that a :meth:`~pipeline.bundle.Bundle.score` result does not send because the bundle does
    not carry them or its validation does not back them: words for people -> why."""
    return {
        OUTPUTS.get(name, ("", name))[1]: why
        for name, why in sorted((scores.get("not_scored") or {}).items())
        if why.startswith("not available") and name.startswith("response_") == response
    }


def validation_lines(manifest: Mapping[str, Any]) -> list[str]:
    """One line per output: validated or not, and on what (the model card, the training
    summary, larc evaluate --validate)."""
    validation = manifest.get("validation")
    if not validation:
        return [NO_VALIDATION[len("not available - ") :]]
    lines = []
    for name in present_outputs(manifest):
        entry = (validation.get("outputs") or {}).get(name)
        words = OUTPUTS[name][1]
        if entry is None:
            lines.append(f"{words}: NOT VALIDATED, not sent: no validation estimate")
        elif entry["status"] == VALIDATED:
            lines.append(f"{words}: validated - {entry['reason']}")
        else:
            lines.append(f"{words}: NOT VALIDATED, not sent - this model {entry['reason']}")
    return lines


def present_outputs(manifest: Mapping[str, Any]) -> list[str]:
    """The outputs the bundle's models give."""
    names = [f"response_{m}" for m in (manifest.get("response") or {}).get("models", {})]
    dm = manifest.get("dm") or {}
    if dm:
        names.append("distant_metastasis")
        if dm.get("nomogram"):
            names.append("nomogram")
    if manifest.get("subtypes"):
        names.append("recurrence")
    return names


def revalidate(manifest: dict[str, Any], external: Mapping[str, Estimate], record: Mapping[
        str, Any]) -> dict[str, Any]:  # fmt: skip
    """The manifest with each output's external estimate (``larc evaluate --validate``) added
    and its status decided again; ``record`` (date, cohort fingerprint, who) is kept with each
    estimate and in ``validation.history``."""
    validation = dict(manifest.get("validation") or {"min_events": DEFAULT_MIN_EVENTS,
                                                     "outputs": {}})  # fmt: skip
    min_events = int(validation.get("min_events", DEFAULT_MIN_EVENTS))
    outputs = {k: dict(v) for k, v in (validation.get("outputs") or {}).items()}
    for name, estimate in external.items():
        entry = outputs.get(name) or output_entry(name, [], min_events)
        estimates = [*entry["estimates"], estimate.to_json() | dict(record)]
        outputs[name] = output_entry(name, [Estimate.from_json(e) for e in estimates], min_events)
        outputs[name]["estimates"] = estimates
    history = [*validation.get("history", []), {**record, "outputs": {
        name: outputs[name]["status"] for name in external}}]  # fmt: skip
    return {**manifest, "validation": {**validation, "outputs": outputs, "history": history}}
