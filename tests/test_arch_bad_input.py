"""Bad architecture input through the command line: one line naming the file and field, exit 2, no traceback,
no output file left behind."""

import pytest
import yaml

from simulator.cli import main
from simulator.hw.techtable import shipped_hwconfigs_dir

MODEL = "models/lenet_digits_u8.qnn"


def _design(tmp_path, mutate, name="lowbit90.yaml"):
    data = yaml.safe_load((shipped_hwconfigs_dir() / name).read_text())
    mutate(data["architecture"])
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    return str(path)


def _set(path, value):
    def mutate(arch):
        node = arch
        keys = path.split(".")
        for key in keys[:-1]:
            node = node[key]
        node[keys[-1]] = value
    return mutate


def _run_fails(capsys, tmp_path, argv, *needles):
    out = tmp_path / "report.json"
    code = main(argv + ["--json", str(out)])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hwsim: error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert not out.exists()
    return lines[0]


@pytest.mark.parametrize("mutate,needles", [
    (_set("memory.act_sram.size_bytes", {"value": 0, "source": "x"}), ["memory.act_sram.size_bytes", "positive"]),
    (_set("memory.act_sram.size_bytes", {"value": -4096, "source": "x"}), ["memory.act_sram.size_bytes"]),
    (_set("pe_array.mac.rows", {"value": -4, "source": "x"}), ["pe_array.mac.rows"]),
    (_set("memory.act_sram.banks", {"value": 3, "source": "x"}), ["memory.act_sram.banks", "do not divide"]),
    (_set("dataflow", "rs"), ["architecture.dataflow", "os, ws, is"]),
    (_set("dataflow", "wss"), ["did you mean 'ws'"]),
    (_set("memory.act_sram.holds", ["inputs", "partial_sums"]), ["memory.act_sram.holds"]),
    (_set("memory.act_sram.holds", ["inputs", "inputs"]), ["memory.act_sram.holds"]),
    (_set("memory.act_sram.macro", "cacti9"), ["memory.act_sram.macro"]),
    (_set("dram.latency_cycles", {"value": 2.5, "source": "x"}), ["dram.latency_cycles", "whole number"]),
    (_set("dram.bandwidth_bits_per_cycle", 64), ["dram.bandwidth_bits_per_cycle", "source"]),
    (_set("units.qk.count", {"value": 2.5, "source": "x"}), ["units.qk.count", "whole number"]),
    (_set("clock.mode", "fast"), ["clock.mode"]),
    (_set("dram.bandwidth_bits_per_cycle", {"value": 1.0e-300, "source": "x"}), ["bandwidth_bits_per_cycle",
                                                                                 "between"]),
    (_set("units.qk.per_cycle", {"value": 1.0e-300, "source": "x"}), ["units.qk.per_cycle", "between"]),
    (_set("pe_array.mac.delay_ns", {"value": 1.0e-30, "source": "x"}), ["pe_array.mac.delay_ns", "between"]),
    (_set("pe_array.mac.rows", {"value": 100000, "source": "x"}), ["pe_array.mac.rows", "at most"]),
    (_set("memory.act_sram.holds", "inputs"), ["memory.act_sram.holds"]),
    (_set("pe_array", None), ["architecture.pe_array", "mapping"]),
    (_set("memory", []), ["architecture.memory"]),
    (_set("memory.act_sram.bankz", 2), ["memory.act_sram.bankz", "did you mean 'banks'"]),
])
def test_bad_field_names_file_and_field(tmp_path, capsys, mutate, needles):
    path = _design(tmp_path, mutate)
    line = _run_fails(capsys, tmp_path, ["run", MODEL, "--hw", path], *needles)
    assert path in line


def test_buffer_too_small_names_layer_and_buffer(tmp_path, capsys):
    line = _run_fails(capsys, tmp_path, ["run", MODEL, "--hw", "tsmc90", "--set", "memory.weight_sram.size_bytes=16",
                                         "--set", "memory.weight_sram.banks=1"],
                      "weight_sram", "smallest tile", "layer")
    assert "conv" in line or "fc" in line


def test_unknown_set_path_suggests(tmp_path, capsys):
    _run_fails(capsys, tmp_path, ["run", MODEL, "--hw", "tsmc90", "--set", "memory.act_sram.bank=8"],
               "--set", "memory.act_sram.bank", "did you mean 'memory.act_sram.banks'")


@pytest.mark.parametrize("argv,needles", [
    (["--set", "dataflow=xs"], ["architecture.dataflow"]),
    (["--set", "memory.act_sram.size_bytes=-1"], ["memory.act_sram.size_bytes"]),
    (["--set", "nonsense"], ["PATH=VALUE"]),
    (["--array", "16"], ["--array", "ROWSxCOLS"]),
    (["--array", "0x4"], ["--array"]),
    (["--batch", "0"], ["--batch"]),
])
def test_bad_overrides(tmp_path, capsys, argv, needles):
    _run_fails(capsys, tmp_path, ["estimate", MODEL, "--hw", "tsmc90"] + argv, *needles)


def test_repeated_hw_on_run_points_to_compare(tmp_path, capsys):
    _run_fails(capsys, tmp_path, ["run", MODEL, "--hw", "tsmc90", "--hw", "lowbit90"], "--hw", "hwsim compare")


def test_compare_needs_two_designs_and_checks_all_before_running(tmp_path, capsys):
    _run_fails(capsys, tmp_path, ["compare", MODEL, "--hw", "tsmc90"], "at least two")
    bad = _design(tmp_path, _set("dataflow", "zz"))
    _run_fails(capsys, tmp_path, ["compare", MODEL, "--hw", "tsmc90", "--hw", bad], bad, "dataflow")


def test_design_without_needed_units(tmp_path, capsys):
    path = _design(tmp_path, _set("units.requant.count", {"value": 0, "source": "x"}))
    _run_fails(capsys, tmp_path, ["run", MODEL, "--hw", path], "units.requant.count", "requant")


def test_estimate_rejects_unknown_network_kind_and_bad_bits(tmp_path, capsys):
    txt = tmp_path / "net.txt"
    txt.write_text("x")
    _run_fails(capsys, tmp_path, ["estimate", str(txt), "--hw", "tsmc90"], "net.txt", ".csv")
    _run_fails(capsys, tmp_path, ["estimate", "models/topologies/vgg16.csv", "--hw", "tsmc90", "--bits", "8"],
               "--bits")
    _run_fails(capsys, tmp_path, ["estimate", MODEL, "--hw", "tsmc90", "--bits", "4,4"], "--bits")


def test_arch_file_with_missing_tech(tmp_path, capsys):
    data = yaml.safe_load((shipped_hwconfigs_dir() / "lowbit90.yaml").read_text())
    data["tech"] = "tsmc7"
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(data))
    _run_fails(capsys, tmp_path, ["estimate", MODEL, "--hw", str(path)], str(path), "tech", "tsmc7")


@pytest.mark.parametrize("design", ["tsmc90", "generic45", "eyeriss65", "tpu_like", "lowbit90"])
def test_every_resolved_leaf_is_a_set_path(design):
    """The report's `architecture` lists exactly what --set accepts: setting any leaf to its own value is
    accepted and changes nothing; a changed value shows up at that leaf."""
    import json

    from simulator.hw.arch import flatten_paths, load_hardware

    hw = load_hardware(design)
    leaves = flatten_paths(hw.arch.resolved)
    for path, value in leaves.items():
        if value is None:
            continue
        text = value if isinstance(value, str) else json.dumps(value)
        assert load_hardware(design, [f"{path}={text}"]).arch.resolved == hw.arch.resolved, path
    changed = load_hardware(design, ["dram.latency_cycles=7"]).arch.resolved
    assert flatten_paths(changed)["dram.latency_cycles"] == 7
