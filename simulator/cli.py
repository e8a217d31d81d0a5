"""Command line: argument parsing only; the work is done by the API modules."""

from __future__ import annotations

if __name__ == "__main__":  # python -m simulator.cli: Ctrl-C handled from the first line (simulator/interrupt.py)
    from simulator import interrupt as _interrupt
    _interrupt.install()

import argparse
import os
import sys

from .errors import HwsimError


def _add_input_args(p):
    group = p.add_mutually_exclusive_group()
    group.add_argument("--input", metavar="X.npy",
                       help="input array: float values are quantized by the model's input quantizer, "
                            "integers are taken as input codes; [N, ...] or a single sample")
    group.add_argument("--dataset", metavar="D.npz", help="an .npz with 'x' (inputs) and 'y' (labels): adds accuracy")
    p.add_argument("--limit", type=int, metavar="N", help="use only the first N samples")
    p.add_argument("--batch-size", type=int, default=512, metavar="N", help="samples per engine batch (default 512)")


def _add_limits_arg(p):
    p.add_argument("--no-limits", action="store_true",
                   help="lift the work and memory budget checked before any work (docs/qnn-format.md, Limits); "
                        "also HWSIM_NO_LIMITS=1")


def _add_arch_args(p):
    p.add_argument("--set", action="append", metavar="PATH=VALUE",
                   help="override any architecture field, e.g. --set memory.glb.banks=8 (validated like the file; "
                        "the report's 'architecture' lists the paths); repeatable")
    p.add_argument("--array", metavar="RxC", help="shortcut: MAC array rows x columns, e.g. 32x32")
    p.add_argument("--dataflow", choices=("os", "ws", "is"), help="shortcut: the MAC array's dataflow")
    p.add_argument("--batch", type=int, default=1, metavar="N",
                   help="inferences the accelerator processes together (weight reuse); cycles and latency are "
                        "per batch, energy per inference (default 1)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwsim", description="Hardware-accurate integer inference simulator.")
    parser.add_argument("--version", action="version", version=f"hwsim {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("run", help="run a model bit-exactly and cost it on a design: cycles, energy, area",
                       description="Run MODEL.qnn on the integer engine and cost it on one design (--hw). With no "
                                   "input, runs the sample input stored in the model (or a deterministic "
                                   "synthetic one, said so in the report).")
    p.add_argument("model", metavar="MODEL.qnn")
    _add_limits_arg(p)
    p.add_argument("--hw", required=True, action="append", metavar="HW.yaml",
                   help="the design: a tech table or architecture file, or a shipped name (tsmc90, generic45, "
                        "eyeriss65, tpu_like, lowbit90); several designs: use 'hwsim compare'")
    _add_arch_args(p)
    _add_input_args(p)
    p.add_argument("--output", metavar="Y.npy", help="save the model's output tensor (its integer codes)")
    p.add_argument("--output-values", metavar="Y.npy",
                   help="save the model's output as dequantized float32 values (code value x scale)")
    p.add_argument("--show", type=int, metavar="N",
                   help="print the first N predicted classes (argmax of each output), beside the labels of a "
                        "--dataset")
    p.add_argument("--json", metavar="REPORT.json", help="write the report as JSON (docs/report-schema.md)")
    p.add_argument("--csv", metavar="LAYERS.csv", help="write the report's per-layer figures as CSV: one row per "
                                                       "layer, then a total row (docs/report-schema.md)")
    p.add_argument("--plot", metavar="FIG.png", help="draw the per-layer energy breakdown and cycle breakdown "
                                                     "(.png or .svg; needs the 'plot' extra)")

    p = sub.add_parser("estimate", help="cost a network from its shapes alone (no execution): .qnn, .onnx, "
                                        ".tflite or SCALE-Sim topology .csv",
                       description="Cycles, energy and area of NETWORK on one design without running it: a .qnn "
                                   "model (not executed), an ONNX model (float or quantized; shapes only), an int8 "
                                   "TFLite model or a SCALE-Sim topology CSV. No accuracy and no zero gating (no "
                                   "values).")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("--hw", required=True, metavar="HW.yaml", help="the design (a file or a shipped name)")
    p.add_argument("--bits", metavar="A,W", help="activation and weight bits for ONNX and topology networks "
                                                  "(default 8,8; a quantized ONNX model's types win)")
    _add_arch_args(p)
    p.add_argument("--json", metavar="REPORT.json", help="write the report as JSON")
    p.add_argument("--csv", metavar="LAYERS.csv", help="write the report's per-layer figures as CSV: one row per "
                                                       "layer, then a total row (docs/report-schema.md)")

    p = sub.add_parser("compare", help="cost one network on several designs, side by side",
                       description="Run NETWORK once (a .qnn model; ONNX and topology networks are costed from "
                                   "their shapes) and cost it on every --hw design: energy, cycles, latency, "
                                   "throughput, area, EDP, TOPS/W, accuracy; the best design marked per row. "
                                   "--set, --array and --dataflow apply to every design.")
    p.add_argument("network", metavar="NETWORK")
    p.add_argument("--hw", required=True, action="append", metavar="HW.yaml", help="a design; repeat it")
    p.add_argument("--bits", metavar="A,W", help="activation and weight bits for ONNX and topology networks")
    _add_arch_args(p)
    _add_input_args(p)
    p.add_argument("--json", metavar="R.json", help="write every design's report as JSON (under 'designs')")
    p.add_argument("--csv", metavar="R.csv", help="write one CSV row per design (energy, cycles, latency, area, "
                                                  "EDP, ...): what 'hwsim plot' draws")

    p = sub.add_parser("validate", help="compare the integer engine with a float64 reference, layer by layer",
                       description="Exit status 0 only when every layer is bit-exact (or within --tolerance-lsb).")
    p.add_argument("model", metavar="MODEL.qnn")
    _add_limits_arg(p)
    _add_input_args(p)
    p.add_argument("--tolerance-lsb", type=int, default=0, metavar="N",
                   help="accept differences up to N output LSBs (default 0: bit-exact)")
    p.add_argument("--float-model", metavar="FLOAT.onnx",
                   help="also run this float ONNX model with ONNX Runtime: float accuracy, integer accuracy and "
                        "top-1 agreement (needs the 'onnx' extra)")
    p.add_argument("--json", metavar="REPORT.json", help="write the comparison as JSON")

    p = sub.add_parser("import", help="import an ONNX model (QOperator, QDQ or QONNX) or a TFLite int8 model into "
                                      "a .qnn file",
                       description="Convert a quantized ONNX or TFLite model into hwsim's .qnn format. Needs the "
                                   "'onnx' extra (ONNX) or the 'tflite' extra (TFLite): python -m pip install -e "
                                   "\".[onnx]\" in the hwsim checkout.")
    p.add_argument("onnx_model", metavar="MODEL.onnx|MODEL.tflite")
    _add_limits_arg(p)
    p.add_argument("-o", "--output", required=True, metavar="MODEL.qnn", help="the .qnn file to write")
    p.add_argument("--ort-qdq-int8-allowed", action="store_true",
                   help="match ONNX Runtime run with session.qdqisint8allowed=1 (int8 QDQ node groups with "
                        "several consumers fused into integer kernels instead of computed in float32)")
    p.add_argument("--ort-cpu", choices=("host", "vnni", "avx2"), default="host",
                   help="the CPU whose ONNX Runtime to match bit for bit: its u8 x s8 kernels sum exactly with "
                        "VNNI, and saturate product pairs to int16 on x86 AVX2 without VNNI (default: this "
                        "machine's)")
    p.add_argument("--tflite-kernels", choices=("xnnpack", "optimized", "reference"), default="xnnpack",
                   help="the LiteRT kernel path a .tflite model should match bit for bit: the XNNPACK delegate "
                        "a plain Interpreter() runs (default), the optimized builtin kernels, or the reference "
                        "kernels")
    p.add_argument("--tflite-output", metavar="TENSOR",
                   help="the tensor the imported model ends at: one of the graph's outputs (needed when it has "
                        "several) or any tensor it computes")

    p = sub.add_parser("export", help="export a .qnn model as a QDQ ONNX model ONNX Runtime can run",
                       description="Write MODEL.qnn as ONNX (QDQ form). Encodings ONNX cannot express exactly "
                                   "are decomposed into standard ops or reported as an error naming the layer.")
    p.add_argument("model", metavar="MODEL.qnn")
    p.add_argument("-o", "--output", required=True, metavar="MODEL.onnx", help="the .onnx file to write")

    p = sub.add_parser("quantize", help="quantize a float ONNX model with the seed papers' schemes into a .qnn",
                       description="Read a float ONNX model (Conv, Gemm/MatMul, BatchNormalization folded, Relu, "
                                   "Clip, pools, Add, Concat, Flatten/Reshape), calibrate on --calib, quantize "
                                   "weights and activations, write a .qnn that 'hwsim run' executes bit-exactly. "
                                   "Schemes: docs/quantization.md. Needs the 'onnx' extra.")
    p.add_argument("float_model", metavar="FLOAT.onnx")
    p.add_argument("--calib", required=True, metavar="CALIB.npz",
                   help="calibration data: 'x' (float inputs as the float model takes them), optional 'y' labels")
    p.add_argument("-o", "--output", required=True, metavar="OUT.qnn", help="the .qnn file to write")
    p.add_argument("--weights", metavar="SCHEME", help="weight scheme (default uniform:8): uniform:B, kmeans:B[,groups=G], "
                                                      "siq:B, ternary:twn, ternary:hwang, binary:xnor, pow2:B, dictionary:N")
    p.add_argument("--acts", metavar="SCHEME", help="activation scheme of the feature maps each layer reads "
                                                    "(default uniform:8): uniform:B, enq:E, enq:auto, knq:T, binary")
    p.add_argument("--input", metavar="SCHEME", help="the model input's encoding: uniform:B (default 8) or kmeans:B")
    p.add_argument("--recipe", metavar="R.yaml", help="schemes per layer name or op (what 'hwsim analyze' writes)")
    p.add_argument("--all-layers", action="store_true",
                   help="apply the schemes to the first and last MAC layers too (default: they stay uniform 8-bit)")
    p.add_argument("--budget", type=float, metavar="D", help="enq:auto: accuracy drop allowed per search (default 0.01)")
    p.add_argument("--train", metavar="TRAIN.npz", help="training data (x, y) for siq retraining (needs the 'torch' extra)")
    p.add_argument("--limit", type=int, metavar="N", help="calibrate on the first N samples only")
    p.add_argument("--seed", type=int, default=0, help="random seed (k-means, retraining; default 0)")
    p.add_argument("--json", metavar="REPORT.json", help="write the summary as JSON")

    p = sub.add_parser("analyze", help="per-layer SQNR of weights and activations, and Lin et al.'s bit allocation",
                       description="SQNR of every layer's weights and input feature map at 1-8 bits against the "
                                   "float model; with --budget-bits or --target-sqnr-db, the per-layer bits of Lin "
                                   "et al.'s allocation (1/g_out = sum 1/g_i), written as a recipe for 'hwsim "
                                   "quantize'; with --qnn, the measured SQNR of a quantized model, layer by layer.")
    p.add_argument("float_model", metavar="FLOAT.onnx")
    p.add_argument("--calib", required=True, metavar="CALIB.npz", help="calibration data ('x', float inputs)")
    p.add_argument("--budget-bits", type=int, metavar="N", help="total bits for all weights and activations")
    p.add_argument("--target-sqnr-db", type=float, metavar="S", help="output SQNR to reach with the fewest bits")
    p.add_argument("--recipe-out", metavar="R.yaml", help="write the allocation as a recipe")
    p.add_argument("--qnn", metavar="MODEL.qnn", help="also measure this quantized model's per-layer SQNR")
    p.add_argument("--limit", type=int, metavar="N", help="use the first N calibration samples only")
    p.add_argument("--json", metavar="REPORT.json", help="write the analysis as JSON")

    p = sub.add_parser("inspect", help="show a model's layers, encodings, shapes and storage",
                       description="Print the graph stored in MODEL.qnn.")
    p.add_argument("model", metavar="MODEL.qnn")
    _add_limits_arg(p)
    p.add_argument("--json", metavar="OUT.json", help="write the summary as JSON")

    p = sub.add_parser("tables", help="write a design's energy and area tables for other tools (Accelergy)",
                       description="Write the per-action energies (pJ) and per-instance areas (um^2) hwsim's cost "
                                   "model uses for every component of a design, as Accelergy ERT.yaml and "
                                   "ART.yaml (docs/hwconfig-format.md, 'Exporting the tables').")
    p.add_argument("--accelergy", required=True, metavar="OUT_DIR",
                   help="directory for ERT.yaml and ART.yaml (created if missing; existing files replaced)")
    p.add_argument("--hw", required=True, metavar="HW.yaml", help="the design (a file or a shipped name)")

    p = sub.add_parser("sweep", help="cost models on a grid of design points (any --set path), one CSV row each",
                       description="Run every model of SPEC.yaml once (on its dataset) and cost it on every design "
                                   "point: each design x each point of the grid (or of its random sample). One "
                                   "row per point is appended to RESULTS.csv as soon as it is done; rerun the "
                                   "same command after an interruption and the points already there are "
                                   "skipped. docs/sweep.md describes the spec and the columns.")
    p.add_argument("spec", metavar="SPEC.yaml")
    p.add_argument("--out", required=True, metavar="RESULTS.csv",
                   help="the results: created, or appended to when it holds this sweep's rows")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--jobs", type=int, metavar="N", help="worker processes on this machine (default: CPU count)")
    where.add_argument("--dask", metavar="ADDRESS",
                       help="cost the points on a dask.distributed cluster: its scheduler (tcp://host:8786) or "
                            "local:N (N worker processes started here); needs the 'dask' extra")
    _add_limits_arg(p)

    p = sub.add_parser("plot", help="draw the Pareto front of a CSV of design points (compare --csv, a sweep)",
                       description="Draw every design point of RESULTS.csv (one row per point: model, hw, "
                                   "accuracy, energy_pj_per_inference, cycles, latency_s, area_mm2, parameter "
                                   "columns; several files are read as one) and mark and label the Pareto front: "
                                   "the points no other point beats in both columns. Default: two panels, "
                                   "energy vs accuracy and latency vs area. Better is higher for accuracy, "
                                   "throughput_inferences_per_s, tops_per_w and utilization, lower for every "
                                   "other column (energy, latency, area, cycles, EDP, ...). Needs the 'plot' "
                                   "extra.")
    p.add_argument("results", nargs="+", metavar="RESULTS.csv")
    p.add_argument("-o", "--output", required=True, metavar="FIG.png", help="the figure: .png or .svg")
    p.add_argument("--x", metavar="COL", help="one panel: this column on the x axis (with --y); better is higher "
                                              "for accuracy, throughput, TOPS/W, utilization, lower otherwise")
    p.add_argument("--y", metavar="COL", help="one panel: this column on the y axis (with --x)")

    for command in sub.choices.values():   # every subcommand, whoever added it
        command.add_argument("-q", "--quiet", action="store_true",
                             help="print no report or progress (files are still written; errors still go to "
                                  "standard error)")
    return parser


def _version():
    from . import __version__
    return __version__


def _safe_streams():
    """Printing never fails on odd characters (lone surrogates, characters the terminal's encoding lacks):
    they are written as backslash escapes."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):  # not a TextIOWrapper (e.g. captured by a test)
            pass


def _skip_numba_blas_probe():
    """numba probes for SciPy's BLAS when it loads its numpy support (importing scipy.linalg: ~0.3-0.5 s of every
    run where SciPy is installed). hwsim's kernels call no BLAS (no np.dot / np.linalg in numba code), so the
    command-line process, which runs hwsim's kernels only, tells numba there is none. The library import
    (`import simulator`) leaves numba alone: a user's own numba code may need BLAS."""
    if "numba.np.arraymath" in sys.modules:
        return
    try:
        import numba.np.linalg as linalg
    except ImportError:   # no numba: the import of the kernels reports it
        return
    probe = linalg.ensure_blas

    def no_blas():
        raise ImportError("hwsim's command line runs no BLAS in numba code")
    linalg.ensure_blas = no_blas
    try:
        import numba.np.arraymath  # noqa: F401  (decides numba's _HAVE_BLAS now)
    finally:
        linalg.ensure_blas = probe


def main(argv=None) -> int:
    _safe_streams()
    from . import jit
    jit.before_numba(_skip_numba_blas_probe)   # if this run loads numba at all (small runs do not)
    args = build_parser().parse_args(argv)
    import warnings
    # No Python warning ever reaches the user as a stray line: numpy floating-point warnings are silenced at
    # the source (np.errstate; results are checked where it matters) and every other warning is dropped, so
    # the real error stays the one line. HWSIM_DEBUG=1 shows them again.
    with warnings.catch_warnings():
        if not os.environ.get("HWSIM_DEBUG"):
            warnings.simplefilter("ignore")
        import numpy as np
        with np.errstate(all="ignore"):
            return _main(args)


def _main(args) -> int:
    from . import commands
    from .errors import safe_text
    try:
        handlers = {"run": commands.run, "estimate": commands.estimate, "compare": commands.compare,
                    "validate": commands.validate, "inspect": commands.inspect,
                    "import": commands.import_model,
                    "quantize": commands.quantize, "analyze": commands.analyze, "export": commands.export_model,
                    "tables": commands.tables, "plot": commands.plot, "sweep": commands.sweep}
        from .graph import no_limits
        with no_limits(getattr(args, "no_limits", False)):
            return handlers[args.command](args)
    except HwsimError as exc:
        print(f"hwsim: error: {exc.line()}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # output piped into head/less that closed early: not an error of the run
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:  # one line, exit 130 (simulator/interrupt.py: staged outputs are discarded by then)
        from . import interrupt
        return interrupt.report()
    except MemoryError:
        print(f"hwsim: error: out of memory: {commands.memory_advice(args)}", file=sys.stderr)
        return 2
    except Exception as exc:  # a bug in hwsim: still one line, with a way to get the details
        if os.environ.get("HWSIM_DEBUG"):
            raise
        print(f"hwsim: internal error: {type(exc).__name__}: {safe_text(exc, 300)} (set HWSIM_DEBUG=1 for a "
              f"traceback)", file=sys.stderr)
        return 3


def entry(argv=None) -> int:
    """main() with Ctrl-C and SIGTERM handled from start-up to exit — one line `hwsim: interrupted` (status
    130) or `hwsim: terminated` (143), no traceback, no partial output (simulator/interrupt.py). The `hwsim`
    console script (simulator/entry.py) calls it once its early signal handlers are in place."""
    from . import interrupt
    interrupt.install()
    try:
        with interrupt.guarded():
            status = main(argv)
            if status == 0:
                interrupt.check()  # an interrupt recorded but not yet raised (it waited for numba, say)
        return status
    except KeyboardInterrupt:
        return interrupt.report()


if __name__ == "__main__":
    sys.exit(entry())
