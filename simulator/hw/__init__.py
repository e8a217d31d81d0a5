"""Hardware cost side: technology tables and the energy model (counts x per-event energies)."""

from simulator.hw.techtable import TechTable, load_techtable, resolve_hw_path
from simulator.hw.energy import CATEGORIES, EnergyReport, estimate_energy

__all__ = ["TechTable", "load_techtable", "resolve_hw_path", "CATEGORIES", "EnergyReport", "estimate_energy"]
