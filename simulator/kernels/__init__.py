"""Fast integer kernels (numba), each beside a small reference kernel that the tests compare it with.

- mac:      conv2d / dense multiply-accumulate in an acc_bits accumulator (wrap or saturate), overflow counts
- popcount: XNOR-popcount conv2d / dense for binary layers (Larq convention: bit 1 = -1, sign(0) = +1)
- pairsat:  the x86 int16 pair-saturation datapath (ONNX Runtime u8 x s8 without VNNI, vpmaddubsw) on raw codes
- im2col:   conv geometry and the register-tiled SIMD micro-kernel both fast paths share

In Python mode (simulator/jit.py: small command-line runs, or NUMBA_DISABLE_JIT=1) every kernel runs as plain
Python / numpy, bit for bit the same (tests/test_nojit.py): the @njit functions as written, except the LLVM-IR
micro-kernel (kernels/microkernel.py; im2col._tile_numpy instead) and mac's row updates (numpy twins: numpy
scalars would warn where numba's int64 arithmetic wraps).
"""
from .mac import (accumulator_bound, conv2d_acc, conv2d_acc_reference, dense_acc, dense_acc_reference,
                  overflow_impossible)
from .popcount import (pack_bits, popcount_words_per_output, xnor_conv2d, xnor_conv2d_reference, xnor_dense,
                       xnor_dense_reference)

__all__ = ["accumulator_bound", "conv2d_acc", "conv2d_acc_reference", "dense_acc", "dense_acc_reference",
           "overflow_impossible", "pack_bits", "popcount_words_per_output", "xnor_conv2d", "xnor_conv2d_reference",
           "xnor_dense", "xnor_dense_reference"]
