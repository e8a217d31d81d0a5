"""Functional models of the small hardware units, one module per block.

Each module states its exact integer semantics in its docstring; every function is vectorised numpy over
int64 arrays with exact integer arithmetic (no silent overflow), and raises `HwsimError` on bad input.

- `rounding`      rounding right shift / rounding divider (floor, half_up, half_even, half_away, trunc)
- `requantizer`   accumulator -> output integer domain: float32 (ONNX Runtime), float64 (ONNX reference),
                  fixed_double (TFLite / gemmlowp), fixed_single (TFLITE_SINGLE_ROUNDING), shift (power of two)
- `enq`           seed 004 ENQ: QE (saturating right shifter) and CE (left shifter)
- `knq`           seed 004 KNQ: QK (comparator bank or tree + priority encoder), CK (centroid mux), k-means
- `codebook_lut`  codebook weight decode: index -> fixed-point value, one table per channel group
- `pooling`       integer max / average pooling with event counts
- `binarize`      sign bits (bit 1 = -1, sign(0) = +1) and back to +-1
"""
