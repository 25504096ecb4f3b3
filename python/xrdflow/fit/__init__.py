"""Fitting measured powder patterns and identifying phases (issue 7).

>>> from xrdflow.fit import fit_pattern, identify
>>> res = fit_pattern("pattern.xy", ["phase.cif"], radiation="CuKa")   # doctest: +SKIP
>>> print(res.summary()); res.plot("fit.png"); res.save_json("fit.json")   # doctest: +SKIP
>>> ranked = identify("pattern.xy", "candidates/", radiation="CuKa")   # doctest: +SKIP

* :mod:`.model` -- calculated pattern of a phase mixture for refinable parameters;
* :mod:`.refine` -- :func:`fit_pattern`, staged least squares (:class:`FitConfig`);
* :mod:`.report` -- :class:`FitResult`, uncertainties, R factors, JSON;
* :mod:`.plot` -- the Rietveld picture;
* :mod:`.identify` -- :func:`identify`, screening + fits of candidate phases and mixtures;
  :func:`fit_candidates`, single-phase fits of a short list (``xrdflow search --rerank fit``).
"""
from .identify import Candidate, IdentifyResult, fit_candidates, fit_order, identify, load_candidates
from .refine import FitConfig, as_pattern_data, fit_pattern
from .report import FitResult, PhaseResult

__all__ = ["Candidate", "FitConfig", "FitResult", "IdentifyResult", "PhaseResult", "as_pattern_data", "fit_pattern",
           "fit_candidates", "fit_order", "identify", "load_candidates"]
