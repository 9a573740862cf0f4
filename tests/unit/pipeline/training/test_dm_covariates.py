"""The DLRS Cox model with the baseline tumour volume besides DL-prob (``--dm-volume``): fitted
on the same covariates scoring computes, and it uses what carries the risk."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.bundle import dm_covariate
from pipeline.manifest import BundleError
from pipeline.training.bundle import _fit_dm
from pipeline.training.validation import _cox_oof


def test_the_volume_covariate_is_the_log_of_the_read_or_measured_volume() -> None:
    assert dm_covariate("dl_prob", 0.7, {}) == 0.7
    assert dm_covariate("log_pre_volume_ml", 0.7, {"pre_volume_ml": 20.0}) == math.log(20.0)
    assert math.isnan(dm_covariate("log_pre_volume_ml", 0.7, {"pre_volume_ml": math.nan}))
    with pytest.raises(BundleError, match="does not know"):
        dm_covariate("age", 0.7, {"age": 60.0})


def test_a_dlrs_with_the_volume_finds_the_risk_the_networks_miss(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    n = 160
    volume = np.exp(rng.normal(3.0, 0.8, n))
    hazard = 0.004 * (volume / 20) ** 1.5  # per month
    onset, follow_up = rng.exponential(1 / hazard), rng.uniform(18, 84, n)
    time, event = np.minimum(onset, follow_up), onset <= follow_up
    table = pd.DataFrame({"dl_prob": rng.random(n), "pre_volume_ml": volume})  # noise nets
    table["log_pre_volume_ml"] = [dm_covariate("log_pre_volume_ml", 0.0, r)
                                  for _, r in table.iterrows()]  # fmt: skip
    outcomes = pd.DataFrame({"dm_time_months": time, "dm_event": event.astype(float)})
    train = list(table.index)
    (tmp_path / "models").mkdir()
    fitted = _fit_dm(table, outcomes, train, tmp_path, nomogram=False,
                     covariates=("dl_prob", "log_pre_volume_ml"))  # fmt: skip
    assert list(fitted["coefficients"]) == ["dl_prob", "log_pre_volume_ml"]
    assert fitted["coefficients"]["log_pre_volume_ml"] > 0.2  # more risk with more tumour
    frame = table.assign(time=time, event=event.astype(int))
    alone = _cox_oof(frame[["dl_prob", "time", "event"]], 3, 0)
    both = _cox_oof(frame[["dl_prob", "log_pre_volume_ml", "time", "event"]], 3, 0)
    assert alone is not None
    assert both is not None
    assert alone.low <= 0.5  # the networks' noise alone: no discrimination
    assert both.low > 0.55
