"""Fast integer kernels (numba), each beside a small reference kernel.

- mac:      conv2d / dense multiply-accumulate with an acc_bits accumulator (wrap or saturate) and overflow counts
- popcount: XNOR-popcount conv2d / dense for binary layers (Larq convention: bit 1 = -1)
- im2col:   conv geometry and the register-tiled SIMD micro-kernel both fast paths share
"""
