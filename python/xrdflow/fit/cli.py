"""``xrdflow fit`` and ``xrdflow identify`` (registered by :func:`add_fit_parsers`)."""
from __future__ import annotations

import argparse
import os

from ..cli import _radiation_arg


def _read(path: str, radiation):
    from ..io import read_pattern

    if not os.path.exists(path):
        raise FileNotFoundError(2, "No such file or directory", path)
    return read_pattern(path, wavelength=radiation)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("pattern", metavar="PATTERN", help="measured pattern (.xy, .csv, .dat, .xrdml, .gsa, pdCIF, ...)")
    p.add_argument("--wavelength", "--radiation", dest="radiation", type=_radiation_arg, metavar="SOURCE",
                   help="CuKa (Ka1+Ka2, ratio 0.5), CuKa1, MoKa, ... or a wavelength in angstrom; "
                        "needed when the file does not state it")
    p.add_argument("--json", metavar="OUT.json", help="write the results as JSON (atomically)")
    p.add_argument("--plot", metavar="OUT.png", help="write the Rietveld picture (needs matplotlib)")
    p.add_argument("--background-terms", type=int, default=None, metavar="N",
                   help="Chebyshev background terms (default 8 for fit, 8 for identify)")


def _config(args):
    from .refine import FitConfig

    kw = {}
    if args.background_terms is not None:
        kw["background_terms"] = args.background_terms
    for name in ("profile", "refine_displacement", "refine_b_overall", "goniometer_radius_mm"):
        if getattr(args, name, None) is not None:
            kw[name] = getattr(args, name)
    if getattr(args, "po", None) is not None:
        kw["preferred_orientation"] = True
        kw["po_direction"] = tuple(args.po)
    if getattr(args, "two_theta", None) is not None:
        kw["two_theta_range"] = tuple(args.two_theta)
    return FitConfig(**kw)


def _cmd_fit(args) -> int:
    from .refine import fit_pattern

    pattern = _read(args.pattern, args.radiation)
    res = fit_pattern(pattern, args.structures, radiation=args.radiation, config=_config(args))
    print(res.summary())
    if args.json:
        res.save_json(args.json, arrays=args.json_arrays)
        print(f"wrote {args.json}")
    if args.plot:
        res.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def _cmd_identify(args) -> int:
    from .identify import identify

    pattern = _read(args.pattern, args.radiation)
    cfg = _config(args) if args.background_terms is not None else None
    if cfg is not None:
        cfg.cell_search, cfg.zero_search_deg, cfg.max_nfev = 0.004, 0.1, 40
    res = identify(pattern, args.candidates, radiation=args.radiation, k=args.k, max_phases=args.max_phases,
                   fit_config=cfg, progress=not args.quiet)
    print(res.summary(top=args.k))
    if args.json:
        res.save_json(args.json)
        print(f"wrote {args.json}")
    if args.plot and res.mixture_fit is not None:
        res.mixture_fit.plot(args.plot)
        print(f"wrote {args.plot}")
    return 0


def add_fit_parsers(sub) -> None:
    """Register ``fit`` and ``identify`` on the main parser's subparsers."""
    fit = sub.add_parser(
        "fit", help="whole-pattern (Rietveld) fit of known structures to a measured pattern",
        description="Refine scale, zero shift, cell (free parameters of the crystal system), TCH profile and a "
                    "Chebyshev background\n(optionally displacement, March-Dollase texture, overall B) of the "
                    "given structures against a\nmeasured pattern; print R factors, refined values with standard "
                    "uncertainties and weight fractions.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  xrdflow fit pattern.xy phase1.cif phase2.cif --wavelength CuKa --json fit.json "
               "--plot fit.png")
    _add_common(fit)
    fit.add_argument("structures", nargs="+", metavar="STRUCTURE.cif", help="one CIF per phase")
    fit.add_argument("--profile", choices=("caglioti", "uvw", "size_strain", "fixed"), default=None,
                     help="refined profile: U,V,W,X,Y (caglioti, default), U,V,W, crystallite size + microstrain, "
                          "or none")
    fit.add_argument("--displacement", dest="refine_displacement", action="store_true", default=None,
                     help="also refine the sample displacement (shift -2 s cos(theta)/R)")
    fit.add_argument("--goniometer-radius", dest="goniometer_radius_mm", type=float, default=None, metavar="MM",
                     help="goniometer radius R in mm for the displacement (default 240)")
    fit.add_argument("--b-overall", dest="refine_b_overall", action="store_true", default=None,
                     help="refine an overall Debye-Waller B per phase")
    fit.add_argument("--po", nargs=3, type=int, metavar=("H", "K", "L"),
                     help="refine March-Dollase preferred orientation along this hkl")
    fit.add_argument("--two-theta", nargs=2, type=float, metavar=("START", "STOP"),
                     help="fit only this 2theta range (degrees)")
    fit.add_argument("--json-arrays", action="store_true", help="include the observed/calculated curves in --json")
    fit.set_defaults(func=_cmd_fit)

    ide = sub.add_parser(
        "identify", help="rank candidate phases (and mixtures) for a measured pattern",
        description="Screen candidate structures against a measured pattern (peak-tolerant similarity with a "
                    "+-1.5 %\ncell search), fit the k best by whole-pattern least squares and build mixtures "
                    "greedily.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="example:\n  xrdflow identify pattern.xy --candidates cifs/ -k 5 --max-phases 3 --wavelength CuKa")
    _add_common(ide)
    ide.add_argument("--candidates", required=True, metavar="DIR_OR_DATASET",
                     help="CIF folder, CSV(.gz) with a cif column, CIF file or xrdflow dataset directory")
    ide.add_argument("-k", type=int, default=5, help="candidates to fit after the screen (default 5)")
    ide.add_argument("--max-phases", type=int, default=3, help="largest mixture to try (default 3)")
    ide.add_argument("--quiet", action="store_true", help="no progress bars")
    ide.set_defaults(func=_cmd_identify)
