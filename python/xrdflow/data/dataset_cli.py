"""``xrdflow dataset ...``: build, check and de-duplicate sharded data sets.

::

    xrdflow dataset import SRC -o DIR [--shard-size N] [--with-reflections] [--resume]
    xrdflow dataset generate --random N -o DIR [--seed S] [--max-atoms M] [--shard-size K]
                             [--max-attempts A] [--skip-failures]
                             [--workers W] [--resume] [--with-reflections]
    xrdflow dataset dedup SRC [-o DIR] [--against OTHER ...] [--json OUT]
    xrdflow dataset info DIR [--json]

``SRC`` / ``OTHER`` are anything :func:`xrdflow.data.load_structures` reads (a
CSV(.gz) table with a ``cif`` column, a folder of CIF files, a CIF file, an
extxyz file) or a data set directory written by these commands.  Data sets are
described in :mod:`xrdflow.data.shards`.

``import`` and ``generate`` write shard by shard, atomically: after an
interruption (Ctrl-C, kill, a crash) the same command with ``--resume``
keeps the complete shards (checking their sha256) and produces only the
missing ones; the result is the data set one uninterrupted run gives.  A
resumed run must describe the same data set (same source or seed, n,
--max-atoms, --shard-size, --with-reflections...), else it is refused.

``generate --skip-failures`` gives each index at most ``--max-attempts``
attempts (``on_failure="skip"`` of
:func:`xrdflow.data.random_crystals.generate_random_crystals`) and leaves out
an index whose attempts all fail: the data set holds the crystals found, in
index order (ids ``random-<seed>-<index>``), and its manifest params list the
skipped ``[index, space group]`` pairs (``skipped``) and their counts per
space group (``skipped_by_space_group``), added when the run completes.  Its
shards are filled in item order, so ``--resume`` reads the kept shards back,
continues after the last index they hold, and ends with the data set an
uninterrupted run writes.

User errors exit with status 2 and one ``xrdflow: error: ...`` line, as for
every xrdflow command (see :mod:`xrdflow.cli`).
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field

import numpy as np

from ..cli import PROG, UserError, _int_at_least, _positive_int, _radiation_arg

__all__ = ["add_dataset_parser"]

#: Failures listed on the terminal (all of them go to DIR/failures.json).
SHOW_FAILURES = 5
FAILURES_FILE = "failures.json"


# ------------------------------------------------------------------ helpers
def _progress() -> bool:
    """Progress bars only on a terminal."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def _simulator(args):
    import xrdflow as xf

    if not (args.with_reflections or args.with_patterns):
        return None
    return xf.Simulator(radiation=args.radiation, two_theta=(5.0, 90.0), n_points=args.n_points)


def _content_hash(ids, structures) -> str:
    """sha256 of the ids and every structure array, in order (identifies an imported source)."""
    h = hashlib.sha256()
    for ident, s in zip(ids, structures):
        h.update(ident.encode("utf-8", "surrogatepass") + b"\0")
        for name in ("lattice", "frac", "numbers", "charges", "occupancy", "b_iso"):
            h.update(np.ascontiguousarray(getattr(s, name)).tobytes())
    return h.hexdigest()


def _check_out(path, resume: bool):
    from .shards import check_output

    try:
        return check_output(path, resume=resume)
    except (ValueError, FileNotFoundError) as err:
        raise UserError(str(err)) from None


def _write(out, source, *, interrupted_hint: str, **kwargs):
    """write_dataset with a hint on Ctrl-C."""
    from .shards import write_dataset

    try:
        return write_dataset(out, source, progress=_progress(), **kwargs)
    except KeyboardInterrupt:
        print(f"{PROG}: stopped; the complete shards in {str(out)!r} are kept: {interrupted_hint}", file=sys.stderr)
        raise


@dataclass
class _Source:
    """Structures read from a file/folder or a data set directory."""

    path: str
    ids: list
    structures: list
    failures: list = field(default_factory=list)
    dataset: object = None   # ShardedDataset when the source is one


def _load(path: str, *, workers=None, what="SRC") -> _Source:
    from .readers import load_structures
    from .shards import ShardedDataset, is_dataset

    if not os.path.exists(path):
        raise UserError(f"{what}: no such file or folder: {path!r}")
    if is_dataset(path):
        ds = ShardedDataset(path)
        ids, structures = ds.ids(), ds.structures()
        return _Source(path, ids, structures, dataset=ds)
    with warnings.catch_warnings():
        # The failures are reported by the caller, with their reasons.
        warnings.filterwarnings("ignore", category=RuntimeWarning, message=r".*could not be read and were skipped")
        res = load_structures(path, workers=workers, progress=_progress())
    return _Source(path, list(res.ids), list(res.structures), failures=list(res.failures))


def _failure_lines(failures) -> list[str]:
    lines = [f"  {ident}: {reason}" for ident, reason in failures[:SHOW_FAILURES]]
    if len(failures) > SHOW_FAILURES:
        lines.append(f"  ... and {len(failures) - SHOW_FAILURES} more")
    return lines


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


# ------------------------------------------------------------------ import
def _cmd_import(args) -> int:
    from .shards import write_json

    out = _check_out(args.output, args.resume)
    if not os.path.exists(args.source):
        raise UserError(f"no such file or folder: {args.source!r}")
    if os.path.abspath(args.source) == os.path.abspath(out):
        raise UserError("SRC and -o DIR are the same")
    sim = _simulator(args)
    src = _load(args.source, workers=args.workers)
    if src.dataset is not None:
        raise UserError(f"{args.source!r} is already an xrdflow data set; copy it, or use "
                        f"'{PROG} dataset dedup {args.source} -o DIR' to write a de-duplicated copy")
    n_failed = len(src.failures)
    if not src.structures:
        example = f", e.g. {src.failures[0][0]}: {src.failures[0][1]}" if src.failures else ""
        raise UserError(f"no structure could be read from {args.source!r} ({n_failed} entries failed{example})")
    if len(set(src.ids)) != len(src.ids):
        warnings.warn(f"{len(src.ids) - len(set(src.ids))} ids of {args.source} occur more than once; "
                      f"'{PROG} dataset dedup' groups such entries", RuntimeWarning)
    params = {"kind": "import", "source": os.path.abspath(args.source), "n_items": len(src.ids),
              "n_failed": n_failed, "content_sha256": _content_hash(src.ids, src.structures)}
    out.mkdir(exist_ok=True)
    write_json(out / FAILURES_FILE, {"source": os.path.abspath(args.source), "n_loaded": len(src.ids),
                                     "n_failed": n_failed,
                                     "failures": [{"id": i, "reason": r} for i, r in src.failures]})
    items = list(zip(src.ids, src.structures))
    result = _write(out, items, shard_size=args.shard_size, resume=args.resume, params=params, simulator=sim,
                    with_reflections=args.with_reflections, with_patterns=args.with_patterns,
                    desc="importing", interrupted_hint="run the same command with --resume to finish")
    print(f"imported {result.n_items} structures from {args.source} into {out}: {result.n_shards} shard(s) of "
          f"up to {args.shard_size}, {result.written} written"
          + (f", {result.reused} kept from an earlier run" if result.reused else ""))
    if n_failed:
        print(f"{n_failed} entries could not be read (all listed in {out / FAILURES_FILE}):")
        print("\n".join(_failure_lines(src.failures)))
    return 0


# ------------------------------------------------------------------ generate
#: Manifest params that a --skip-failures run adds when it completes (not part of what a resume must match).
_SKIP_RESULT_KEYS = ("n_found", "n_skipped", "skipped_by_space_group", "skipped")


def _index_of(ident: str, seed: int) -> int:
    prefix = f"random-{seed}-"
    if not ident.startswith(prefix) or not ident[len(prefix):].isdigit():
        raise UserError(f"cannot resume: the data set holds the id {ident!r}, not one of 'random-{seed}-<index>'")
    return int(ident[len(prefix):])


def _kept_prefix(out, shard_size: int, seed: int):
    """Items of the complete, intact shards 0..j-1 of an earlier --skip-failures run (lists, one per shard)."""
    from .shards import MANIFEST, Item, ShardedDataset

    if not (out / MANIFEST).exists():
        return
    try:
        ds = ShardedDataset(out, verify="lazy", allow_incomplete=True)
    except (ValueError, OSError):
        return  # write_dataset reports (or rewrites) what is wrong; regenerate from the start
    for k, e in enumerate(ds.shards):
        if e["start"] != k * shard_size or e["n_items"] != shard_size:
            return
        try:
            data = ds.read_shard(k, parts=("structures", "labels"))
        except (ValueError, OSError):
            return  # damaged: write_dataset rewrites it from the regenerated items
        sgs = data.labels["space_group"]
        yield [Item(ident, st, int(sg)) for ident, st, sg in zip(data.ids, data.structures, sgs)]


def _cmd_generate(args) -> int:
    out = _check_out(args.output, args.resume)
    import importlib

    seed, n, max_atoms, weights = args.seed, args.random, args.max_atoms, args.space_groups
    # Only options the user gave reach the generator (and the params), so that data sets written
    # before these options existed still resume.
    options = {}
    try:
        random_crystals = importlib.import_module("xrdflow.data.random_crystals")
        if args.max_attempts is not None:
            options["max_attempts"] = args.max_attempts
        if args.skip_failures:
            # What is skipped depends on the attempt budget: always recorded.
            options.setdefault("max_attempts", random_crystals.DEFAULT_MAX_ATTEMPTS)
            options["on_failure"] = "skip"
        # No crystals, but the checks: PyXtal present, the options possible (before any file is written).
        random_crystals.generate_random_crystals(0, seed=seed, space_groups=weights, max_atoms=max_atoms,
                                                 progress=False, **options)
    except ImportError as err:
        raise UserError(f"random crystal generation is not available: {err}") from None
    sim = _simulator(args)
    try:
        from importlib.metadata import version

        pyxtal_version = version("pyxtal")
    except Exception:  # noqa: BLE001 - only recorded
        pyxtal_version = None
    # Everything crystal i depends on besides (seed, i): a resumed run must match it.
    params = {"kind": "random", "generator": "xrdflow.data.random_crystals.generate_random_crystals",
              "n": n, "seed": seed, "max_atoms": max_atoms, "space_groups": weights,
              "compositions": "bundled MP-20 formulas (default)", "pyxtal_version": pyxtal_version, **options}
    if args.skip_failures:
        return _generate_skipping(args, out, random_crystals, params, sim)

    def make_shard(start, stop):
        from .shards import Item

        crystals = random_crystals.generate_random_crystals(
            stop - start, seed=seed, space_groups=weights, max_atoms=max_atoms, workers=args.workers,
            progress=False, start=start, **options)
        items = []
        for j, c in enumerate(crystals):
            if int(c.index) != start + j:
                raise RuntimeError(f"generate_random_crystals(start={start}) returned crystal {c.index} at "
                                   f"position {j}")
            items.append(Item(f"random-{seed}-{int(c.index)}", c.structure, int(c.space_group)))
        return items

    result = _write(out, make_shard, n_items=n, shard_size=args.shard_size, resume=args.resume, params=params,
                    simulator=sim, with_reflections=args.with_reflections, with_patterns=args.with_patterns,
                    desc="generating", interrupted_hint="run the same command with --resume to finish")
    print(f"generated {result.n_items} random crystals (seed {seed}, {weights} space groups, at most {max_atoms} "
          f"atoms) in {out}: "
          f"{result.n_shards} shard(s), {result.written} written"
          + (f", {result.reused} kept from an earlier run" if result.reused else ""))
    return 0


def _generate_skipping(args, out, random_crystals, params, sim) -> int:
    """--skip-failures: the crystals found among indices 0..n-1, shards filled in item order."""
    from .shards import MANIFEST, Item, _locked, _read_manifest, write_json

    seed, n, shard_size = args.seed, args.random, args.shard_size
    write_params = params
    if args.resume and (out / MANIFEST).exists():
        try:
            stored = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("params") or {}
        except (OSError, ValueError, AttributeError):
            stored = {}
        if {k: v for k, v in stored.items() if k not in _SKIP_RESULT_KEYS} == json.loads(json.dumps(params)):
            write_params = stored  # a completed run's params carry its result; the rest must match
    seen: list[int] = []          # indices of every item the source gives, in order
    groups: dict[int, int] = {}   # space groups of the skipped indices the generator reported

    def source():
        next_index = 0
        if args.resume:
            for items in _kept_prefix(out, shard_size, seed):
                indices = [_index_of(it.id, seed) for it in items]
                if indices[0] < next_index or indices != sorted(set(indices)) or indices[-1] >= n:
                    raise UserError(f"cannot resume {str(out)!r}: its shards do not hold increasing indices "
                                    f"0..{n - 1} (was it written by another command?)")
                seen.extend(indices)
                next_index = indices[-1] + 1
                yield items
        for block in range(next_index, n, shard_size):
            with warnings.catch_warnings():
                # Summed up in the manifest and the summary line instead of once per block.
                warnings.filterwarnings("ignore", category=RuntimeWarning, message=r".*were left out")
                if block > next_index:  # the groups that cannot be filled: said once
                    warnings.filterwarnings("ignore", category=RuntimeWarning, message=r".*cannot be filled")
                crystals = random_crystals.generate_random_crystals(
                    min(shard_size, n - block), seed=seed, space_groups=args.space_groups,
                    max_atoms=args.max_atoms, workers=args.workers, progress=False, start=block,
                    max_attempts=params["max_attempts"], on_failure="skip")
            groups.update(dict(crystals.skipped))
            items = [Item(f"random-{seed}-{int(c.index)}", c.structure, int(c.space_group)) for c in crystals]
            seen.extend(int(c.index) for c in crystals)
            yield items

    result = _write(out, source(), shard_size=shard_size, resume=args.resume, params=write_params,
                    simulator=sim, with_reflections=args.with_reflections, with_patterns=args.with_patterns,
                    desc="generating", interrupted_hint="run the same command with --resume to finish")
    found = set(seen)
    skipped = [i for i in range(n) if i not in found]
    for i in skipped:
        if i not in groups:  # skipped inside the shards a resumed run read back
            groups[i] = int(random_crystals.space_group_of(i, seed=seed, weights=args.space_groups,
                                                           max_atoms=args.max_atoms))
    by_group = collections.Counter(groups[i] for i in skipped)
    final = {**params, "n_found": result.n_items, "n_skipped": len(skipped),
             "skipped_by_space_group": {str(g): c for g, c in sorted(by_group.items())},
             "skipped": [[i, groups[i]] for i in skipped]}
    with _locked(out):
        manifest = _read_manifest(out)
        manifest["params"] = json.loads(json.dumps(final))
        write_json(out / MANIFEST, manifest)
    shown = ", ".join(f"{g} x{c}" for g, c in sorted(by_group.items()))
    print(f"generated {result.n_items} random crystals of {n} indices (seed {seed}, {args.space_groups} space "
          f"groups, at most {args.max_atoms} atoms, at most {params['max_attempts']} attempt{'s' if params['max_attempts'] != 1 else ''} each) in "
          f"{out}: {result.n_shards} shard(s), {result.written} written"
          + (f", {result.reused} kept from an earlier run" if result.reused else "")
          + f"; {len(skipped)} indices skipped" + (f" (space groups: {shown})" if skipped else "")
          + f", listed in {out / MANIFEST} params")
    return 0


# ------------------------------------------------------------------ dedup
def _cmd_dedup(args) -> int:
    from .shards import quiet_spglib

    with quiet_spglib():
        return _dedup(args)


def _dedup(args) -> int:
    from .dedup import cross_duplicates, find_duplicates, id_overlap
    from .shards import write_json

    out = _check_out(args.output, args.resume) if args.output is not None else None
    if args.json is not None:
        from ..plot import check_output_path

        check_output_path(args.json)
    options = dict(similarity=args.similarity, volume_tolerance=args.volume_tolerance)
    src = _load(args.source, workers=args.workers)
    if not src.structures:
        raise UserError(f"no structure could be read from {args.source!r}")
    if out is not None and os.path.abspath(out) == os.path.abspath(args.source):
        raise UserError("-o DIR must not be SRC itself")
    report = find_duplicates(src.structures, ids=src.ids, progress=_progress(), **options)
    print(f"{args.source}: {report.summary()}")
    if src.failures:
        print(f"({len(src.failures)} entries of {args.source} could not be read and were not compared)")

    kept = list(report.kept)
    drop_cross = set()
    against = []
    for other_path in args.against or []:
        other = _load(other_path, workers=args.workers, what="--against")
        pairs = cross_duplicates(other.structures, src.structures, progress=_progress(), **options) \
            if other.structures else []
        shared = id_overlap(other.ids, src.ids)
        hit = sorted({j for _, j in pairs})
        shared_set = set(shared)
        leaking = sorted(set(hit) | {j for j, ident in enumerate(src.ids) if ident in shared_set})
        drop_cross.update(leaking)
        print(f"against {other_path} ({len(other.structures)} structures): {len(hit)} of the "
              f"{len(src.structures)} structures of {args.source} duplicate one there ({len(pairs)} pairs); "
              f"{len(shared)} ids in common")
        for i, j in pairs[:SHOW_FAILURES]:
            print(f"  {src.ids[j]} ~ {other.ids[i]}")
        if len(pairs) > SHOW_FAILURES:
            print(f"  ... and {len(pairs) - SHOW_FAILURES} more pairs")
        if shared:
            print(f"  ids in common: {', '.join(shared[:SHOW_FAILURES])}"
                  + (f" ... and {len(shared) - SHOW_FAILURES} more" if len(shared) > SHOW_FAILURES else ""))
        against.append({"path": other_path, "n_structures": len(other.structures),
                        "pairs": [[src.ids[j], other.ids[i]] for i, j in pairs],
                        "n_source_with_duplicates": len(hit), "id_overlap": shared,
                        "n_leaking": len(leaking)})
    if args.remove_against:
        kept = [i for i in kept if i not in drop_cross]

    written = None
    if out is not None:
        written = _write_kept(out, src, kept, args, options)
        print(f"wrote the {written.n_items} kept structures to {out} ({written.n_shards} shard(s))")
    if args.json is not None:
        write_json(args.json, {
            "source": args.source, "n_structures": len(src.structures), "n_failed_to_read": len(src.failures),
            "options": options, "n_groups": len(report.groups), "n_duplicates": report.n_duplicates,
            "groups": [[src.ids[i] for i in g] for g in report.groups],
            "n_kept": len(kept), "against": against, "removed_against": bool(args.remove_against),
            "output": None if out is None else str(out),
        })
        print(f"wrote {args.json}")
    return 0


def _write_kept(out, src: _Source, kept: list, args, options):
    from .shards import Batch

    idx = np.asarray(kept, dtype=np.int64)
    kept_ids = [src.ids[i] for i in kept]
    params = {"kind": "dedup", "source": os.path.abspath(args.source),
              "against": [os.path.abspath(p) for p in (args.against or [])],
              "removed_against": bool(args.remove_against), "options": options,
              "n_source": len(src.ids), "n_items": len(kept),
              "content_sha256": _content_hash(kept_ids, [src.structures[i] for i in kept])}
    kwargs = {}
    ds = src.dataset
    if ds is not None:  # keep what the source data set stores
        params["source_params"] = ds.params
        labels = ds.labels()
        sgs = labels["space_group"][idx] if len(idx) else np.zeros(0, dtype=np.int32)
        refl = ds.reflections().subset(idx) if ds.contents["reflections"] and len(idx) else None
        pats = ds.patterns() if ds.contents["patterns"] and len(idx) else None
        kwargs = dict(with_reflections=ds.contents["reflections"], with_patterns=ds.contents["patterns"],
                      simulator_info=ds.contents["simulator"], label_scheme=ds.contents["label_scheme"])

        def make_shard(start, stop):
            sel = np.arange(start, stop)
            return Batch(ids=kept_ids[start:stop], structures=[src.structures[i] for i in idx[start:stop]],
                         space_groups=sgs[start:stop],
                         reflections=None if refl is None else refl.subset(sel),
                         patterns=None if pats is None else pats[0][idx[start:stop]],
                         pattern_axis=None if pats is None else pats[1],
                         pattern_axis_name=None if pats is None else ds.contents["simulator"].get("axis_name"))
    else:
        def make_shard(start, stop):
            return [(kept_ids[k], src.structures[kept[k]]) for k in range(start, stop)]
    return _write(out, make_shard, n_items=len(kept), shard_size=args.shard_size, resume=args.resume,
                  params=params, desc="writing", interrupted_hint="run the same command with --resume to finish",
                  **kwargs)


# ------------------------------------------------------------------ info
def _cmd_info(args) -> int:
    from .shards import ShardedDataset

    path = args.dataset
    if not os.path.exists(path):
        raise UserError(f"no such data set directory: {path!r}")
    ds = ShardedDataset(path, verify=True, allow_incomplete=True)
    info = ds.info()
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return 0
    rows = [("data set", info["path"]),
            ("items", f"{info['n_items']} ({info['unique_ids']} unique ids) in {info['n_shards']} shard(s) of up "
                      f"to {info['shard_size']}, {_mb(info['bytes'])}")]
    if info["complete"]:
        rows.append(("status", "complete; checksums OK"))
    else:
        rows.append(("status", f"INCOMPLETE: {info['n_shards']} of {info['n_shards_planned'] or '?'} shards "
                               "written (interrupted?); finish it by running its command again with --resume; "
                               "checksums of the written shards OK"))
    c = info["contents"]
    what = ["structures", f"labels (extinction groups: {c.get('label_scheme')} scheme)"]
    sim = c.get("simulator") or {}
    if c["reflections"]:
        what.append(f"reflections to d_min {sim.get('d_min', float('nan')):.4f} A ({sim.get('radiation', '?')})")
    if c["patterns"]:
        what.append(f"patterns ({sim.get('n_points', '?')} points, {sim.get('axis_name', '?')})")
    rows.append(("contents", ", ".join(what)))
    rows.append(("made by", json.dumps(info["params"], ensure_ascii=False)))
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")
    print()
    total = max(info["n_items"], 1)
    print("crystal systems:")
    for name, count in info["crystal_systems"].items():
        print(f"  {name:<13} {count:>8}  {100 * count / total:5.1f} %")
    print(f"space groups (top {len(info['space_groups'])} of {info['n_space_groups']}):")
    for g in info["space_groups"]:
        print(f"  {g['number']:>3}  {g['symbol']:<12} {g['count']:>8}  {100 * g['count'] / total:5.1f} %")
    return 0


# ------------------------------------------------------------------ parser
def _no_action(parser):
    def run(args) -> int:
        parser.print_help(sys.stderr)
        return 2
    return run


def _add_output_options(p, *, resume_help: str) -> None:
    p.add_argument("-o", "--output", metavar="DIR", required=True, help="data set directory to write")
    p.add_argument("--shard-size", type=_positive_int, default=1000, metavar="N",
                   help="structures per shard file (default 1000)")
    p.add_argument("--resume", action="store_true", help=resume_help)


def _add_simulation_options(p) -> None:
    p.add_argument("--with-reflections", action="store_true",
                   help="also store each structure's cached reflections (hkl, d, |F|^2, multiplicity)")
    p.add_argument("--with-patterns", action="store_true", help="also store rendered patterns (float32)")
    p.add_argument("--radiation", type=_radiation_arg, default="CuKa", metavar="SOURCE",
                   help="radiation for --with-reflections / --with-patterns (default CuKa; 2theta 5-90 deg)")
    p.add_argument("--n-points", type=_int_at_least(2), default=4096, metavar="N",
                   help="points of the stored patterns (default 4096)")


def add_dataset_parser(sub) -> None:
    """Register ``xrdflow dataset`` and its actions on the subparsers of :mod:`xrdflow.cli`."""
    resume = ("finish a data set an interrupted run left in DIR (same options): keep its complete shards, "
              "write the missing ones")
    ds = sub.add_parser("dataset", help="build, check and de-duplicate sharded data sets",
                        description="Build, check and de-duplicate sharded HDF5 data sets (see "
                                    "xrdflow.data.shards).")
    ds.set_defaults(func=_no_action(ds))
    actions = ds.add_subparsers(dest="dataset_command", metavar="ACTION", parser_class=type(ds))

    p = actions.add_parser("import", help="structures from a CSV / CIF folder / extxyz into a data set",
                           description="Read structures (CSV(.gz) with a cif column, folder of CIFs, CIF file, "
                                       "extxyz), label them (space group, crystal system, Laue class, "
                                       "extinction group) and write them as a sharded data set; entries that "
                                       "cannot be read are listed in DIR/failures.json.")
    p.add_argument("source", metavar="SRC", help="CSV(.gz) table with a cif column, CIF folder, CIF or extxyz file")
    _add_output_options(p, resume_help=resume)
    _add_simulation_options(p)
    p.add_argument("--workers", type=_positive_int, metavar="W", help="parser processes (default: automatic)")
    p.set_defaults(func=_cmd_import)

    p = actions.add_parser("generate", help="random crystals (pyxtal) into a data set",
                           description="Generate random crystals, uniform over the space groups, shard by "
                                       "shard; crystal i depends only on (seed, i), so --resume regenerates "
                                       "only the missing shards.")
    p.add_argument("--random", type=_int_at_least(0), required=True, metavar="N", help="number of crystals")
    p.add_argument("--seed", type=_int_at_least(0), default=0, metavar="S", help="random seed (default 0)")
    p.add_argument("--max-atoms", type=_positive_int, default=40, metavar="M",
                   help="at most M atoms in the cell (default 40)")
    p.add_argument("--space-groups", choices=("uniform", "bundled"), default="uniform",
                   help="space-group weights: uniform over the 230 groups (default) or as in the bundled MP-20 data")
    p.add_argument("--max-attempts", type=_positive_int, metavar="A",
                   help="pyxtal attempts per index and attempt stream (default 50)")
    p.add_argument("--skip-failures", action="store_true",
                   help="give each index at most --max-attempts attempts and leave out an index whose attempts "
                        "all fail (listed per space group in the manifest params), instead of retrying it over up "
                        "to 20 attempt streams; bounds the time per crystal, under-represents hard groups")
    p.add_argument("--workers", type=_positive_int, metavar="W", help="generator processes (default: all cores)")
    _add_output_options(p, resume_help=resume)
    _add_simulation_options(p)
    p.set_defaults(func=_cmd_generate)

    p = actions.add_parser("dedup", help="duplicate structures within a source and against others",
                           description="Report duplicate structures within SRC (same crystal in another "
                                       "setting, supercell or slightly strained), and structures or ids that "
                                       "SRC shares with each --against source; -o writes the kept set.")
    p.add_argument("source", metavar="SRC", help="data set directory, CSV(.gz), CIF folder, CIF or extxyz file")
    p.add_argument("-o", "--output", metavar="DIR", help="write the kept structures as a data set")
    p.add_argument("--against", nargs="+", metavar="OTHER", help="also compare SRC with these sources")
    p.add_argument("--remove-against", action="store_true",
                   help="with -o: also leave out structures of SRC that duplicate (or share an id with) an OTHER")
    p.add_argument("--json", metavar="OUT.json", help="write the full report as JSON")
    p.add_argument("--shard-size", type=_positive_int, default=1000, metavar="N",
                   help="structures per shard file of -o DIR (default 1000)")
    p.add_argument("--resume", action="store_true", help="finish an interrupted -o DIR")
    p.add_argument("--similarity", type=float, default=0.98, metavar="C",
                   help="smallest pattern cosine similarity of duplicates (default 0.98)")
    p.add_argument("--volume-tolerance", type=float, default=0.05, metavar="F",
                   help="largest relative difference of volume per atom (default 0.05)")
    p.add_argument("--workers", type=_positive_int, metavar="W", help="parser processes (default: automatic)")
    p.set_defaults(func=_cmd_dedup)

    p = actions.add_parser("info", help="summary of a data set (checks every shard's sha256)",
                           description="Items, shards, checksums, contents, parameters and the crystal-system "
                                       "and space-group histograms of a data set.")
    p.add_argument("dataset", metavar="DIR", help="data set directory")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=_cmd_info)
