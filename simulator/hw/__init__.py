"""Hardware cost side: technology tables (techtable), the architecture (arch) and the cost model (cost: cycles,
accesses, energy; area: area and clock). Import the submodules; this package imports nothing heavy."""

from simulator.hw.techtable import TechTable, load_techtable, resolve_hw_path

__all__ = ["TechTable", "load_techtable", "resolve_hw_path"]
