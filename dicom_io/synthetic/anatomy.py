"""Analytic pelvic anatomy with a rectal tumour, evaluated at any point in patient space (LPS, mm).

The rectum is a straight tube around an axis tilted in the sagittal plane. The tumour grows in the
rectal wall around that axis: in cylindrical coordinates (radius r, angle phi, position s along the
axis) it spans an arc of the wall over a length of the axis and grows outwards into the mesorectum
and inwards into the lumen, with a smooth irregular outline. Everything a label map, a contour or a
measurement needs follows from one implicit function, so masks and images always agree.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from enum import IntEnum

import numpy as np
from numpy.typing import NDArray
from scipy.spatial import ConvexHull, QhullError
from scipy.spatial.distance import pdist

FloatArray = NDArray[np.float64]

_EDGE_SCALE_MM = 10.0  # converts the unitless tumour-footprint term of the implicit function to mm
_FOOTPRINT_THRESHOLD = 0.05


class Tissue(IntEnum):
    """Tissue classes of the phantom, in the order of the label map values."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    BLADDER = 3
    BONE = 4
    FASCIA = 5
    WALL = 6
    LUMEN = 7
    TUMOUR = 8
    NODE = 9
    EMVI = 10


@dataclass(frozen=True)
class TumourShape:
    """A wall-based rectal tumour in cylindrical coordinates about the rectal axis.

    ``half_arc_rad`` >= pi makes it circumferential (an annulus on axial slices). Extents are
    the largest growth beyond the outer wall surface and into the lumen, at the tumour's centre.
    ``irregularity`` holds (amplitude, angular order, axial order, phase) terms that modulate the
    outward growth.
    """

    angle_centre_rad: float
    half_arc_rad: float
    half_length_mm: float
    outer_extent_mm: float
    inner_extent_mm: float
    irregularity: tuple[tuple[float, int, int, float], ...] = ()

    def scaled(self, thickness: float, length: float, arc: float) -> TumourShape:
        """The same tumour with its outward/inward growth, length and arc multiplied."""
        return TumourShape(
            angle_centre_rad=self.angle_centre_rad,
            half_arc_rad=self.half_arc_rad * arc,
            half_length_mm=self.half_length_mm * length,
            outer_extent_mm=self.outer_extent_mm * thickness,
            inner_extent_mm=self.inner_extent_mm * thickness,
            irregularity=self.irregularity,
        )


@dataclass(frozen=True)
class Sphere:
    """A small round structure (lymph node)."""

    centre: tuple[float, float, float]
    radius_mm: float


@dataclass(frozen=True)
class Anatomy:
    """One patient's pelvis. ``tumour_centre`` is where the tumour sits on the rectal axis."""

    body_half_width_mm: float
    body_half_depth_mm: float
    subcutaneous_fat_mm: float
    tumour_centre: tuple[float, float, float]
    axis_tilt_rad: float
    lumen_radius_mm: float
    wall_thickness_mm: float
    fascia_radius_mm: float
    nodes: tuple[Sphere, ...] = ()
    emvi_angle_rad: float | None = None

    @property
    def axis(self) -> FloatArray:
        """Unit direction of the rectal axis (mostly cranio-caudal, tilted towards posterior)."""
        a = self.axis_tilt_rad
        return np.array([0.0, np.sin(a), np.cos(a)])

    def axis_frame(self) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(axis, e1, e2): e1 points to patient left, e2 = axis x e1 completes the frame."""
        d = self.axis
        e1 = np.array([1.0, 0.0, 0.0])
        e2 = np.cross(d, e1)
        return d, e1, e2

    def cylindrical(self, points: FloatArray) -> tuple[FloatArray, FloatArray, FloatArray]:
        """(r, phi, s) of ``points`` (..., 3) about the rectal axis through the tumour centre."""
        d, e1, e2 = self.axis_frame()
        q = points - np.asarray(self.tumour_centre)
        s = q @ d
        x1 = q @ e1
        x2 = q @ e2
        return np.hypot(x1, x2), np.arctan2(x2, x1), s

    def point_at(self, r: FloatArray, phi: FloatArray, s: FloatArray) -> FloatArray:
        """Patient coordinates of cylindrical coordinates (inverse of :meth:`cylindrical`)."""
        d, e1, e2 = self.axis_frame()
        r, phi, s = np.broadcast_arrays(r, phi, s)
        return (
            np.asarray(self.tumour_centre)
            + s[..., None] * d
            + (r * np.cos(phi))[..., None] * e1
            + (r * np.sin(phi))[..., None] * e2
        )


def _window(u: FloatArray) -> FloatArray:
    """Flat-topped window: 1 at 0, falling to 0 at |u| = 1."""
    return np.clip(1.0 - np.abs(u) ** 3, 0.0, None) ** (1.0 / 3.0)


def _footprint(shape: TumourShape, phi: FloatArray, s: FloatArray) -> FloatArray:
    if shape.half_arc_rad >= np.pi:
        angular = np.ones_like(phi)
    else:
        dphi = np.angle(np.exp(1j * (phi - shape.angle_centre_rad)))
        angular = _window(dphi / shape.half_arc_rad)
    return np.asarray(angular * _window(s / shape.half_length_mm))


def _irregularity(shape: TumourShape, phi: FloatArray, s: FloatArray) -> FloatArray:
    factor = np.ones_like(phi)
    for amplitude, k, m, phase in shape.irregularity:
        factor = factor + amplitude * np.cos(k * phi + phase) * np.cos(
            m * np.pi * s / (2 * shape.half_length_mm) + phase / 2
        )
    return np.clip(factor, 0.3, None)


def tumour_radii(
    anatomy: Anatomy, shape: TumourShape, phi: FloatArray, s: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """(footprint, inner radius, outer radius) of the tumour at angles ``phi``, positions ``s``."""
    g = _footprint(shape, phi, s)
    outer_wall = anatomy.lumen_radius_mm + anatomy.wall_thickness_mm
    r_out = outer_wall + shape.outer_extent_mm * g * _irregularity(shape, phi, s)
    r_in = anatomy.lumen_radius_mm - shape.inner_extent_mm * g
    return g, r_in, r_out


def _max_outer_radius(anatomy: Anatomy, shape: TumourShape) -> float:
    amplitude = sum(abs(a) for a, *_ in shape.irregularity)
    outer_wall = anatomy.lumen_radius_mm + anatomy.wall_thickness_mm
    return outer_wall + shape.outer_extent_mm * (1 + amplitude)


def tumour_implicit(anatomy: Anatomy, shape: TumourShape, points: FloatArray) -> FloatArray:
    """Signed function of ``points`` (..., 3): negative inside the tumour, zero on its surface (mm).

    Far from the tumour (beyond its length or largest radius) the value is a positive bound, not
    the exact function, which is all a contour tracer or an inside test needs.
    """
    r, phi, s = anatomy.cylindrical(points)
    r_max = _max_outer_radius(anatomy, shape)
    out = np.maximum(np.abs(s) - shape.half_length_mm, r - r_max) + 1.0
    near = out < 1.0 + 1e-9
    if near.any():
        g, r_in, r_out = tumour_radii(anatomy, shape, phi[near], s[near])
        out[near] = np.maximum.reduce(
            [r[near] - r_out, r_in - r[near], (_FOOTPRINT_THRESHOLD - g) * _EDGE_SCALE_MM]
        )
    return np.asarray(out)


def _in_ellipse(
    x: FloatArray, y: FloatArray, cx: float, cy: float, ax: float, ay: float
) -> NDArray[np.bool_]:
    return np.asarray(((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0)


def label_map(anatomy: Anatomy, shape: TumourShape, points: FloatArray) -> NDArray[np.uint8]:
    """Tissue label (:class:`Tissue`) at each of ``points`` (..., 3)."""
    x, y = points[..., 0], points[..., 1]
    a, b = anatomy.body_half_width_mm, anatomy.body_half_depth_mm
    fat = anatomy.subcutaneous_fat_mm
    labels = np.zeros(points.shape[:-1], dtype=np.uint8)
    labels[_in_ellipse(x, y, 0, 0, a, b)] = Tissue.FAT
    inner = _in_ellipse(x, y, 0, 0, a - fat, b - fat)
    for sign in (-1.0, 1.0):  # gluteal muscles and obturator internus, both sides
        labels[inner & _in_ellipse(x, y, sign * 0.42 * a, 0.55 * b, 0.32 * a, 0.3 * b)] = (
            Tissue.MUSCLE
        )
        labels[inner & _in_ellipse(x, y, sign * 0.62 * a, -0.05 * b, 0.1 * a, 0.32 * b)] = (
            Tissue.MUSCLE
        )
    cx, cy, _ = anatomy.tumour_centre
    labels[inner & _in_ellipse(x, y, cx, cy - 0.6 * b, 0.3 * a, 0.22 * b)] = Tissue.BLADDER
    sacrum_y = cy + anatomy.fascia_radius_mm + 22.0
    labels[inner & _in_ellipse(x, y, cx, sacrum_y, 40.0, 14.0)] = Tissue.BONE

    r, phi, s = anatomy.cylindrical(points)
    lumen = anatomy.lumen_radius_mm
    wall = lumen + anatomy.wall_thickness_mm
    fascia = anatomy.fascia_radius_mm
    labels[r < fascia + 1.0] = Tissue.FASCIA
    labels[r < fascia] = Tissue.FAT
    for node in anatomy.nodes:
        inside = np.linalg.norm(points - np.asarray(node.centre), axis=-1) < node.radius_mm
        labels[inside] = Tissue.NODE
    labels[r < wall] = Tissue.WALL
    labels[r < lumen] = Tissue.LUMEN
    if anatomy.emvi_angle_rad is not None:
        # a tumour-filled vein leaving the tumour's outer surface into the mesorectal fat
        dphi = np.abs(np.angle(np.exp(1j * (phi - anatomy.emvi_angle_rad))))
        vessel = (dphi * r < 1.6) & (np.abs(s - 0.3 * shape.half_length_mm) < 1.6)
        labels[vessel & (r > wall) & (r < fascia - 3.0)] = Tissue.EMVI
    labels[tumour_implicit(anatomy, shape, points) < 0] = Tissue.TUMOUR
    return labels


@dataclass(frozen=True)
class TumourMeasurements:
    """What a radiologist would measure on the tumour, computed from the analytic shape."""

    volume_ml: float
    longest_diameter_mm: float
    max_wall_thickness_mm: float
    extramural_depth_mm: float
    max_outer_radius_mm: float


def measure_tumour(anatomy: Anatomy, shape: TumourShape, samples: int = 360) -> TumourMeasurements:
    """Volume (exact integral in cylindrical coordinates), longest diameter, MWT of the tumour."""
    phi = np.linspace(-np.pi, np.pi, samples, endpoint=False) + np.pi / samples
    s = np.linspace(-shape.half_length_mm, shape.half_length_mm, samples // 2)
    dphi = 2 * np.pi / samples
    ds = s[1] - s[0]
    pp, ss = np.meshgrid(phi, s, indexing="ij")
    g, r_in, r_out = tumour_radii(anatomy, shape, pp, ss)
    inside = g > _FOOTPRINT_THRESHOLD
    volume_mm3 = float(np.sum(((r_out**2 - r_in**2) / 2)[inside]) * dphi * ds)
    thickness = np.where(inside, r_out - r_in, 0.0)
    outer_wall = anatomy.lumen_radius_mm + anatomy.wall_thickness_mm
    coarse = (slice(None, None, 3), slice(None, None, 3))  # enough points for the chord
    keep = inside[coarse]
    pc, sc = pp[coarse][keep], ss[coarse][keep]
    surface = np.concatenate(
        [
            anatomy.point_at(r_out[coarse][keep], pc, sc).reshape(-1, 3),
            anatomy.point_at(r_in[coarse][keep], pc, sc).reshape(-1, 3),
        ]
    )
    # the longest chord joins two vertices of the convex hull (a flat set has no hull: keep all)
    with contextlib.suppress(QhullError):
        surface = surface[ConvexHull(surface).vertices]
    surface = surface[:: max(1, len(surface) // 800)]  # dense enough: error well under 0.5 mm
    longest = float(pdist(surface).max()) if len(surface) > 1 else 0.0
    return TumourMeasurements(
        volume_ml=volume_mm3 / 1000.0,
        longest_diameter_mm=longest,
        max_wall_thickness_mm=float(thickness.max()),
        extramural_depth_mm=float(max(0.0, (r_out[inside] - outer_wall).max())),
        max_outer_radius_mm=float(r_out[inside].max()),
    )
