"""Seed 004 Table VII from layer shapes (benchmarks/reproductions/seed004_storage.py): one definition — every
conv / FC layer's output feature map, input and pooling outputs not counted, MB = 10^6 bytes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "reproductions"))
import seed004_storage as st  # noqa: E402


def test_vgg16_layer_outputs():
    outs = st.layer_outputs(st.TOPOLOGY["vgg16"])
    assert outs["conv1_1"] == 224 * 224 * 64 and outs["conv5_3"] == 14 * 14 * 512 and outs["fc8"] == 1000
    assert sum(outs.values()) == 13_556_712


@pytest.mark.parametrize("scheme, bits, mb", [("half", 216_907_392, 27.113424), ("enq", 79_116_240, 9.88953),
                                              ("knq", 67_776_464, 8.472058)])
def test_vgg16_matches_table_vii(scheme, bits, mb):
    r = st.activation_storage("vgg16", scheme)
    assert r["bits"] == bits
    assert r["MB"] == pytest.approx(mb, rel=1e-6)
    assert abs(r["MB"] / st.PAPER_MB["vgg16"][scheme] - 1) <= 0.05


def test_alexnet_is_half_the_paper():
    """AlexNet (Eyeriss topology, conv layers only): 650,080 outputs -> 1.30 / 0.244 / 0.244 MB, about half of
    the paper's 2.57 / 0.48 / 0.48 MB under the same definition (see docs/reproductions.md)."""
    half, enq = st.activation_storage("alexnet", "half"), st.activation_storage("alexnet", "enq")
    assert half["elements"] == 650_080 and half["bits"] == 650_080 * 16 and enq["bits"] == 650_080 * 3
    assert half["MB"] / st.PAPER_MB["alexnet"]["half"] == pytest.approx(0.506, abs=0.002)
    # the paper's half / ENQ ratio (2.57 / 0.48 = 5.35) is the 16 / 3 of this definition
    assert st.PAPER_MB["alexnet"]["half"] / st.PAPER_MB["alexnet"]["enq"] == pytest.approx(16 / 3, rel=0.01)
