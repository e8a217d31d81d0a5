"""Test-session set-up."""
from simulator import jit

# The session's kernel mode, fixed before any test runs: a command run in-process (cli.main) then never plans
# the kernels' tiers for the whole session (simulator/jit.py: only a process's first run does), so every test
# runs the numba kernels it means to run, whatever ran before it.
jit.mode()
