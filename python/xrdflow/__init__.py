"""xrdflow: fast symmetry-reduced powder X-ray and neutron diffraction patterns.

>>> import xrdflow as xf
>>> s = xf.Structure.from_cif("NaCl.cif")
>>> sim = xf.Simulator(radiation="CuKa", two_theta=(5.0, 90.0), n_points=4096)
>>> y = sim.pattern(s)          # (4096,) float32
"""
from ._core import CoreError, has_cuda
from .augment import Augmentation, ScanRange
from .radiation import Radiation, parse_radiation
from .reflections import Reflections
from .simulate import PeakTable, Simulator
from .structure import Structure, StructureError
from .symmetry import space_group, symmetry_operations

__version__ = "0.1.0"

__all__ = [
    "Augmentation", "ScanRange", "CoreError", "PeakTable", "Radiation", "Reflections", "Simulator", "Structure", "StructureError",
    "has_cuda", "parse_radiation", "space_group", "symmetry_operations", "__version__",
]
