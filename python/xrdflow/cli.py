"""The ``xrdflow`` command line.

``xrdflow simulate FILE.cif`` (or ``--example NaCl``) prints the space group,
cell, radiation and the list of lines, and optionally writes the pattern as a
two-column text file (``-o``) and a plot (``--plot``).  ``xrdflow dataset
import|generate|dedup|info`` builds and checks sharded data sets (see
:mod:`xrdflow.data.dataset_cli`).

User errors (missing or malformed files, impossible ranges, invalid options)
are reported as one line ``xrdflow: error: ...`` on stderr with exit status 2,
without a traceback; a traceback means a bug in xrdflow. Output files are
written atomically: a temporary file in the target directory, then
``os.replace``, so an interrupted run never leaves a half-written file.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import warnings
from typing import Sequence

import numpy as np

PROG = "xrdflow"


class UserError(Exception):
    """An error in the user's input: printed without a traceback, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose usage errors follow the same 'xrdflow: error:' format."""

    def error(self, message):  # argparse calls this and expects it not to return
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


# --------------------------------------------------------------------- helpers
def _examples_epilog() -> str:
    from . import examples

    width = max(len(n) for n in examples.names())
    rows = "\n".join(f"  {n:<{width}}  {examples.describe(n)}" for n in examples.names())
    return ("bundled examples (use the name instead of FILE, or --example NAME):\n" + rows +
            f"\n\nexample:\n  {PROG} simulate --example NaCl -o NaCl.xy --plot NaCl.png")


def _radiation_arg(text: str):
    """'CuKa', 'MoKa1', or a wavelength in angstrom ('1.5406')."""
    try:
        return float(text)
    except ValueError:
        return text


def _int_at_least(minimum: int):
    """argparse type: an integer >= minimum."""
    what = "a positive integer" if minimum == 1 else f"an integer >= {minimum}"

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value
    return parse


_positive_int = _int_at_least(1)
_nonnegative_int = _int_at_least(0)


def _finite_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _load_structure(args):
    """Structure and a description of where it came from, from FILE or --example."""
    import xrdflow as xf
    from . import examples

    if args.example is not None and args.file is not None:
        raise UserError("give either FILE or --example NAME, not both")
    name = args.example if args.example is not None else args.file
    if name is None:
        raise UserError(f"give a CIF file or a bundled example (--example NAME; one of {', '.join(examples.names())})")
    if args.example is None and not os.path.exists(name):
        # A bare example name ('NaCl') that is not a file in the working directory.
        bare = "/" not in name and os.sep not in name and "." not in name
        if bare and name.lower() in (n.lower() for n in examples.names()):
            example = examples.path(name)
            return xf.Structure.from_cif(example, block=args.block, label=example.stem), f"example {example.stem}"
        raise UserError(f"no such file: {name!r}" + (f" (bundled examples: {', '.join(examples.names())})"
                                                     if bare else ""))
    if args.example is not None:
        try:
            example = examples.path(args.example)
        except ValueError as err:
            raise UserError(str(err)) from None
        return xf.Structure.from_cif(example, block=args.block, label=example.stem), f"example {example.stem}"
    if os.path.isdir(name):
        raise UserError(f"{name!r} is a directory; give a CIF file")
    try:
        with open(name, "rb") as fh:
            fh.read(1)
    except OSError as err:
        raise UserError(f"cannot read {name!r}: {err.strerror or err}") from None
    try:
        return xf.Structure.from_cif(name, block=args.block), name
    except xf.StructureError as err:
        if args.block is None and "block=NAME" in str(err):
            raise UserError(f"{err} (on the command line: --block NAME)") from None
        raise


def _simulator(args):
    import xrdflow as xf

    if args.wavelength is not None and args.radiation is not None:
        raise UserError("give either --radiation or --wavelength, not both")
    radiation = args.wavelength if args.wavelength is not None else args.radiation
    probe = "neutron" if args.neutron else "xray"
    if probe == "neutron":
        if radiation is None:
            raise UserError("--neutron needs the neutron wavelength: add --wavelength LAMBDA (angstrom)")
        if isinstance(radiation, str):
            raise UserError(f"--neutron needs a wavelength in angstrom (--wavelength LAMBDA), not the X-ray tube "
                            f"line {radiation!r}")
    if radiation is None:
        radiation = "CuKa"
    start, stop = args.two_theta
    if not start < stop:
        raise UserError(f"--two-theta START STOP needs START < STOP, got {start:g} {stop:g}")
    return xf.Simulator(radiation=radiation, two_theta=(start, stop), n_points=args.n_points, step=args.step,
                        probe=probe, normalization=args.normalization)


def _nonzero(peaks):
    """Drop lines whose intensity vanishes by symmetry (e.g. Si (222)) but come out
    as round-off; returns the table and how many were dropped."""
    from dataclasses import replace

    if not len(peaks):
        return peaks, 0
    keep = peaks.intensity > 1e-9 * peaks.intensity.max()
    if keep.all():
        return peaks, 0
    fields = {f: getattr(peaks, f)[keep] for f in ("hkl", "d", "two_theta", "F2", "multiplicity", "intensity")}
    return replace(peaks, **fields), int((~keep).sum())


def _radiation_text(sim) -> str:
    rad = sim.radiation
    lines = ", ".join(f"{w:.5f} A" + (f" (weight {g:g})" if len(rad.wavelengths) > 1 else "")
                      for w, g in zip(rad.wavelengths, rad.weights))
    kind = "neutrons" if sim.probe == "neutron" else "X-rays"
    return f"{rad.name}, {kind}: {lines}"


def _header(structure, source, spacegroup, sim, n_lines, n_dropped) -> str:
    a, b, c, alpha, beta, gamma = structure.cell_parameters
    number, symbol = spacegroup
    x = sim.two_theta_deg
    step = (x[-1] - x[0]) / (len(x) - 1)
    rows = [
        ("structure", f"{structure.label or '(no label)'}  {structure.formula}, {structure.n_atoms} atoms in the cell"),
        ("source", source),
        ("space group", f"{symbol} (No. {number})"),
        ("cell", f"a = {a:.5f}  b = {b:.5f}  c = {c:.5f} A   alpha = {alpha:.3f}  beta = {beta:.3f}  "
                 f"gamma = {gamma:.3f} deg   V = {structure.volume:.3f} A^3"),
        ("radiation", _radiation_text(sim)),
        ("2theta", f"{x[0]:g} to {x[-1]:g} deg, {len(x)} points, step {step:.5g} deg"),
        ("lines", f"{n_lines} in range at {sim.radiation.primary_wavelength:.5f} A"
                  + (f" (and {n_dropped} allowed by the space group but of zero intensity, not listed)"
                     if n_dropped else "")),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _write_xy(path, sim, y, structure, spacegroup, source) -> None:
    from . import __version__
    from .plot import atomic_output

    rad = sim.radiation
    unit = {"max": "normalized, strongest point = 1", "area": "normalized, unit area over 2theta in degrees",
            "none": "absolute M |F|^2 LP per degree"}[sim.normalization]
    header = [
        f"xrdflow {__version__} simulated powder pattern",
        f"structure: {structure.label} {structure.formula}, space group {spacegroup[1]} (No. {spacegroup[0]})",
        f"source: {source}",
        f"radiation: {rad.name} ({'neutrons' if sim.probe == 'neutron' else 'X-rays'})",
        "wavelengths (angstrom): " + " ".join(f"{w:.6g}" for w in rad.wavelengths)
        + "   weights: " + " ".join(f"{g:g}" for g in rad.weights),
        f"normalization: {sim.normalization} ({unit})",
        "columns: 2theta (degrees)  intensity",
    ]
    data = np.column_stack([sim.two_theta_deg, np.asarray(y, dtype=np.float64)])
    with atomic_output(path) as tmp:
        np.savetxt(tmp, data, fmt=["%.4f", "%.6g"], header="\n".join(header), comments="# ")


def _plot_title(structure, spacegroup, sim) -> str:
    rad = sim.radiation
    name = structure.label if structure.label and structure.label != structure.formula else ""
    waves = "/".join(f"{w:.5f}" for w in rad.wavelengths)
    if sim.probe == "neutron":
        source = "neutrons"
    elif rad.name.endswith(" A"):  # a bare wavelength
        source = "X-rays"
    else:
        source = rad.name.replace("Ka", " Kα")
    parts = [f"{name}  ({structure.formula}, {spacegroup[1]}, No. {spacegroup[0]})" if name
             else f"{structure.formula}  ({spacegroup[1]}, No. {spacegroup[0]})",
             f"{source}, λ = {waves} Å"]
    return "   —   ".join(parts)


# ------------------------------------------------------------------ commands
def _cmd_simulate(args) -> int:
    import xrdflow as xf

    # Check the outputs before the work, so that a typo does not cost a simulation.
    from .plot import check_output_path, plot_format

    if args.output is not None:
        check_output_path(args.output)
    if args.plot is not None:
        check_output_path(args.plot)
        try:
            plot_format(args.plot)
        except ImportError as err:
            raise UserError(f"--plot: {err}") from None
    structure, source = _load_structure(args)
    sim = _simulator(args)
    spacegroup = xf.space_group(structure)
    peaks, dropped = _nonzero(sim.peaks(structure))
    y = sim.pattern(structure)

    print(_header(structure, source, spacegroup, sim, len(peaks), dropped))
    print()
    if len(peaks):
        limit = args.top if args.top is not None and args.top < len(peaks) else None
        if limit is not None:
            print(f"strongest {limit} of {len(peaks)} lines:")
        print(peaks.to_text(limit))
    else:
        print("no diffraction lines in this 2theta range")

    if args.output is not None:
        _write_xy(args.output, sim, y, structure, spacegroup, source)
        print(f"\nwrote {args.output} ({sim.n_points} points)")
    if args.plot is not None:
        from .plot import plot_pattern

        ylabel = "Intensity (a.u.)" if sim.normalization == "none" else "Intensity (normalized)"
        plot_pattern(sim.two_theta_deg, y, peaks, title=_plot_title(structure, spacegroup, sim),
                     label_top=args.label_top, path=args.plot, intensity_label=ylabel)
        print(f"{'' if args.output is not None else chr(10)}wrote {args.plot}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(prog=PROG, description="Fast powder X-ray and neutron diffraction patterns.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    sim = sub.add_parser(
        "simulate", help="powder pattern and list of lines of one structure",
        description="Simulate the powder diffraction pattern of one structure: print the space group,\n"
                    "cell and list of lines; write the pattern (-o) and a plot (--plot).",
        epilog=_examples_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    sim.add_argument("file", nargs="?", metavar="FILE",
                     help="CIF file (also .cif.gz), or the name of a bundled example")
    sim.add_argument("--example", metavar="NAME", help="simulate a bundled example structure (listed below)")
    sim.add_argument("--block", metavar="NAME", help="data block to read when the CIF has several")
    sim.add_argument("-o", "--output", metavar="OUT.xy",
                     help="write the pattern as two columns (2theta, intensity) with a '#' header")
    sim.add_argument("--plot", metavar="OUT.png", help="write a plot (.png, .pdf, .svg; needs matplotlib)")
    rad = sim.add_mutually_exclusive_group()
    rad.add_argument("--radiation", type=_radiation_arg, metavar="SOURCE",
                     help="X-ray tube: CuKa (Ka1+Ka2 doublet, default), CuKa1, MoKa, CoKa, FeKa, CrKa, AgKa, "
                          "or a wavelength in angstrom")
    rad.add_argument("--wavelength", type=_finite_float, metavar="LAMBDA",
                     help="a single wavelength in angstrom (same as --radiation LAMBDA)")
    sim.add_argument("--neutron", action="store_true",
                     help="neutron diffraction (coherent scattering lengths); needs --wavelength")
    sim.add_argument("--two-theta", nargs=2, type=_finite_float, default=(5.0, 90.0), metavar=("START", "STOP"),
                     help="2theta range in degrees (default 5 90)")
    grid = sim.add_mutually_exclusive_group()
    grid.add_argument("--n-points", type=_positive_int, metavar="N",
                      help="number of grid points (default 4096)")
    grid.add_argument("--step", type=_finite_float, metavar="DEG", help="grid step in degrees instead of --n-points")
    sim.add_argument("--top", type=_positive_int, metavar="N",
                     help="list only the N strongest lines (default: all lines)")
    sim.add_argument("--label-top", type=_nonnegative_int, default=10, metavar="N",
                     help="label the N strongest lines with hkl on the plot (default 10)")
    sim.add_argument("--normalization", choices=("max", "area", "none"), default="max",
                     help="max: strongest point = 1 (default); area: unit area; none: absolute M|F|^2 LP")
    sim.set_defaults(func=_cmd_simulate)

    from .data.dataset_cli import add_dataset_parser

    add_dataset_parser(sub)
    __import__("xrdflow.demo", fromlist=["add_demo_parser"]).add_demo_parser(sub)
    __import__("xrdflow.classify.cli", fromlist=["add_classify_parsers"]).add_classify_parsers(sub)
    __import__("xrdflow.fit.cli", fromlist=["add_fit_parsers"]).add_fit_parsers(sub)
    __import__("xrdflow.evaluate.cli", fromlist=["add_evaluate_parsers"]).add_evaluate_parsers(sub)
    from .train.cli import add_train_parser

    add_train_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (0 success, 2 user error)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version and usage errors
        return exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    from .structure import StructureError

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                return args.func(args)
            finally:
                for w in caught:
                    print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    except BrokenPipeError:  # output piped into e.g. `head`, which has exited
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except (UserError, StructureError, ValueError, OSError) as err:
        message = str(err) or type(err).__name__
        if isinstance(err, OSError) and err.filename is not None and err.strerror:
            message = f"{err.strerror}: {err.filename!r}"
        print(f"{PROG}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
