"""The AVX2 / AVX-512 clones of the hot loops give the same bits as the x86-64 baseline.

Builds the extension once more without clones (-DXF_NO_CLONES) and compares
digests of augmented, clean and from-scratch patterns and of the counting noise
(scripts/check_dispatch_bits.py; ~20 s on 2 cores).
"""
from __future__ import annotations

import importlib.util
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("pybind11") is None, reason="needs pybind11 (the test extra)")
@pytest.mark.skipif(shutil.which("cmake") is None or platform.machine() not in ("x86_64", "AMD64"),
                    reason="needs cmake and an x86-64 CPU (the clones exist only there)")
def test_clones_give_the_bits_of_the_baseline_build():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "check_dispatch_bits.py"), "--structures", "60"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "every digest matches" in done.stdout
