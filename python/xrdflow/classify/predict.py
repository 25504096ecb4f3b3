"""Classifying one measured pattern: onto the model's grid, top-k of every head, readable output.

The pattern is moved onto the classifier's 2-theta grid through the d-spacing when its
wavelength differs from the model's: d = lambda_meas / (2 sin theta_meas) (Bragg's law), then
2 theta_model = 2 asin(lambda_model / (2 d)); the intensity is interpolated linearly.  Grid
points outside the measured range take the smallest measured intensity (the encoder normalises
each pattern by its own min and max, so a constant fill adds no peak).

Space groups that share an extinction group give the same line positions and are shown as one
set (their summed probability, then the members with their own probabilities): the pattern
cannot tell them apart, only intensities can, and weakly.
"""
from __future__ import annotations

import numpy as np
import torch

from ..data import labels as L
from ..io.grid import GridMismatchError, pattern_on_model_grid

__all__ = ["pattern_on_grid", "classify_patterns", "format_result"]


def pattern_on_grid(pattern, sim, wavelength=None) -> tuple[np.ndarray, dict]:
    """``(y, info)``: the measured pattern's intensity on ``sim``'s 2-theta grid (see module docs).

    wavelength: overrides the file's (anything ``Simulator(radiation=...)`` takes); when neither
    says, the model's wavelength is assumed and ``info["wavelength_assumed"]`` is True.  The
    conversion is :func:`xrdflow.io.pattern_on_model_grid` with policies "assume_model" and "override".
    """
    tt = np.asarray(pattern.two_theta_deg, dtype=np.float64)
    inten = np.asarray(pattern.intensity, dtype=np.float64)
    if tt.ndim != 1 or tt.shape != inten.shape or len(tt) < 2:
        raise ValueError("the pattern needs matching 1-D two_theta_deg and intensity arrays of at least 2 points")
    if not (np.all(np.isfinite(tt)) and np.all(np.isfinite(inten))):
        raise ValueError("the pattern contains NaN or infinite values; clean the file first")
    if np.any(np.diff(tt) <= 0):
        raise ValueError("two_theta_deg must be strictly increasing")
    try:
        y, shared = pattern_on_model_grid(pattern, sim, wavelength, missing_wavelength="assume_model",
                                          conflicting_wavelength="override", use_reader_radiation=False,
                                          same_wavelength_tol_angstrom=1e-5)
    except GridMismatchError as e:
        if e.reason == "unreachable":
            raise ValueError(f"no measured point reaches a d-spacing visible at the model's wavelength "
                             f"{e.details['wavelength_model']} A (pattern measured at "
                             f"{e.details['wavelength_pattern']} A)") from None
        (t0, t1), (g0, g1, _) = e.details["two_theta_range_deg"], e.details["grid_deg"]
        raise ValueError(f"the measured range {t0:.2f}-{t1:.2f} deg 2theta (at the model's wavelength) does "
                         f"not overlap the model's grid {g0:.2f}-{g1:.2f} deg") from None
    info = {"wavelength_model": shared["wavelength_model_angstrom"],
            "wavelength_pattern": shared["wavelength_pattern_angstrom"],
            "wavelength_assumed": shared["wavelength_source"] == "assumed", "converted": shared["converted"],
            "coverage": shared["coverage"], "grid_deg": shared["grid_deg"]}
    return y, info


@torch.no_grad()
def classify_patterns(model, y, k: int = 5) -> list[dict]:
    """Top-k of every head for (N, n_points) patterns on the model's grid; one dict per pattern."""
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    y = torch.as_tensor(np.asarray(y, dtype=np.float32))
    if y.ndim == 1:
        y = y[None]
    model.eval()
    probs = model.predict_proba(y)
    scheme = model.cfg.scheme
    sg_to_eg = model.sg_to_eg.cpu().numpy()
    out = []
    for i in range(y.shape[0]):
        p_cs = probs["crystal_system"][i].numpy()
        p_eg = probs["extinction_group"][i].numpy()
        p_sg = probs["space_group"][i].numpy()
        cs = [(L.CRYSTAL_SYSTEMS[j], float(p_cs[j])) for j in np.argsort(-p_cs)[:k]]
        eg = [{"id": int(j), "name": L.extinction_group_name(int(j), scheme), "p": float(p_eg[j]),
               "members": list(L.extinction_group_members(int(j), scheme))} for j in np.argsort(-p_eg)[:k]]
        sums = np.zeros(len(p_eg))
        np.add.at(sums, sg_to_eg, p_sg)
        sets = []
        for j in np.argsort(-sums)[:k]:
            members = [sg for sg in L.extinction_group_members(int(j), scheme)]
            members.sort(key=lambda sg: -p_sg[sg - 1])
            sets.append({"extinction_group": int(j), "p": float(sums[j]),
                         "members": [(int(sg), L.space_group_symbol(sg), float(p_sg[sg - 1])) for sg in members]})
        top_sg = [(int(j + 1), L.space_group_symbol(int(j + 1)), float(p_sg[j])) for j in np.argsort(-p_sg)[:k]]
        out.append({"crystal_system": cs, "extinction_group": eg, "space_group_sets": sets, "space_group": top_sg})
    return out


def _pct(p: float) -> str:
    return f"{100 * p:5.1f} %"


def format_result(res: dict, info: dict | None = None, source: str = "") -> str:
    """Plain-text report of one :func:`classify_patterns` entry."""
    lines = []
    if source:
        lines.append(f"pattern: {source}")
    if info is not None:
        lo, hi, n = info["grid_deg"]
        note = ""
        if info["wavelength_assumed"]:
            note = " (the file gives no wavelength: assumed the model's; pass --wavelength)"
        elif info["converted"]:
            note = f" (converted from {info['wavelength_pattern']:.5f} A through d-spacing)"
        lines.append(f"model grid: 2theta {lo:g}-{hi:g} deg, {n} points, wavelength {info['wavelength_model']:.5f} A"
                     f"{note}; the pattern covers {100 * info['coverage']:.0f} % of it")
    lines.append("crystal system:")
    for r, (name, p) in enumerate(res["crystal_system"], 1):
        lines.append(f"  {r}. {_pct(p)}  {name}")
    lines.append("extinction group (head):")
    for r, e in enumerate(res["extinction_group"], 1):
        lines.append(f"  {r}. {_pct(e['p'])}  {e['name']}")
    lines.append("space group (groups in one set share an extinction group: the pattern cannot tell them apart):")
    for r, s in enumerate(res["space_group_sets"], 1):
        names = " | ".join(f"{sym} ({sg})" for sg, sym, _ in s["members"])
        lines.append(f"  {r}. {_pct(s['p'])}  {{{names}}}" if len(s["members"]) > 1 else
                     f"  {r}. {_pct(s['p'])}  {names}")
        if len(s["members"]) > 1:
            lines.append("           within the set: " + ", ".join(f"{sym} {_pct(p).strip()}"
                                                                   for _, sym, p in s["members"]))
    return "\n".join(lines)
