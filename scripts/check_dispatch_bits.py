"""Check that the CPU-dispatched clones give the same bits as the baseline build.

    python scripts/check_dispatch_bits.py [--structures 200] [--keep BUILD_DIR]

The hot loops of the core are compiled three times (x86-64 baseline, AVX2,
AVX-512F; cpp/src/dispatch.hpp) and one clone is picked at load time.  Patterns
must not depend on which: this script builds the extension once more with
``-DXF_NO_CLONES`` (the baseline code only) into a temporary folder, renders
the same patterns with the installed build and with that one, and compares
SHA-256 digests of: realistic augmented patterns and their drawn parameters,
clean patterns from the cache, patterns from scratch, and the per-point
counting noise (exact and Cornish-Fisher branches, with read noise).  The
structures are the first N of the bundled MP-20 subset.

Exit status 0 when every digest matches, 1 otherwise; the digests and the
instruction sets of this CPU are printed.  Needs cmake, a C++ compiler and
pybind11 (the build requirements).  On a CPU without AVX2 the installed build
already runs the baseline and the check is trivially true (it says so).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Run in a child process: digests of the same work done by whichever _core it imports.
CHILD = r"""
import hashlib, json, sys
if len(sys.argv) > 2:  # load xrdflow from this folder (and not an editable install's redirect)
    sys.meta_path[:] = [f for f in sys.meta_path if "ScikitBuild" not in type(f).__name__]
    sys.path.insert(0, sys.argv[2])
import numpy as np
import xrdflow as xf
n = int(sys.argv[1])
from xrdflow.data import bundled_dataset
structures = list(bundled_dataset(limit=n).structures)
sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=4096)
cache = sim.reflections(structures, threads=1)
y, params = sim.render(cache, augmentation=xf.Augmentation.realistic(), seed=3, epoch=1, threads=1)
clean, _ = sim.render(cache, threads=1)
scratch = sim.patterns(structures[:50], threads=1)
noise = xf._core.pattern_noise(1, 2, 3, np.linspace(0.0, 60.0, 4096), 1.5)
noise_whole = xf._core.pattern_noise(1, 2, 4, np.linspace(0.0, 60.0, 4096), 0.0)
def digest(a):
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
out = {"module": xf._core.__file__, "augmented": digest(y),
       "parameters": digest(np.concatenate([np.asarray(params[k], float).ravel() for k in sorted(params)])),
       "clean": digest(clean), "from_scratch": digest(scratch), "noise": digest(noise),
       "noise_whole_counts": digest(noise_whole)}
print(json.dumps(out))
"""


def cpu_flags() -> set[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def build_baseline(build_dir: Path) -> Path:
    """Configure and build _core with -DXF_NO_CLONES; returns the path of the module."""
    import pybind11

    cmd = ["cmake", "-S", str(ROOT), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
           "-DCMAKE_CXX_FLAGS=-DXF_NO_CLONES", f"-Dpybind11_DIR={pybind11.get_cmake_dir()}",
           f"-DPython_EXECUTABLE={sys.executable}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    jobs = str(max(1, cores))
    subprocess.run(["cmake", "--build", str(build_dir), "-j", jobs], check=True, stdout=subprocess.DEVNULL)
    found = sorted(build_dir.glob("_core*.so")) + sorted(build_dir.glob("_core*.pyd"))
    if not found:
        raise RuntimeError(f"the baseline build left no _core module in {build_dir}")
    return found[0]


def digests(n: int, package_parent: Path | None) -> dict:
    args = [sys.executable, "-c", CHILD, str(n)] + ([str(package_parent)] if package_parent else [])
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"rendering with {package_parent or 'the installed module'} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--structures", type=int, default=200, help="first N bundled structures (default 200)")
    ap.add_argument("--keep", metavar="DIR", help="build in DIR and keep it (default: a temporary folder)")
    args = ap.parse_args(argv)
    if args.structures < 1:
        ap.error("--structures must be >= 1")
    if shutil.which("cmake") is None:
        print("cmake is needed to build the baseline module", file=sys.stderr)
        return 1
    flags = cpu_flags()
    isa = [f for f in ("avx512f", "avx2") if f in flags]
    print(f"CPU instruction sets used by the clones: {', '.join(isa) or 'none (baseline only)'}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(args.keep) if args.keep else Path(tmp)
        module = build_baseline(work / "build")
        package = work / "package"
        shutil.rmtree(package, ignore_errors=True)
        shutil.copytree(ROOT / "python" / "xrdflow", package / "xrdflow",
                        ignore=shutil.ignore_patterns("__pycache__", "_core*"))
        shutil.copy2(module, package / "xrdflow" / module.name)
        installed = digests(args.structures, None)
        baseline = digests(args.structures, package)
    same = True
    for key in installed:
        if key == "module":
            continue
        match = installed[key] == baseline[key]
        same &= match
        print(f"{key:20s} installed {installed[key][:16]}  baseline {baseline[key][:16]}  "
              f"{'same' if match else 'DIFFERENT'}")
    print(f"installed module: {installed['module']}\nbaseline module:  {baseline['module']}")
    print("every digest matches" if same else "the clones give different bits")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
