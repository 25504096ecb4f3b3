"""The header-only physics compiles as CUDA device code (compile only; no GPU needed)."""
from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc (CUDA toolkit) not installed")
def test_physics_headers_compile_for_the_device(tmp_path):
    result = subprocess.run(
        ["nvcc", "-std=c++17", "-I", str(ROOT / "cpp" / "include"), "-c",
         str(ROOT / "tests" / "cuda" / "headers_device_check.cu"), "-o", str(tmp_path / "check.o")],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
