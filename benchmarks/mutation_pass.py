"""A small mutation pass over the kernels and units: does the test suite catch one small bug at a time?

    python benchmarks/mutation_pass.py [--only NAME ...] [--list]

Each mutation below replaces one exact snippet of one source file (a flipped comparison, an off-by-one bound,
a wrong constant). The repository is copied to a temporary directory (the working tree is never touched); for
each mutation the copy is patched, the core tests run there (`CORE_TESTS`, stopping at the first failure), and
the file is restored. A mutation is *caught* when the tests fail, *survived* when they pass. Results are
printed and written to benchmarks/results/mutation.json. Every mutation here was checked to change behaviour
(none is an equivalent rewrite), so a survivor is a hole in the tests.
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CORE_TESTS = ["tests/test_kernel_twins.py", "tests/test_fused_paths.py", "tests/test_fused_depthwise.py",
              "tests/test_byte_transpose.py", "tests/test_packed_binary.py", "tests/test_independent_models.py",
              "tests/test_kernels_mac.py", "tests/test_engine_vs_reference.py", "tests/test_units_requantizer.py",
              "tests/test_units_rounding.py", "tests/test_units_enq_knq.py", "tests/test_units_lut_pool_bin.py",
              "tests/test_zero_gating.py", "tests/test_pair_saturation.py", "tests/test_kernels_popcount.py",
              "tests/test_models.py", "tests/test_trace.py", "tests/test_units_ort.py"]   # the kernels' own tests first: a mutation fails sooner

# (name, file, original snippet, mutated snippet)
MUTATIONS = [
    ("saturating pairs: operand range", "simulator/kernels/pairsat.py",
     "danger = (wa * wb > 0) & (X_RANGE[1] * (np.abs(wa)", "danger = (wa * wb > 0) & (254 * (np.abs(wa)"),
    ("saturating pairs: code threshold", "simulator/kernels/pairsat.py",
     "x_min = np.clip((limit - X_RANGE[1] * w[:, ::-1]) // w + 1", "x_min = np.clip((limit - X_RANGE[1] * w[:, ::-1]) // w + 2"),
    ("saturating pairs: negative limit", "simulator/kernels/pairsat.py",
     "lim = np.uint16(32767 if positive else 32768)", "lim = np.uint16(32767)"),
    ("pair saturation count-only route corrects too", "simulator/engine.py",
     "g, fast.pad_code, apply=not pair_sat_kernel)", "g, fast.pad_code, apply=True)"),
    ("int8 activations on the u8 kernel unshifted", "simulator/engine.py",
     "    return 128 if enc.signed else 0", "    return 0"),
    ("pair-saturating step takes its pairs apart", "simulator/engine.py",
     "if cig % 2 == 0 and not np.any(lay.weight_enc.zero_point)", "if not np.any(lay.weight_enc.zero_point)"),
    ("depthwise float32 exactness bound", "simulator/kernels/codes_path.py",
     "dtype = np.float32 if bound < (1 << 24) else np.int64", "dtype = np.float32 if bound < (1 << 40) else np.int64"),
    ("int16 lane bound", "simulator/kernels/mac.py",
     "_INT16_MAX = (1 << 15) - 1", "_INT16_MAX = (1 << 15)"),
    ("int16 chunk factor (mac)", "simulator/kernels/mac.py",
     "chunk = ((1 << 31) - 1) // (2 * max(1, x_max) * max(1, w_max))",
     "chunk = ((1 << 31) - 1) // (max(1, x_max) * max(1, w_max))"),
    ("int16 chunk factor (codes path)", "simulator/kernels/codes_path.py",
     "chunk = ((1 << 31) - 1) // (2 * max(1, x_reach) * max(1, w_max))",
     "chunk = ((1 << 31) - 1) // (max(1, x_reach) * max(1, w_max))"),
    ("u8 offset folded into the bias with the wrong sign", "simulator/kernels/codes_path.py",
     "init = init + offset * w.astype(np.int64)", "init = init - offset * w.astype(np.int64)"),
    ("u8 pad byte", "simulator/engine.py",
     "plan.pad_value - fast.u8_offset, fast.w_max", "plan.pad_value + fast.u8_offset, fast.w_max"),
    ("u8 byte table offset", "simulator/engine.py",
     "plan.u8_bytes = (table - offset).astype(np.uint8)", "plan.u8_bytes = (table - offset + 1).astype(np.uint8)"),
    ("depthwise column phase ignored", "simulator/kernels/codes_path.py",
     "taps = np.array([((kh * g.sw + kw % g.sw) * wq", "taps = np.array([((kh * g.sw + 0) * wq"),
    ("tap range end (zero taps, max pool)", "simulator/kernels/im2col.py",
     "return first, max(first, min(n_out, (size - 1 + pad - k) // stride + 1))",
     "return first, max(first, min(n_out, (size + pad - k) // stride + 1))"),
    ("KNQ default pad code", "simulator/graph.py",
     "return int(np.argmin(np.abs(np.asarray(enc.centroids))))", "return int(np.argmin(np.asarray(enc.centroids)))"),
    ("TFLite add left shift", "simulator/units/residual_add.py",
     "shift = min(20, 30 - value_bits)", "shift = min(19, 30 - value_bits)"),
    ("round_float half_up tie", "simulator/units/rounding.py",
     "return r + ((x - r) >= 0.5)", "return r + ((x - r) > 0.5)"),
    ("epilogue float32 rounding", "simulator/kernels/epilogue.py",
     "dst[i] = np.int32(min(max(np.rint(m.dtype.type(row[i]) * mk), flo), fhi) + foff)",
     "dst[i] = np.int32(min(max(np.floor(m.dtype.type(row[i]) * mk + m.dtype.type(0.5)), flo), fhi) + foff)"),
    ("epilogue: a code offset that float32 cannot hold taken as linear", "simulator/kernels/epilogue.py",
     "max(abs(a), abs(b)) + abs(int(codes[0]) - a) < 1 << 24", "max(abs(a), abs(b)) + abs(int(codes[0]) - a) < 1 << 40"),
    ("epilogue clip bound", "simulator/kernels/epilogue.py",
     "dst[i] = table[min(max(v, lo), hi) - lo]", "dst[i] = table[min(max(v, lo), hi - 1) - lo]"),
    ("epilogue fixed-point nudge", "simulator/kernels/epilogue.py",
     "t = ab + (np.int64(1 << 30) if ab >= 0 else np.int64(1 - (1 << 30)))",
     "t = ab + (np.int64(1 << 29) if ab >= 0 else np.int64(1 - (1 << 30)))"),
    ("maxpool first input of a tap", "simulator/kernels/code_tables.py",
     "return first, end, first * stride + k - pad", "return first, end, first * stride + k - pad + 1"),
    ("requantizer srdhm nudge", "simulator/units/requantizer.py",
     "nudge = np.where(ab >= 0, np.int64(1 << 30), np.int64(1 - (1 << 30)))",
     "nudge = np.where(ab >= 0, np.int64(1 << 29), np.int64(1 - (1 << 30)))"),
    ("pair saturation bound", "simulator/kernels/pairsat.py",
     "s = min(max(p, -32768), 32767)", "s = min(max(p, -32768), 32766)"),
    ("sequential kernel skips zero weights wrongly", "simulator/kernels/mac.py",
     "if wv != 0:  # adding 0", "if wv > 0:  # adding 0"),
    ("XNOR byte counters past their limit", "simulator/kernels/popcount.py",
     "XORPOP_STEPS = 31 ", "XORPOP_STEPS = 32 "),
    ("small-image epilogue: multipliers tiled, not spread", "simulator/kernels/epilogue.py",
     "np.repeat(np.broadcast_to(m, (c,)), s)", "np.tile(np.broadcast_to(m, (c,)), s)"),
    ("1x1 pair-saturation counts over the batch: a pixel dropped", "simulator/kernels/pairsat.py",
     "shape = (1, g.co, 1, x.shape[3])", "shape = (1, g.co, 1, x.shape[3] - 1)"),
    ("pair-saturation sums lost at a flush", "simulator/kernels/pairsat.py",
     "total_delta[i] += delta[i]", "total_delta[i] += 0"),
    ("max pool at stride 2: the odd inputs read", "simulator/kernels/code_tables.py",
     "run[m] = max(run[m], seg[2 * m])", "run[m] = max(run[m], seg[2 * m + 1])"),
    ("max pool: a tap column's last output left out", "simulator/kernels/code_tables.py",
     "q_hi[b] = max(q_lo[b], min(ow, (w - 1 + pl - b) // sw + 1))", "q_hi[b] = max(q_lo[b], min(ow, (w - 1 + pl - b) // sw))"),
    ("zero coverage: a kernel row's stride ignored", "simulator/kernels/codes_path.py",
     "self.coverage[start:stop:step] += 1", "self.coverage[start:stop] += 1"),
    ("zero counts: padded windows of one image only", "simulator/kernels/codes_path.py",
     "total += g.n * g.ci * int(outside.sum())", "total += g.ci * int(outside.sum())"),
    ("zero map: the last position of a plane dropped", "simulator/kernels/codes_path.py",
     "                for q in range(hw):\n                    m[q] += np.int32(src[q] == z)",
     "                for q in range(hw - 1):\n                    m[q] += np.int32(src[q] == z)"),
    ("zero taps: the channel list ignored", "simulator/kernels/codes_path.py",
     "        c = channels[t]\n", "        c = t\n"),
    ("zero counts: the taps' sum taken for the total while some channel has no zero weight",
     "simulator/kernels/codes_path.py", "    if chosen.size == g.ci:", "    if chosen.size:"),
    ("zero taps: the phase's rows above a tap row kept", "simulator/kernels/codes_path.py",
     "for i in range(r0 % step, r0, step):", "for i in range(r0 % step, r0 - step, step):"),
    ("zero taps: the phase's rows below a tap row kept", "simulator/kernels/codes_path.py",
     "for i in range(r0 + count * step, h, step):", "for i in range(r0 + count * step + step, h, step):"),
    ("zero taps: one phase for every row", "simulator/kernels/codes_path.py",
     "            sums = phases[i % step]", "            sums = phases[0]"),
    ("zero counts: both-zero MACs added, not taken off", "simulator/kernels/codes_path.py",
     "return zero_act, zero_act + g.n * g.ho * g.wo * zero_w_total - both",
     "return zero_act, zero_act + g.n * g.ho * g.wo * zero_w_total + both"),
    ("pointwise zero count: a mismatch counted", "simulator/kernels/codes_path.py",
     "run += row[j] == z", "run += row[j] != z"),
    ("fused depthwise: the third tap of a kernel row reads the second's input", "simulator/kernels/codes_path.py",
     "a[c] = u0[c] * x0[c] + u1[c] * x1[c] + u2[c] * x2[c]", "a[c] = u0[c] * x0[c] + u1[c] * x1[c] + u2[c] * x1[c]"),
    ("fused depthwise float32 exactness bound", "simulator/kernels/codes_path.py",
     "dtype = np.float32 if bound < (1 << 24) else np.float64", "dtype = np.float32 if bound < (1 << 30) else np.float64"),
    ("fused depthwise: the first channel's bias for all", "simulator/kernels/codes_path.py",
     "row_cl[q] = np.int32(min(max(np.rint(ftype(np.int32(np.int32(acc[q]) + init_row[q])) * m_row[q]),",
     "row_cl[q] = np.int32(min(max(np.rint(ftype(np.int32(np.int32(acc[q]) + init_row[0])) * m_row[q]),"),
    ("byte transpose: second shuffle round pairs the wrong bytes", "simulator/kernels/byte_transpose.py",
     "x in (2 * j, 2 * j + 1, 16 + 2 * j,", "x in (2 * j, 2 * j + 1, 17 + 2 * j,"),
    ("byte transpose: a trailing column dropped", "simulator/kernels/byte_transpose.py",
     "for j in range(full_c, cols):", "for j in range(full_c, cols - 1):"),
    ("u8 canvas copy: an unpadded run cut to one row", "simulator/kernels/codes_path.py",
     "groups * ce, cig, (i1 - i0) * w, add)", "groups * ce, cig, w, add)"),
    ("depthwise band store: a pixel short", "simulator/kernels/codes_path.py",
     "(oh1 - oh0) * wo, c_n, 0)", "(oh1 - oh0) * wo - 1, c_n, 0)"),
    ("pair saturation: stride-1 offsets take the wrong column", "simulator/kernels/pairsat.py",
     "oa = ((ni * ci + c0 + taps[d, 0]) * hq + ka) * wq + taps[d, 2]",
     "oa = ((ni * ci + c0 + taps[d, 0]) * hq + ka) * wq + taps[d, 5]"),
    ("fresh counts lose the batch", "simulator/trace.py",
     "counts.name, counts.op, counts.batch = name, op, batch", "counts.name, counts.op, counts.batch = name, op, 1"),
    ("traffic memo: weights counted once per batch", "simulator/engine.py",
     "counts.weight_bits[key] = n * bits", "counts.weight_bits[key] = bits"),
    ("epilogue twin: the multipliers of the channel before", "simulator/kernels/epilogue.py",
     "mk = m[:1] if shared else m[np.arange(t0, t1) % c, None]", "mk = m[:1] if shared else m[np.arange(t0, t1) % c - 1, None]"),
    ("small-image epilogue twin: the last element of each image dropped", "simulator/kernels/epilogue.py",
     "i0, i1 = p0 * piece, min(size, p1 * piece)", "i0, i1 = p0 * piece, min(size - 1, p1 * piece)"),
    ("decode twin: spare canvas channels left as they were", "simulator/kernels/codes_path.py",
     "        dst[..., cig:] = 0\n", "        pass\n"),
    ("zero-tap twin: the row stride ignored", "simulator/kernels/codes_path.py",
     "per_position[:, r0:r1:rs, c0:c1:cs]", "per_position[:, r0:r1, c0:c1:cs]"),
    ("XNOR packing twin: values other than 0 and 1 not reported", "simulator/kernels/popcount.py",
     "return int(odd[t0 - first:t1 - first].sum())", "return 0"),
    ("packed sign bits one bit too high", "simulator/kernels/popcount.py",
     "row, lim, bit = acc[ni, ch], limit[ch], np.int32(1 << j)", "row, lim, bit = acc[ni, ch], limit[ch], np.int32(2 << j)"),
    ("packed XNOR dense: the spare bits' constant kept", "simulator/kernels/popcount.py",
     "return np.ascontiguousarray(out[0, :, 0, :].T) - np.int32(self.spare)",
     "return np.ascontiguousarray(out[0, :, 0, :].T)"),
    ("packed XNOR conv: spare bits of the last byte kept", "simulator/kernels/popcount.py",
     "                            byte &= mask", "                            byte &= np.uint64(0xFF)"),
    ("packed XNOR dense signs: the spare bits left out of the bias", "simulator/kernels/popcount.py",
     "signs_of = (np.clip(bias, -BIAS_BOUND, BIAS_BOUND) - self.spare,)",
     "signs_of = (np.clip(bias, -BIAS_BOUND, BIAS_BOUND),)"),
    ("XNOR sign limits: half the constant rounded up", "simulator/kernels/popcount.py",
     "above[:, :, :co] = (table + bias) >> 1", "above[:, :, :co] = (table + bias + 1) >> 1"),
    ("XNOR sign tiles: a pixel takes its left neighbour's column class", "simulator/kernels/im2col.py",
     "(row_base + col_class[min(ow + 1, wo - 1)]) * row_len + co0", "(row_base + col_class[ow]) * row_len + co0"),
    ("XNOR sign tiles: a sum at the limit counted as above (IR)", "simulator/kernels/microkernel.py",
     'masks.append(builder.icmp_signed(">", op.widen(builder, accs[p][v]), limit))',
     'masks.append(builder.icmp_signed(">=", op.widen(builder, accs[p][v]), limit))'),
    ("XNOR sign tiles: the spare channels' bits kept (IR)", "simulator/kernels/microkernel.py",
     "bits = builder.and_(_concat(builder, masks), keep)", "bits = _concat(builder, masks)"),
    ("depthwise 3x3 sums: kernel rows and columns swapped (IR)", "simulator/kernels/microkernel.py",
     "offsets = [builder.add(builder.add(builder.mul(ir.Constant(_I64, kh), pitch),",
     "offsets = [builder.add(builder.add(builder.mul(ir.Constant(_I64, kw), pitch),"),
    ("counted bytes: the masked tail's lanes match (IR)", "simulator/kernels/microkernel.py",
     "other = _splat(builder, builder.xor(value, ir.Constant(ir.IntType(8), 1)), vec)",
     "other = _splat(builder, value, vec)"),
    ("depthwise zero map: a band also counts the first row of the next", "simulator/kernels/codes_path.py",
     "own_hi = i_hi if b == bands - 1 else min(i_hi, (b + 1) * band * sh - top)",
     "own_hi = i_hi if b == bands - 1 else min(i_hi, (b + 1) * band * sh - top + 1)"),
    ("zero map: byte counters flushed past 255", "simulator/kernels/codes_path.py",
     "                if rows == 255:", "                if rows == 257:"),
    ("1x1 zero counts: the zero code's byte without the code offset", "simulator/kernels/codes_path.py",
     "np.uint8((0 if zero_code is None else zero_code - code_lo) & 0xFF)",
     "np.uint8((0 if zero_code is None else zero_code) & 0xFF)"),
    ("global average (ORT): the sum without the zero point", "simulator/kernels/code_tables.py",
     "r = np.rint(np.float32(total - in_zp * hw) * m)", "r = np.rint(np.float32(total) * m)"),
    ("global average (ORT): the clamp a code short", "simulator/kernels/code_tables.py",
     "out[t] = min(max(np.int64(r), lo - out_zp), hi - out_zp) + out_zp",
     "out[t] = min(max(np.int64(r), lo - out_zp), hi - out_zp - 1) + out_zp"),
    ("packed XNOR dense weights in channel-major order", "simulator/engine.py",
     "bits[..., :c] = plan.w_bits.reshape(co, c, h, w).transpose(0, 2, 3, 1)", "bits[..., :c] = plan.w_bits.reshape(co, h, w, c)"),
    ("tiers: a plan never takes a twin", "simulator/jit.py",
     "if projected > TWIN_WORK or kernel.signatures", "if projected >= 0 or kernel.signatures"),
    ("launcher: each chunk stops a task short (epilogue)", "simulator/kernels/epilogue.py",
     "_float_lines(n_tasks * c // chunks, n_tasks * (c + 1) // chunks, ",
     "_float_lines(n_tasks * c // chunks, n_tasks * (c + 1) // chunks - 1, "),
    ("launcher: each chunk starts a task late (micro-kernel tiles)", "simulator/kernels/im2col.py",
     "_run_tiles_nvec2(n_tasks * c // chunks, n_tasks * (c + 1) // chunks,",
     "_run_tiles_nvec2(n_tasks * c // chunks + 1, n_tasks * (c + 1) // chunks,"),
    ("launch: the task range one short", "simulator/kernels/threads.py",
     "counts = launch(n_tasks, parts, *args)", "counts = launch(n_tasks - 1, parts, *args)"),
    ("looked-up bytes: a code's neighbour's byte", "simulator/kernels/codes_path.py",
     "                looked[j] = raw_table[row[j]]", "                looked[j] = raw_table[row[j] ^ 1]"),
    ("raw byte table: int8 codes read as unsigned", "simulator/kernels/codes_path.py",
     "index = np.arange(256, dtype=np.uint8).view(np.dtype(dtype)).astype(np.int64) - code_lo",
     "index = np.arange(256, dtype=np.int64) - code_lo"),
    ("table epilogue: the lookup one code off", "simulator/kernels/epilogue.py",
     "        for i in range(row.shape[0]):\n            dst[i] = table[np.uint32(index[i])]",
     "        for i in range(row.shape[0]):\n            dst[i] = table[np.uint32(index[i] + 1)]"),
    ("comparator bank: a threshold counted when passed, not when reached", "simulator/kernels/epilogue.py",
     "                count[i] += np.int64(row[i]) >= level", "                count[i] += np.int64(row[i]) > level"),
]


def copy_repo(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True,
                           text=True, check=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def run_tests(where: Path, timeout: int, cache: Path) -> tuple[bool, float, str]:
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:warnings", "-p", "no:cacheprovider",
                               *CORE_TESTS], cwd=where, capture_output=True, text=True, timeout=timeout,
                              env={"PYTHONPATH": str(where), "PATH": "/usr/bin:/bin",
                                   "NUMBA_CACHE_DIR": str(cache), "HOME": str(where)})
    except subprocess.TimeoutExpired:
        return False, time.perf_counter() - t0, "timeout (counted as caught)"
    last = (proc.stdout.strip().splitlines() or [""])[-1]
    return proc.returncode == 0, time.perf_counter() - t0, last


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="run only the mutations whose name contains one of these")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--timeout", type=int, default=900)
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if not args.only or any(o in m[0] for o in args.only)]
    if args.list:
        print("\n".join(m[0] for m in chosen))
        return 0
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        copy_repo(work)
        # numba's cache keys a kernel on its own file only: a kernel compiled during a mutated run (another
        # file's callee inlined) would outlive the mutation. So the unmutated run fills a clean cache and every
        # mutated run starts from a fresh copy of it (a caller cached clean can then hide a callee's mutation,
        # a survivor to look at, but no mutation is reported caught for a stale kernel). A mutation of the IR
        # intrinsics (microkernel.py), which numba's cache does not track at all, starts from an empty cache.
        clean = work / ".numba_cache_clean"
        ok, secs, last = run_tests(work, args.timeout, clean)
        print(f"unmutated: {'pass' if ok else 'FAIL'} in {secs:.0f} s ({last})", flush=True)
        if not ok:
            print("the core tests fail without any mutation; fix that first")
            return 1
        for name, rel, old, new in chosen:
            path = work / rel
            text = path.read_text()
            if text.count(old) != 1:
                print(f"{name}: snippet not found exactly once in {rel} (the code moved): skipped", flush=True)
                results.append({"name": name, "file": rel, "status": "stale"})
                continue
            path.write_text(text.replace(old, new))
            cache = work / ".numba_cache"
            shutil.rmtree(cache, ignore_errors=True)
            if not rel.endswith("microkernel.py"):   # (the IR intrinsics' callers: numba's cache cannot tell)
                shutil.copytree(clean, cache)
            try:
                passed, secs, last = run_tests(work, args.timeout, cache)
            finally:
                path.write_text(text)
            status = "survived" if passed else "caught"
            print(f"{status:>8}  {name}  ({rel}, {secs:.0f} s: {last})", flush=True)
            results.append({"name": name, "file": rel, "status": status, "seconds": round(secs, 1), "tests": last})
    caught = sum(r["status"] == "caught" for r in results)
    survived = [r["name"] for r in results if r["status"] == "survived"]
    print(f"caught {caught} of {len(results)}" + (f"; survived: {', '.join(survived)}" if survived else ""))
    out = ROOT / "benchmarks" / "results" / "mutation.json"
    if args.only and out.exists():   # a partial pass updates its mutations in the saved results, keeps the rest
        ran = {r["name"]: r for r in results}
        kept = [ran.pop(r["name"], r) for r in json.loads(out.read_text())["results"]]
        results = [r for r in kept if any(m[0] == r["name"] for m in MUTATIONS)] + list(ran.values())
        caught = sum(r["status"] == "caught" for r in results)
        survived = [r["name"] for r in results if r["status"] == "survived"]
    out.write_text(json.dumps({"core_tests": CORE_TESTS, "results": results, "caught": caught,
                               "total": len(results), "survived": survived}, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
