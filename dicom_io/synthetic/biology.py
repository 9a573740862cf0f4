"""The synthetic patient: anatomy, tumour, clinical features, response to therapy and outcomes.

Every draw comes from one NumPy generator, so a patient is fully determined by (seed, index).
The generative story, after ../shared/science.md:

- a latent *regression* fraction ``rho`` in (0, 1) says how much of the tumour the therapy
  destroyed. Smaller, less advanced tumours with lower CEA regress more, plus an unpredictable
  part. The restaging images show ``rho``: the tumour shrinks, turns T2-dark (fibrosis), loses
  DWI brightness and gains ADC, each with a little noise;
- pathology (TRG) is a noisy read-out of ``rho``: ``oracle_p_good = sigmoid(k (rho - rho0))`` is
  the best probability of a good response any model could give, and the label is drawn from it;
- the distant-metastasis (DM) log-hazard rises with baseline tumour volume, low and heterogeneous
  ADC, EMVI and CEA; recurrence adds a local hazard driven by CRM, poor regression and subtype.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from dicom_io.synthetic.anatomy import (
    Anatomy,
    Sphere,
    TumourMeasurements,
    TumourShape,
    measure_tumour,
)

# Response model: chosen so that about a third respond well and the oracle AUC is about 0.86.
RESPONSE_SLOPE = 7.5
RESPONSE_INTERCEPT = -0.6
REGRESSION_SCALE = 1.0
RESPONSE_MIDPOINT = 0.55
# Baseline hazards per month, chosen for a 3-year DM rate of about 20-25 %.
DM_BASE_HAZARD = 0.0045
LOCAL_BASE_HAZARD = 0.0015
SUBTYPE_NAMES = ("RDLS1", "RDLS2", "RDLS3")  # immune-excluded, lymphocyte-rich, stromal


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@dataclass(frozen=True)
class Timepoint:
    """What one MRI study shows: the tumour's shape and how its tissue looks."""

    shape: TumourShape
    anatomy: Anatomy
    measurements: TumourMeasurements
    t_stage: str
    n_stage: str
    crm_positive: bool
    emvi: bool
    adc: float  # tumour mean ADC, 10^-3 mm^2/s
    heterogeneity: float  # relative SD of the tumour texture
    fibrosis: float  # fraction of the tumour signal replaced by fibrosis (T2-dark)
    t2_signal: float  # tumour T2W signal before fibrosis


@dataclass(frozen=True)
class PatientBiology:
    """Everything the generator decided about one patient."""

    age: int
    sex: str
    cea_ng_ml: float
    ca19_9_u_ml: float
    distance_anal_verge_mm: float
    subtype: int  # 1..3, see SUBTYPE_NAMES
    baseline: Timepoint
    restaging: Timepoint
    regression: float
    oracle_p_good: float
    good_response: bool
    trg: int
    ypn_stage: str
    dm_event: bool
    dm_time_months: float
    oracle_log_hazard_dm: float
    rfs_event: bool
    rfs_time_months: float
    oracle_log_hazard_rfs: float


def _t_stage(anatomy: Anatomy, m: TumourMeasurements) -> str:
    if m.extramural_depth_mm < 0.5:
        return "T2"
    if m.max_outer_radius_mm > anatomy.fascia_radius_mm + 1.0:
        return "T4"
    return "T3"


def _draw_nodes(
    rng: np.random.Generator, anatomy: Anatomy, malignant: int, benign: int
) -> tuple[Sphere, ...]:
    d, e1, e2 = anatomy.axis_frame()
    inner = anatomy.lumen_radius_mm + anatomy.wall_thickness_mm + 4.0
    outer = anatomy.fascia_radius_mm - 4.0
    nodes = []
    for radius_range, count in (((3.5, 6.0), malignant), ((1.8, 2.8), benign)):
        for _ in range(count):
            r = rng.uniform(inner, max(inner + 0.5, outer))
            phi = rng.uniform(-math.pi, math.pi)
            s = rng.uniform(-35.0, 35.0)
            centre = (
                np.asarray(anatomy.tumour_centre)
                + s * d
                + r * (math.cos(phi) * e1 + math.sin(phi) * e2)
            )
            nodes.append(Sphere(tuple(float(c) for c in centre), float(rng.uniform(*radius_range))))  # type: ignore[arg-type]
    return tuple(nodes)


def draw_patient(rng: np.random.Generator) -> PatientBiology:
    """Draw one patient, baseline to outcome."""
    age = int(np.clip(round(rng.normal(62, 10)), 30, 88))
    sex = "M" if rng.random() < 0.65 else "F"
    cea = float(np.exp(rng.normal(math.log(4.0), 0.9)))
    ca19_9 = float(np.exp(rng.normal(math.log(12.0), 0.8)))
    subtype = int(rng.choice([1, 2, 3], p=[0.3, 0.35, 0.35]))

    a = rng.uniform(150, 185)
    b = rng.uniform(105, 130)
    lumen = rng.uniform(7, 12)
    wall = rng.uniform(2.5, 4.0)
    fascia = lumen + wall + rng.uniform(15, 25)
    centre = (rng.uniform(-8, 8), 0.25 * b + rng.uniform(-5, 5), rng.uniform(-80, -30))
    anatomy = Anatomy(
        body_half_width_mm=a,
        body_half_depth_mm=b,
        subcutaneous_fat_mm=rng.uniform(12, 30),
        tumour_centre=centre,
        axis_tilt_rad=rng.uniform(0.15, 0.45),
        lumen_radius_mm=lumen,
        wall_thickness_mm=wall,
        fascia_radius_mm=fascia,
    )

    size = rng.normal()
    confined = rng.random() < 0.1
    gap = fascia - lumen - wall
    outer = (
        rng.uniform(0.0, 0.3)
        if confined
        else float(
            np.clip(gap * 0.45 * math.exp(0.45 * size) * rng.uniform(0.6, 1.4), 1.0, gap + 6.0)
        )
    )
    shape = TumourShape(
        angle_centre_rad=rng.uniform(-math.pi, math.pi),
        half_arc_rad=math.pi if rng.random() < 0.15 else rng.uniform(0.6, 1.6),
        half_length_mm=float(np.clip(20 * math.exp(0.25 * size) + rng.normal(0, 3), 10, 40)),
        outer_extent_mm=outer,
        inner_extent_mm=float(np.clip(rng.uniform(2, 6) * math.exp(0.2 * size), 1, 0.7 * lumen)),
        irregularity=tuple(
            (
                float(rng.uniform(0.05, 0.15)),
                int(rng.integers(2, 6)),
                int(rng.integers(1, 4)),
                float(rng.uniform(0, 2 * math.pi)),
            )
            for _ in range(3)
        ),
    )
    pre_m = measure_tumour(anatomy, shape)
    t_stage = _t_stage(anatomy, pre_m)
    crm = pre_m.max_outer_radius_mm >= fascia - 1.0
    n_index = int(
        rng.choice([0, 1, 2], p=[0.45, 0.35, 0.2] if t_stage != "T2" else [0.7, 0.25, 0.05])
    )
    malignant = [0, int(rng.integers(1, 4)), int(rng.integers(4, 7))][n_index]
    emvi = bool(rng.random() < {"T2": 0.1, "T3": 0.35, "T4": 0.6}[t_stage])
    emvi_angle = shape.angle_centre_rad + rng.uniform(-0.5, 0.5) * min(shape.half_arc_rad, 1.0)
    nodes = _draw_nodes(rng, anatomy, malignant, int(rng.integers(0, 3)))
    heterogeneity = float(rng.uniform(0.05, 0.22) + (0.08, -0.03, 0.02)[subtype - 1])
    adc_pre = float(np.clip(rng.normal(0.88, 0.09) - 0.04 * (subtype == 2), 0.6, 1.2))
    t2_signal = float(rng.normal(560, 40) - 60 * (subtype == 3))
    baseline = Timepoint(
        shape=shape,
        anatomy=_with(anatomy, nodes=nodes, emvi_angle_rad=emvi_angle if emvi else None),
        measurements=pre_m,
        t_stage=t_stage,
        n_stage=f"N{n_index}",
        crm_positive=bool(crm),
        emvi=emvi,
        adc=adc_pre,
        heterogeneity=heterogeneity,
        fibrosis=0.0,
        t2_signal=t2_signal,
    )

    # response to therapy
    eta = (
        RESPONSE_INTERCEPT
        - 0.6 * size
        + 0.6 * (t_stage == "T2")
        - 0.5 * (t_stage == "T4")
        - 0.3 * math.log(cea / 4.0)
        + rng.normal(0, 1.0)
    )
    rho = _sigmoid(REGRESSION_SCALE * eta)
    oracle_p_good = _sigmoid(RESPONSE_SLOPE * (rho - RESPONSE_MIDPOINT))
    good = bool(rng.random() < oracle_p_good)
    read = rho + rng.normal(0, 0.1)
    trg = (0 if read > 0.85 else 1) if good else (3 if read < 0.3 else 2)

    post_shape = shape.scaled(
        thickness=float(np.clip(1 - 0.9 * rho + rng.normal(0, 0.05), 0.08, 1.1)),
        length=float(np.clip(1 - 0.6 * rho + rng.normal(0, 0.05), 0.3, 1.05)),
        arc=float(np.clip(1 - 0.4 * rho + rng.normal(0, 0.03), 0.4, 1.0)),
    )
    post_shape = TumourShape(
        angle_centre_rad=post_shape.angle_centre_rad,
        half_arc_rad=max(post_shape.half_arc_rad, 0.35),
        half_length_mm=max(post_shape.half_length_mm, 6.0),
        outer_extent_mm=post_shape.outer_extent_mm,
        inner_extent_mm=max(post_shape.inner_extent_mm, 0.8),
        irregularity=post_shape.irregularity,
    )
    post_nodes = tuple(
        Sphere(n.centre, n.radius_mm * (1 - 0.5 * rho) if n.radius_mm > 3 else n.radius_mm)
        for n in nodes
    )
    post_n_index = 0 if rho > 0.6 else max(0, n_index - int(rng.random() < rho))
    post_emvi = emvi and rho < 0.5
    post_anatomy = _with(
        anatomy, nodes=post_nodes, emvi_angle_rad=emvi_angle if post_emvi else None
    )
    post_m = measure_tumour(post_anatomy, post_shape)
    restaging = Timepoint(
        shape=post_shape,
        anatomy=post_anatomy,
        measurements=post_m,
        t_stage=_t_stage(post_anatomy, post_m),
        n_stage=f"N{post_n_index}",
        crm_positive=bool(post_m.max_outer_radius_mm >= fascia - 1.0),
        emvi=post_emvi,
        adc=float(adc_pre * (1 + 0.55 * rho + rng.normal(0, 0.04))),
        heterogeneity=heterogeneity * (1 - 0.3 * rho),
        fibrosis=float(np.clip(0.9 * rho + rng.normal(0, 0.05), 0.0, 0.92)),
        t2_signal=t2_signal,
    )
    ypn_index = int(np.clip(post_n_index + (rng.random() < 0.15) - (rng.random() < 0.15), 0, 2))

    # outcomes (months)
    log_hazard_dm = (
        math.log(DM_BASE_HAZARD)
        + 0.7 * math.log(max(pre_m.volume_ml, 0.1) / 20.0)
        - 0.6 * (adc_pre - 0.88) / 0.09
        + 0.5 * (heterogeneity - 0.15) / 0.06
        + 0.8 * emvi
        + 0.3 * math.log(cea / 4.0)
        + 0.5 * (ypn_index > 0)
        - 0.5 * good
    )
    log_hazard_local = (
        math.log(LOCAL_BASE_HAZARD)
        + 0.8 * restaging.crm_positive
        + 1.0 * (1 - rho)
        + (0.5, -0.5, 0.0)[subtype - 1]
    )
    follow_up = rng.uniform(18, 84)
    # events are found at follow-up, the first visit about 3 months after surgery
    t_dm = 3.0 + rng.exponential(1.0 / math.exp(log_hazard_dm))
    t_local = 3.0 + rng.exponential(1.0 / math.exp(log_hazard_local))
    t_rec = min(t_dm, t_local)
    return PatientBiology(
        age=age,
        sex=sex,
        cea_ng_ml=cea,
        ca19_9_u_ml=ca19_9,
        distance_anal_verge_mm=float(rng.uniform(30, 110)),
        subtype=subtype,
        baseline=baseline,
        restaging=restaging,
        regression=rho,
        oracle_p_good=oracle_p_good,
        good_response=good,
        trg=trg,
        ypn_stage=f"N{ypn_index}",
        dm_event=bool(t_dm <= follow_up),
        dm_time_months=float(min(t_dm, follow_up)),
        oracle_log_hazard_dm=log_hazard_dm,
        rfs_event=bool(t_rec <= follow_up),
        rfs_time_months=float(min(t_rec, follow_up)),
        oracle_log_hazard_rfs=math.log(math.exp(log_hazard_dm) + math.exp(log_hazard_local)),
    )


def _with(anatomy: Anatomy, **changes: object) -> Anatomy:
    return replace(anatomy, **changes)  # type: ignore[arg-type]
