"""Numpy-only quantizers of the seed papers: weights (uniform, k-means codebooks, TWN / Hwang ternary, XNOR
binary, powers of two, a network-wide dictionary), activations (uniform fixed point, ENQ, KNQ, SQNR) and
Lin et al.'s SQNR bit allocation. Every function works on plain arrays and returns the integer codes and the
exact scales that `simulator.encodings` takes; each docstring names the seed section or equation it follows.
"""

from .activations import (enq_codes, enq_search, frac_bits, knq_centroids, knq_thresholds, sqnr_db,
                          uniform_codes)
from .bitalloc import allocate_bits, kappa_beta_fit, lin_closed_form, lin_output_sqnr_db
from .weights import (dictionary_weights, exact_scale, fixed_point_table, hwang_ternary, kmeans_weights,
                      lloyd_kmeans, mantissa8, pow2_weights, twn_ternary, uniform_weights, xnor_beta,
                      xnor_binary)

__all__ = [
    "mantissa8", "exact_scale", "uniform_weights", "lloyd_kmeans", "fixed_point_table", "kmeans_weights",
    "twn_ternary", "hwang_ternary", "xnor_binary", "xnor_beta", "pow2_weights", "dictionary_weights",
    "frac_bits", "uniform_codes", "enq_codes", "knq_centroids", "knq_thresholds", "enq_search", "sqnr_db",
    "kappa_beta_fit", "lin_output_sqnr_db", "allocate_bits", "lin_closed_form",
]
