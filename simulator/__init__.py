"""hwsim: a hardware-accurate integer inference simulator for low-bit accelerators."""

__version__ = "0.1.0"
