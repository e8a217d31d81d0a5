"""Hostile YAML (issue 8, point 2): bombs, depth, huge and non-finite numbers, duplicate keys, Python tags, figures
that overflow after scaling, and a hypothesis fuzzer over mutated shipped hwconfigs. Every case ends in exit 0
with a finite report or exit 2 with one `hwsim: error:` line, fast and with bounded memory."""

from __future__ import annotations

import contextlib
import io
import json
import re
import resource
import time
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from simulator import report
from simulator.cli import main
from simulator.errors import HwsimError
from simulator.hw.arch import load_hardware
from simulator.quant.schemes import load_recipe
from simulator.safeyaml import MAX_ALIASES, MAX_BYTES, MAX_DEPTH, load_yaml

ROOT = Path(__file__).resolve().parents[1]
MODEL = str(ROOT / "models" / "lenet_digits_u8.qnn")
HWCONFIGS = sorted((ROOT / "hwconfigs").glob("*.yaml")) + [ROOT / "hwconfigs" / "architectures" / "default.yaml"]
TSMC90 = (ROOT / "hwconfigs" / "tsmc90.yaml").read_text()


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch):
    monkeypatch.delenv("HWSIM_DEBUG", raising=False)


def hwsim(*argv) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def one_error(code: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("hwsim: error: "), (code, err[:2000])
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def run_hw(tmp_path, text: str, name: str = "hw.yaml", *extra) -> tuple[int, str, str, float]:
    path = tmp_path / name
    path.write_text(text) if isinstance(text, str) else path.write_bytes(text)
    t0 = time.perf_counter()
    code, out, err = hwsim("run", MODEL, "--hw", path, *extra)
    return code, out, err, time.perf_counter() - t0


def strict_json(path: Path):
    def refuse(name):
        raise AssertionError(f"non-finite {name} in JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def replace_once(text: str, old: str, new: str) -> str:
    assert text.count(old) >= 1, old
    return text.replace(old, new, 1)


# ----------------------------------------------------------------------------------------------------------
# Bombs and depth.


def laughs(levels: int = 9, width: int = 9) -> str:
    lines = ["l0: &l0 [" + ", ".join(["lol"] * width) + "]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [" + ", ".join([f"*l{i - 1}"] * width) + "]")
    return "\n".join(lines) + "\n"


def test_billion_laughs_in_format_fails_fast_with_bounded_memory(tmp_path):
    text = laughs() + "format: *l8\n"
    run_hw(tmp_path, "format: 1\n", "warm.yaml")           # imports done outside the measurement
    tracemalloc.start()
    try:
        code, _, err, seconds = run_hw(tmp_path, text)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    one_error(code, err, "hw.yaml", "aliases are expanded")
    assert seconds < 1 and peak < 20 * 2**20, (seconds, peak)
    t0 = time.perf_counter()
    with pytest.raises(HwsimError, match="aliases are expanded"):
        load_yaml(laughs(12, 12) + "format: *l11\n", "x.yaml")
    assert time.perf_counter() - t0 < 0.5


def test_alias_count_and_recursive_aliases_are_refused():
    many = "a: &a 1\nb: [" + ", ".join(["*a"] * (MAX_ALIASES + 1)) + "]\n"
    with pytest.raises(HwsimError, match="more than 100 aliases"):
        load_yaml(many, "x.yaml")
    load_yaml("a: &a 1\nb: [" + ", ".join(["*a"] * 50) + "]\n", "x.yaml")          # a few aliases are fine
    with pytest.raises(HwsimError, match="contains it"):
        load_yaml("a: &a [1, *a]\n", "x.yaml")
    # Aliases of deep collections cannot stack up past the depth limit either.
    deep = "a: &a " + "[" * 60 + "]" * 60 + "\n" + "b: " + "[" * 10 + "*a" + "]" * 10 + "\n"
    with pytest.raises(HwsimError, match="levels deep once expanded"):
        load_yaml(deep, "x.yaml")


@pytest.mark.parametrize("style", ["flow", "flow-mapping", "block", "block-sequence"])
def test_900_levels_of_nesting_is_one_error_not_a_recursion_error(tmp_path, style):
    n = 900
    if style == "flow":
        nest = "format: " + "[" * n + "]" * n + "\n"
    elif style == "flow-mapping":
        nest = "format: " + "{a: " * n + "1" + "}" * n + "\n"
    elif style == "block":
        nest = "format:\n" + "".join("  " * (i + 1) + f"k{i}:\n" for i in range(n)) + "  " * (n + 1) + "v\n"
    else:
        nest = "format:\n" + "".join("  " * (i + 1) + "-\n" for i in range(n))
    code, _, err, seconds = run_hw(tmp_path, nest)
    one_error(code, err, "hw.yaml", f"nested more than {MAX_DEPTH} levels deep")
    assert seconds < 2


def test_depth_within_the_limit_loads():
    n = MAX_DEPTH - 1
    assert load_yaml("[" * n + "]" * n, "x") is not None


def test_document_size_is_checked_before_parsing(tmp_path):
    text = "format: hwsim-techtable/1\n" + "# padding\n" * (MAX_BYTES // 10 + 1)
    code, _, err, seconds = run_hw(tmp_path, text)
    one_error(code, err, "hw.yaml", "larger than")
    assert seconds < 1
    with pytest.raises(HwsimError, match="larger than the limit"):
        load_yaml(b"a" * (MAX_BYTES + 1), "x")


# ----------------------------------------------------------------------------------------------------------
# Numbers.


@pytest.mark.parametrize("digits", [31, 400, 5000])
def test_huge_integers_are_one_error(tmp_path, digits):
    text = replace_once(TSMC90, "to_nm: {value: 90,", f"to_nm: {{value: {'9' * digits},")
    code, _, err, _ = run_hw(tmp_path, text)
    line = one_error(code, err, "hw.yaml", f"integer of {digits} digits is out of range")
    assert "line " in line
    with pytest.raises(HwsimError, match="out of range"):
        load_yaml("x: -" + "1" * 5000, "x")
    with pytest.raises(HwsimError, match="out of range"):
        load_yaml("x: 0x" + "f" * 400, "x")


@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan", ".NaN", "1.0e+400", "-1.0e+999", "!!float inf"])
def test_non_finite_numbers_are_refused(tmp_path, value):
    text = replace_once(TSMC90, "to_v: {value: 1.2,", f"to_v: {{value: {value},")
    code, _, err, _ = run_hw(tmp_path, text)
    line = one_error(code, err, "hw.yaml")
    # .inf / .nan reach the table's field checks (which name the row); overflowing literals stop at the loader.
    assert ("scaling.to_v: must be a positive number, got " in line if value.lstrip("-").startswith(".")
            else f"line {TSMC90[:TSMC90.index('to_v:')].count(chr(10)) + 1}: " in line
            and "is not a finite number" in line), line
    with pytest.raises(HwsimError, match="is not a finite number"):
        load_yaml(f"x: {value}", "x")                   # the default: every non-finite float refused


def test_bad_explicit_tags_on_numbers_are_one_error():
    for text in ("x: !!int abc", "x: !!float abc", "x: !!int 1e5"):
        with pytest.raises(HwsimError, match="line 1"):
            load_yaml(text, "x")
    assert load_yaml("x: 2001-13-45", "x") == {"x": "2001-13-45"}     # a malformed date is just text


def test_energy_of_1e308_is_refused_naming_the_row(tmp_path):
    text = replace_once(TSMC90, "value: 0.002994791667", "value: 1.0e+308")
    json_path = tmp_path / "r.json"
    code, out, err, _ = run_hw(tmp_path, text, "hw.yaml", "--json", json_path)
    one_error(code, err, "hw.yaml: arith.mult_pj_per_bit2", "at most")
    assert not json_path.exists() and "inf" not in out


def test_energy_that_overflows_only_after_scaling_is_refused(tmp_path):
    # 9e14 is a legal figure; x2.88 (the tsmc90 energy rule) takes it past the limit.
    text = replace_once(TSMC90, "value: 0.002994791667", "value: 9.0e+14")
    code, _, err, _ = run_hw(tmp_path, text)
    one_error(code, err, "hw.yaml: arith.mult_pj_per_bit2", "after scaling")
    # A scaling rule whose factor itself overflows (from_v tiny, squared).
    text = replace_once(TSMC90, "value: 1.0\n", "value: 1.0e-200\n")
    code, _, err, _ = run_hw(tmp_path, text)
    one_error(code, err, "hw.yaml: scaling", "energy factor")


def test_set_values_go_through_the_safe_loader(tmp_path):
    for value, needle in (("1.0e+400", "not a finite number"), (".nan", "not a finite number"),
                          ("9" * 400, "out of range"), ("{a: 1, a: 2}", "duplicate key"),
                          ("[" * 900, "nested more than")):
        code, _, err = hwsim("run", MODEL, "--hw", "tsmc90", "--set", f"pe_array.mac.rows={value}")
        one_error(code, err, "--set", needle)


def test_recipe_goes_through_the_safe_loader(tmp_path):
    path = tmp_path / "r.yaml"
    for text, needle in (("format: hwsim-recipe/1\nbudget: .nan\n", "not a finite number"),
                         ("format: hwsim-recipe/1\nformat: hwsim-recipe/1\n", "duplicate key"),
                         (laughs() + "format: hwsim-recipe/1\n", "aliases are expanded"),
                         ("format: hwsim-recipe/1\nweights: [1, 2\n", "not valid YAML")):
        path.write_text(text)
        with pytest.raises(HwsimError, match=needle) as info:
            load_recipe(path)
        assert info.value.source == str(path)


# ----------------------------------------------------------------------------------------------------------
# Duplicate keys and tags.


def test_duplicate_key_in_a_flow_mapping_names_its_line(tmp_path):
    text = replace_once(TSMC90, "to_v: {value: 1.2,", "to_v: {value: 1.2, value: 1000.0,")
    line_no = text[:text.index("to_v: {value: 1.2, value")].count("\n") + 1
    code, _, err, _ = run_hw(tmp_path, text)
    one_error(code, err, "hw.yaml", "duplicate key 'value'", f"line {line_no}")


def test_second_dram_section_names_both_lines(tmp_path):
    text = TSMC90 + "\ndram:\n  pj_per_bit: {value: 1000.0, source: \"x\"}\n  weights_on_chip: false\n"
    first = TSMC90[:TSMC90.index("\ndram:")].count("\n") + 2
    second = text.rindex("\ndram:")
    second = text[:second].count("\n") + 2
    code, _, err, _ = run_hw(tmp_path, text)
    one_error(code, err, "hw.yaml", "duplicate key 'dram'", f"lines {first} and {second}")


def test_merge_keys_still_work():
    assert load_yaml("a: &a {x: 1, y: 2}\nb: {<<: *a, x: 3}\n", "x")["b"] == {"x": 3, "y": 2}


@pytest.mark.parametrize("tag", ["!!python/object:os.system {}", "!!python/object/apply:os.system ['true']",
                                 "!!python/object/new:dict {}", "!!python/name:os.system ''"])
def test_python_tags_are_refused(tmp_path, tag):
    code, _, err, _ = run_hw(tmp_path, f"format: {tag}\n")
    one_error(code, err, "hw.yaml", "YAML syntax error")


# ----------------------------------------------------------------------------------------------------------
# Reports: never inf or NaN.


def test_report_json_is_strict_and_finite(tmp_path):
    json_path = tmp_path / "r.json"
    code, out, _ = hwsim("run", MODEL, "--hw", "tsmc90", "--json", json_path)
    assert code == 0
    rep = strict_json(json_path)
    assert report.nonfinite_path(rep) is None
    assert not re.search(r"\b(inf|nan)\b", out, re.I)


def test_non_finite_figures_in_a_report_are_one_error_naming_them():
    with pytest.raises(HwsimError) as info:
        report.to_json({"layers": [{"energy_pj": 1.0}, {"energy_pj": float("inf")}]})
    assert info.value.field == "layers[1].energy_pj"
    with pytest.raises(HwsimError):
        report.check_finite({"a": {"b": float("nan")}})
    assert json.loads(report.to_json({"a": 1.5, "b": None})) == {"a": 1.5, "b": None}


def test_cost_report_refuses_an_overflowed_cost(monkeypatch):
    from simulator.hw.cost import estimate
    from simulator.importers.qnn_shapes import workloads_from_model
    from simulator.qnn.model_io import load_model

    hw = load_hardware("tsmc90")
    cost = estimate(workloads_from_model(load_model(MODEL)), hw, 1)
    report.cost_report(cost, network=MODEL)                     # finite: fine
    monkeypatch.setattr(type(cost), "energy_pj", property(lambda self: float("inf")), raising=False)
    with pytest.raises(HwsimError) as info:
        report.cost_report(cost, network=MODEL)
    assert info.value.field == "energy_pj_per_inference" and "overflowed" in info.value.message


# ----------------------------------------------------------------------------------------------------------
# The fuzzer: mutated shipped hwconfigs through `hwsim run`.

NUMBERS = ["0", "-1", "0.0", "1", "1.0e+400", "-1.0e+400", ".inf", "-.inf", ".nan", "9" * 40, "9" * 400, "1" * 5000,
           "1.0e+308", "1.0e+15", "1.0e+16", "9.9e+14", "5.0e-324", "1.0e-300", "0x" + "f" * 40, "0b101", "0o17",
           "1_000", "3125e-6", "2001-13-45", "1:2:3", "99999999999999999999", "1.5", "65536", "4097", "true", "~",
           "''", "[]", "{}"]
SNIPPETS = ["dram:", "  pj_per_bit: {value: 1000.0, source: \"x\"}", "value: 1.0", "x: &a [1, 2, 3]",
            "y: [*a, *a, *a]", "z: *nope", "format: hwsim-techtable/1", "format: hwsim-arch/1", "architecture:",
            "<<: {value: 1}", "? [1, 2]", "- 1", "  - 2", "'", "\"", "{", "[", "]", "}", ": :", "\t", "%YAML 1.1",
            "---", "...", "!!python/object:os.system {}", "!!binary aGk=", "!!set {a, b}", "&b", "*b",
            "a: " + "[" * 200 + "]" * 200, "n: " + "9" * 4300, "tech: /etc/passwd", "tech: tsmc90"]


def _mutate(lines: list[str], data) -> list[str]:
    lines = list(lines)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["delete", "duplicate", "insert", "number", "alias", "indent"]),
                         label="kind")
        i = data.draw(st.integers(0, max(len(lines) - 1, 0)), label="line")
        if not lines:
            lines = [""]
        if kind == "delete":
            del lines[i:i + data.draw(st.integers(1, 3))]
        elif kind == "duplicate":
            j = data.draw(st.integers(0, len(lines)), label="to")
            lines[j:j] = lines[i:i + data.draw(st.integers(1, 12))]
        elif kind == "insert":
            lines.insert(i, " " * data.draw(st.sampled_from([0, 2, 4])) + data.draw(st.sampled_from(SNIPPETS)))
        elif kind == "number":
            numbers = [k for k, line in enumerate(lines) if re.search(r"value: [-0-9.]", line)]
            if numbers:
                k = data.draw(st.sampled_from(numbers), label="number line")
                lines[k] = re.sub(r"value: [-0-9.e+]+", "value: " + data.draw(st.sampled_from(NUMBERS)).replace(
                    "\\", "\\\\"), lines[k], count=1)
        elif kind == "alias":     # anchor one value, refer to it from another place
            values = [k for k, line in enumerate(lines) if re.search(r"value: [-0-9.]", line)]
            if len(values) >= 2:
                a, b = data.draw(st.sampled_from(values)), data.draw(st.sampled_from(values))
                lines[a] = lines[a].replace("value: ", "value: &v ", 1)
                lines[b] = re.sub(r"value: &?v? ?[-0-9.e+]+", "value: *v", lines[b], count=1)
        else:
            lines[i] = data.draw(st.sampled_from(["", "  ", "    "])) + lines[i].lstrip()
    return lines


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck), database=None,
          derandomize=True)
@given(st.sampled_from(HWCONFIGS), st.data())
def test_fuzz_mutated_hwconfigs(tmp_path_factory, base, data):
    lines = _mutate(base.read_text().splitlines(), data)
    tmp = tmp_path_factory.mktemp("fuzz")
    path = tmp / "mutated.yaml"
    path.write_text("\n".join(lines) + "\n")
    json_path = tmp / "r.json"
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    code, out, err = hwsim("run", MODEL, "--hw", path, "--json", json_path)
    seconds = time.perf_counter() - t0
    assert seconds < 10, seconds
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before < 256 * 1024   # KiB: < 256 MiB more
    assert "Traceback" not in err and "internal error" not in err, err[:2000]
    if code == 0:
        assert err == "", err[:2000]
        assert report.nonfinite_path(strict_json(json_path)) is None
        assert not re.search(r"\b(inf|nan)\b", out, re.I)
    else:
        one_error(code, err)
        assert len(err) < 2000
        assert not json_path.exists()
