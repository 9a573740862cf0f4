"""Model bundles: everything a trained model needs to score a case, in one versioned folder.

Layout::

    manifest.json            name, version, schema, created, training-data fingerprint, metrics,
                             intended use, preprocessing config, network settings, files + sha256
    model_card.md            the same for people
    weights/response/<signature>/fold<k>.pt   torch state dicts: each signature is the mean of
    weights/dm/<T2|ADC>/fold<k>.pt            its k cross-validation networks (the ones whose
                                              out-of-fold signatures the classifiers learned from)
    weights/dm/<T2|ADC>.pt                    the final DM networks (science D's deep features)
    models/response_<FDL|CR|CRD>.skops, models/subtypes.skops   scikit-learn (skops)
    models/dm_cox.json, models/nomogram_cox.json, models/rrs_cox.json   Cox models (JSON)

Loading checks the schema version, every file's sha256 and, when asked, that the bundle's
preprocessing equals the configured one; any mismatch is a :class:`BundleError` saying what
differs. Nothing is unpickled: torch loads with ``weights_only=True``, skops only known types.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from numpy.typing import NDArray
from torch import nn

from pipeline.case import CaseInputs
from pipeline.config import PreprocessConfig
from pipeline.errors import ModelError, PipelineInputError
from pipeline.features import feature_row
from pipeline.gradcam import layercam, predicted_class, scaled_0_1
from pipeline.kinds import SIGNATURES, STACK_SEQUENCES
from pipeline.manifest import BundleError, verify_bundle
from pipeline.models import (
    CoxModel,
    ModelFileError,
    RiskCutoff,
    add_deltas,
    load_estimator,
)
from pipeline.networks import (
    dm_network,
    ensemble_probability,
    heat_map_layer,
    load_weights,
    penultimate_features,
    response_network,
    to_tensor,
)
from pipeline.segmentation import GateLimits, SegmenterConfig
from pipeline.validation import withheld

RESEARCH_USE = "Research use only - not for diagnostic decisions."
DM_HORIZON_MONTHS = 36.0
RFS_HORIZON_MONTHS = 60.0


@dataclass
class Bundle:
    """A loaded bundle, ready to score prepared cases."""

    folder: Path
    manifest: dict[str, Any]
    preprocess: PreprocessConfig
    # the networks whose mean is each signature and DL-prob part: the bundle's fold networks
    # (the one final network of a bundle whose manifest names no members, made before 2026-12-06)
    response_networks: dict[str, list[nn.Module]] = field(default_factory=dict)
    dm_networks: dict[str, list[nn.Module]] = field(default_factory=dict)
    dm_features: dict[str, nn.Module] = field(default_factory=dict)  # science D's deep features
    response_models: dict[str, tuple[Any, list[str]]] = field(default_factory=dict)
    dm_cox: CoxModel | None = None
    dm_cutoff: RiskCutoff | None = None
    nomogram: CoxModel | None = None
    clinical_cox: CoxModel | None = None  # the clinical comparator of the nomogram (NRI, IDI)
    subtypes: Any = None
    subtype_order: list[int] = field(default_factory=list)
    rrs_cox: CoxModel | None = None
    # the automatic tumour segmenter (pipeline.segmentation), when the bundle carries one
    segmenter: tuple[nn.Module, SegmenterConfig, GateLimits] | None = None

    @property
    def withheld(self) -> dict[str, str]:
        """The outputs its validation does not back, with the sentence the SR shows instead
        (:mod:`pipeline.validation`)."""
        return withheld(self.manifest)

    @property
    def version(self) -> str:
        """``name`` ``version`` of the bundle."""
        return f"{self.manifest['name']} {self.manifest['version']}"

    @classmethod
    def load(cls, folder: Path, expected: PreprocessConfig | None = None) -> Bundle:
        """Load and check a bundle (see the module docstring)."""
        manifest, preprocess = verify_bundle(folder, expected)
        bundle = cls(folder, manifest, preprocess)
        try:
            bundle._load_models()
        except (ModelError, ModelFileError, KeyError, TypeError) as exc:
            raise BundleError(f"{folder}: {exc}") from exc
        return bundle

    def _load_models(self) -> None:
        nets = self.manifest["networks"]
        folder = self.folder
        response, dm = nets["response"], nets["dm"]

        def response_model() -> nn.Module:
            size = self.preprocess.slice_size
            return response_network(response["backbone"], size, response["width"])

        def dm_model() -> nn.Module:
            depth, size = self.preprocess.stack_depth, self.preprocess.stack_size
            return dm_network(dm["backbone"], depth, size, dm["width"])

        for name in response["signatures"]:
            self.response_networks[name] = _members(
                response_model, folder / "weights/response", name, response.get("members")
            )
        for name in dm["sequences"]:
            self.dm_networks[name] = _members(
                dm_model, folder / "weights/dm", name, dm.get("members")
            )
            self.dm_features[name] = load_weights(dm_model(), folder / f"weights/dm/{name}.pt")
        for name, entry in self.manifest["response"]["models"].items():
            self.response_models[name] = (load_estimator(folder / entry["file"]), entry["features"])
        dm = self.manifest.get("dm")
        if dm:
            self.dm_cox = CoxModel.load(folder / dm["cox"])
            self.dm_cutoff = RiskCutoff(dm["cutoff"], dm["horizon_months"])
            if dm.get("nomogram"):
                self.nomogram = CoxModel.load(folder / dm["nomogram"])
            if dm.get("clinical"):
                self.clinical_cox = CoxModel.load(folder / dm["clinical"])
        segmentation = self.manifest.get("segmentation")
        if segmentation:
            config = SegmenterConfig.from_json(segmentation["network"])
            model = load_weights(config.network(), folder / segmentation["weights"])
            self.segmenter = (model, config, GateLimits.from_json(segmentation["gate"]))
        subtypes = self.manifest.get("subtypes")
        if subtypes:
            self.subtypes = load_estimator(folder / subtypes["file"])
            self.subtype_order = list(subtypes["order"])
            self.rrs_cox = CoxModel.load(folder / subtypes["rrs"])

    # -- scoring -------------------------------------------------------------------------------

    def signatures(self, inputs: CaseInputs) -> dict[str, float]:
        """The response signatures the case has inputs for."""
        out = {}
        for name, members in self.response_networks.items():
            if name in inputs.slices:
                image = to_tensor(inputs.slices[name].array[None])
                out[name] = float(ensemble_probability(members, image)[0])
        return out

    def heat_maps(
        self, inputs: CaseInputs, require_validated: bool = True
    ) -> dict[str, NDArray[np.float32]]:
        """LayerCAM (0-1, on the input's grid; :func:`pipeline.gradcam.layercam`) of every
        network the case has inputs for, for the class the signature predicts, averaged over
        the networks whose mean the signature is: the response signatures by name (over the
        slice), the DM networks as ``dm_T2``/``dm_ADC`` (over the stack). With
        ``require_validated``, none of a network whose output is withheld (the signatures go
        with FDL, the DM networks with the DLRS)."""
        maps: dict[str, NDArray[np.float32]] = {}
        held = self.withheld if require_validated else {}
        nets = self.manifest["networks"]
        response_layer = heat_map_layer(nets["response"]["backbone"], self.preprocess.slice_size)
        for name, members in self.response_networks.items():
            if name in inputs.slices and "response_FDL" not in held:
                image = to_tensor(inputs.slices[name].array[None])[0]
                maps[name] = _mean_map(members, image, response_layer)
        dm_layer = "backbone." + heat_map_layer(nets["dm"]["backbone"], self.preprocess.stack_size)
        for name, members in self.dm_networks.items():
            if name in inputs.stacks and "distant_metastasis" not in held:
                maps[f"dm_{name}"] = _mean_map(members, inputs.stacks[name].array, dm_layer)
        return maps

    def score(
        self,
        inputs: CaseInputs,
        clinical: Mapping[str, object] | None = None,
        require_validated: bool = True,
    ) -> dict[str, Any]:
        """Every score the case's inputs allow. ``clinical``: radiologist-read and clinical values
        by feature name (pre_mwt_mm, post_crm, cea_ng_ml, ...); LD, MWT and volume fall back to
        the VOI measurements. Each score missing says why in ``not_scored``. With
        ``require_validated`` (``scoring.require_validated``), an output the bundle's validation
        does not back is left out, its reason in ``not_scored`` (evaluation and training score
        everything: ``False``)."""
        if inputs.config_fingerprint != self.preprocess.fingerprint:
            raise PipelineInputError(
                "the case was prepared with other preprocessing than the bundle's: prepare it "
                "with the bundle's configuration"
            )
        result: dict[str, Any] = {
            "model": self.version,
            "not_scored": {  # what the outcomes it was trained on could not fit
                name: f"not available in this bundle: {why}"
                for name, why in (self.manifest.get("not_in_bundle") or {}).items()
            },
        }
        features, measured = feature_row(clinical or {}, inputs.features)
        result["measured_features"] = measured
        signatures = self.signatures(inputs)
        result["signatures"] = signatures
        row = add_deltas(pd.DataFrame([{**features, **signatures}]))
        for name, (model, columns) in self.response_models.items():
            missing = [c for c in columns if c not in row or pd.isna(row[c].iloc[0])]
            if missing:
                result["not_scored"][f"response_{name}"] = f"missing {', '.join(missing)}"
                continue
            p = float(model.predict_proba(row[columns].to_numpy(float))[0, 1])
            result[f"response_{name}"] = {
                "p_good_response": p,
                "predicted": "good" if p >= 0.5 else "poor",
            }
        self._score_baseline(inputs, features, result)
        if require_validated:
            withhold(result, self.withheld)
        return result

    def _score_baseline(
        self, inputs: CaseInputs, features: dict[str, float], result: dict[str, Any]
    ) -> None:
        lacking = [s for s in STACK_SEQUENCES if s not in inputs.stacks]
        if lacking or self.dm_cox is None or self.dm_cutoff is None:
            why = (
                f"no baseline {', '.join(lacking)} stack"
                if lacking
                else "the bundle has no DM model"
            )
            result["not_scored"]["distant_metastasis"] = why
            return
        probs = {
            s: float(ensemble_probability(self.dm_networks[s], inputs.stacks[s].array[None])[0])
            for s in STACK_SEQUENCES
        }
        dl_prob = probs["T2"] + probs["ADC"]
        row = [dm_covariate(c, dl_prob, features) for c in self.dm_cox.covariates]
        if any(math.isnan(v) for v in row):
            result["not_scored"]["distant_metastasis"] = "no baseline tumour volume"
            return
        lp = float(self.dm_cox.linear_predictor(np.array([row]))[0])
        dm: dict[str, Any] = {
            "t2w_prob": probs["T2"],
            "adc_prob": probs["ADC"],
            "dl_prob": dl_prob,
            "dlrs": lp,
            "risk_group": self.dm_cutoff.group(np.array([lp]))[0],
            "dmfs_3y": float(self.dm_cox.survival_at(np.array([row]), DM_HORIZON_MONTHS)[0]),
        }
        if self.nomogram is not None:
            values = [
                dl_prob if c == "dl_prob" else features.get(c, math.nan)
                for c in self.nomogram.covariates
            ]
            if any(math.isnan(v) for v in values):
                result["not_scored"]["nomogram"] = "missing clinical factors"
            else:
                dm["nomogram_dmfs_3y"] = float(
                    self.nomogram.survival_at(np.array([values]), DM_HORIZON_MONTHS)[0]
                )
        result["distant_metastasis"] = dm
        if self.subtypes is not None and self.rrs_cox is not None:
            deep = np.concatenate(
                [
                    penultimate_features(self.dm_features[s], inputs.stacks[s].array[None])[0]
                    for s in STACK_SEQUENCES
                ]
            )[None]
            cluster = int(self.subtypes.predict(deep)[0])
            components = self.subtypes[:-1].transform(deep)
            result["recurrence"] = {
                "subtype": f"RDLS{self.subtype_order.index(cluster) + 1}",
                "rrs": float(self.rrs_cox.linear_predictor(components)[0]),
                "rfs_5y": float(self.rrs_cox.survival_at(components, RFS_HORIZON_MONTHS)[0]),
            }


def _members(
    build: Callable[[], nn.Module], folder: Path, name: str, members: int | None
) -> list[nn.Module]:
    """The networks of one signature: ``folder/name/fold<k>.pt`` for k = 1..``members``, or the
    one ``folder/name.pt`` of a bundle that names no members."""
    if not members:
        return [load_weights(build(), folder / f"{name}.pt")]
    return [load_weights(build(), folder / name / f"fold{k}.pt") for k in range(1, members + 1)]


def _mean_map(
    members: list[nn.Module], image: NDArray[np.floating], layer: str
) -> NDArray[np.float32]:
    """LayerCAM of the class the members' mean probability predicts, averaged over them and
    scaled to [0, 1] (each member's map is scaled first, so that none outweighs the others)."""
    probability = float(ensemble_probability(members, np.asarray(image)[None])[0])
    chosen = predicted_class(probability)
    return scaled_0_1(np.stack([layercam(m, image, layer, chosen) for m in members]).mean(axis=0))


# the covariates the DLRS Cox model may have besides DL-prob (science B: DL-prob alone)
DM_COVARIATES = ("log_pre_volume_ml",)


def dm_covariate(name: str, dl_prob: float, features: Mapping[str, float]) -> float:
    """One covariate of the DLRS Cox model for a case: ``dl_prob``, or the natural log of the
    baseline tumour volume (ml; read by a radiologist, else measured from the VOI)."""
    if name == "dl_prob":
        return dl_prob
    if name == "log_pre_volume_ml":
        volume = float(features.get("pre_volume_ml", math.nan))
        return math.log(volume) if volume > 0 else math.nan
    raise BundleError(f"the DM model has a covariate larc does not know: {name}")


def withhold(result: dict[str, Any], reasons: Mapping[str, str]) -> None:
    """Take each output named in ``reasons`` out of a :meth:`Bundle.score` result, in place,
    with its reason in ``not_scored``: the response signatures go with FDL; the DLRS takes the
    DM networks' probabilities, risk group and 3-year DMFS, leaving a validated nomogram."""
    for name, why in reasons.items():
        if name.startswith("response_"):
            result.pop(name, None)
            if name == "response_FDL":
                result["signatures"] = {}
        elif name in ("distant_metastasis", "recurrence"):
            dm = result.pop(name, None)
            keep = name == "distant_metastasis" and "nomogram" not in reasons
            if keep and dm and "nomogram_dmfs_3y" in dm:  # a validated nomogram still goes
                result[name] = {"nomogram_dmfs_3y": dm["nomogram_dmfs_3y"]}
        elif name == "nomogram":
            (result.get("distant_metastasis") or {}).pop("nomogram_dmfs_3y", None)
        else:
            continue
        if name not in result["not_scored"]:  # a reason the case could not be scored stands
            result["not_scored"][name] = why


def signature_network_settings(backbone: str, width: float) -> dict[str, Any]:
    """The ``networks.response`` entry of a manifest."""
    return {"backbone": backbone, "width": width, "signatures": list(SIGNATURES)}


def torch_save(model: nn.Module, path: Path) -> None:
    """State dict to ``path`` (creating its folder)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
