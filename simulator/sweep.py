"""`hwsim sweep SPEC.yaml --out RESULTS.csv`: cost models on many design points, one CSV row per point.

A spec (docs/sweep.md) names models, a dataset, designs and a grid over `--set` paths (or a seeded random
sample of it). Each model runs on the engine once, in this process; its traced workloads are then costed on
every design point by worker processes (--jobs) or a dask.distributed cluster (--dask), points batched per task
so a worker's start-up (numba, kernels) is paid once. Each finished point is appended to RESULTS.csv at once
(header written once, rows flushed), so an interrupted sweep resumes where it stopped: points whose row
(model, hw and grid values) is already in the file are skipped. A point that fails gets a row with an `error`.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import itertools
import math
import os
import sys
import time
from dataclasses import dataclass

from .csvout import _cell, compare_columns, design_row
from .errors import HwsimError, safe_text

SPEC_KEYS = ("models", "dataset", "hw", "grid", "sample", "batch", "limit")
MAX_POINTS = 100_000          # a full grid larger than this needs `sample:`
MAX_POINTS_PER_TASK = 16      # points costed per worker task: start-up amortised, rows still arrive often
# What starting the worker processes costs before their first point (Python, numba and the cost model's kernel
# in each, beside this process): 2 workers on a 2-core machine, benchmarks/results/sweep.json `pool` - `jobs1`.
POOL_START_S = 6.0
DASK_HINT = 'python -m pip install -e ".[dask]"'


@dataclass
class Spec:
    path: str
    models: list            # model files, as written (relative to the current directory)
    dataset: str | None
    hw: list                # design names or files, as written
    grid: dict              # path as written -> list of values, in spec order
    sample: dict | None     # {"n": int, "seed": int}
    batch: int
    limit: int | None


@dataclass
class Plan:
    """A validated sweep: the spec, its models and designs loaded, the points and the CSV columns."""
    spec: Spec
    models: list            # loaded Model objects, spec order
    designs: list           # base Hardware (no grid values), spec order
    grid_paths: list        # architecture paths the grid sets (no 'architecture.' prefix), spec order
    points: list            # (model index, hw index, grid values tuple), in sweep order
    columns: list


# ------------------------------------------------------------------------------------------------ the spec

def load_spec(path: str) -> Spec:
    """Read and check SPEC.yaml's structure (files and paths are checked by `plan`). One HwsimError naming the
    spec file and the field on any problem."""
    from .safeyaml import load_yaml, read_document

    if not os.path.isfile(path):
        raise HwsimError("file not found" if not os.path.exists(path) else "not a regular file", source=path)
    data = load_yaml(read_document(path, path, "a sweep spec"), path)
    if not isinstance(data, dict):
        raise HwsimError("must be a YAML mapping with models, hw and grid", source=path)

    def fail(field, message):
        raise HwsimError(message, source=path, field=field)

    for key in data:
        if key not in SPEC_KEYS:
            close = difflib.get_close_matches(str(key), SPEC_KEYS, n=1)
            fail(str(key), "unknown key" + (f"; did you mean '{close[0]}'?" if close else "")
                 + f" (a spec has {', '.join(SPEC_KEYS)})")
    for key in ("models", "hw", "grid"):
        if key not in data:
            fail(key, "missing (a spec needs models, hw and grid)")

    def names(key):
        value = data[key]
        value = [value] if isinstance(value, str) else value
        if not isinstance(value, list) or not value:
            fail(key, "must be a file name or a non-empty list of them")
        for i, item in enumerate(value):
            if not isinstance(item, str) or not item.strip():
                fail(f"{key}[{i}]", "must be a file name")
        return value

    dataset = data.get("dataset")
    if dataset is not None and (not isinstance(dataset, str) or not dataset.strip()):
        fail("dataset", "must be the path of an .npz with x and y")
    grid = data["grid"]
    if not isinstance(grid, dict) or not grid:
        fail("grid", "must be a non-empty mapping PATH: [values...] (PATH: any --set path)")
    for key, values in grid.items():
        if not isinstance(key, str) or not key.strip():
            fail("grid", f"a path must be text, got {key!r}")
        if not isinstance(values, list) or not values:
            fail(f"grid.{key}", "must be a non-empty list of values")
        for value in values:
            if not _plain_value(value):
                fail(f"grid.{key}", f"values must be numbers, text, true/false or lists of those, got {value!r}")
    sample = data.get("sample")
    if sample is not None:
        if not isinstance(sample, dict) or set(sample) - {"n", "seed"} or "n" not in sample:
            fail("sample", "must be {n: POINTS, seed: S} (seed optional, default 0)")
        sample = {"n": sample["n"], "seed": sample.get("seed", 0)}
        for key, low in (("n", 1), ("seed", 0)):
            if not _is_int(sample[key]) or sample[key] < low:
                fail(f"sample.{key}", f"must be an integer >= {low}, got {sample[key]!r}")
    for key in ("batch", "limit"):
        if key in data and (not _is_int(data[key]) or data[key] < 1):
            fail(key, f"must be a positive integer, got {data[key]!r}")
    return Spec(path=path, models=names("models"), dataset=dataset, hw=names("hw"), grid=dict(grid),
                sample=sample, batch=data.get("batch", 1), limit=data.get("limit"))


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_value(value) -> bool:
    if isinstance(value, list):
        return bool(value) and all(_plain_value(v) and not isinstance(v, list) for v in value)
    return isinstance(value, (int, float, str)) and not (isinstance(value, str) and not value.strip())


def set_text(value) -> str:
    """A grid value as the text of `--set PATH=TEXT` that reads back as the same value (YAML flow style)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=1 << 30)
    return text.removesuffix("\n...\n").strip()


def grid_points(grid: dict, sample: dict | None) -> list:
    """The grid's points as value tuples in grid order (the last path varies fastest); with `sample`, `n` of
    them drawn without replacement by a generator seeded with `seed` (reproducible), kept in grid order."""
    import numpy as np

    axes = list(grid.values())
    total = math.prod(len(values) for values in axes)
    if sample is None:
        return list(itertools.product(*axes))
    n = min(sample["n"], total)
    chosen = np.random.default_rng(sample["seed"]).choice(total, size=n, replace=False)
    points = []
    for index in sorted(int(i) for i in chosen):
        values = []
        for axis in reversed(axes):     # mixed-radix digits of the index, last path fastest
            index, digit = divmod(index, len(axis))
            values.append(axis[digit])
        points.append(tuple(reversed(values)))
    return points


def plan(spec: Spec, out: str | None = None) -> Plan:
    """Load the models and the base designs, check every grid path against every design, expand the points:
    every problem of the spec is found here, before any work. `out`: the results file, which must not be an
    input of the sweep."""
    from .hw.arch import canonical_path, flatten_paths
    from .hw.cost import check_batch
    from .qnn.model_io import load_model

    src = spec.path

    def wrapped(field, exc):
        return HwsimError(exc.line(), source=src, field=field)

    models = []
    for i, path in enumerate(spec.models):
        if not os.path.isfile(path):
            raise HwsimError(f"{_missing(path)}: {safe_text(path)}", source=src, field=f"models[{i}]")
        try:
            models.append(load_model(path))
        except HwsimError as exc:
            raise wrapped(f"models[{i}]", exc) from None
    if spec.dataset is not None and not os.path.isfile(spec.dataset):
        raise HwsimError(f"{_missing(spec.dataset)}: {safe_text(spec.dataset)}", source=src, field="dataset")
    designs = []
    for i, arg in enumerate(spec.hw):
        try:
            designs.append(_load_hardware(arg))
        except HwsimError as exc:
            raise wrapped(f"hw[{i}]", exc) from None
    for what, items in (("models", [m.name for m in models]), ("hw", [d.arch.name for d in designs])):
        for i, name in enumerate(items):
            if name in items[:i]:
                raise HwsimError(f"{what}[{items.index(name)}] and {what}[{i}] are both named '{safe_text(name)}' "
                                 f"(rows are identified by model and design name)", source=src, field=f"{what}[{i}]")

    grid_paths = []
    for key in spec.grid:
        path = canonical_path(key)
        if path in grid_paths:
            raise HwsimError(f"sets the same field as another grid path ({path})", source=src, field=f"grid.{key}")
        for hw, arg in zip(designs, spec.hw):
            leaves = flatten_paths(hw.arch.resolved)
            if path not in leaves:
                close = difflib.get_close_matches(path, list(leaves), n=1, cutoff=0.5)
                hint = f"; did you mean 'architecture.{close[0]}'?" if close else ""
                raise HwsimError(f"no such field in design {safe_text(arg)}{hint} (a grid path is any leaf of "
                                 f"the report's 'architecture', as --set takes it)", source=src,
                                 field=f"grid.{key}")
        grid_paths.append(path)
    total = math.prod(len(v) for v in spec.grid.values())
    if spec.sample is None and total > MAX_POINTS:
        raise HwsimError(f"has {total:,} points, more than {MAX_POINTS:,}: add sample: {{n: N, seed: 0}}",
                         source=src, field="grid")
    try:
        check_batch(spec.batch)
    except HwsimError as exc:
        raise HwsimError(exc.message, source=src, field="batch") from None
    values = grid_points(spec.grid, spec.sample)
    points = [(m, h, v) for m in range(len(models)) for h in range(len(designs)) for v in values]
    columns = _columns(spec, designs, grid_paths)
    if out is not None:
        _check_out(out, spec, designs)
    return Plan(spec, models, designs, grid_paths, points, columns)


def _missing(path: str) -> str:
    return "not a regular file" if os.path.exists(path) else "file not found"


def _load_hardware(arg, sets=()):
    from .hw.arch import load_hardware

    try:
        return load_hardware(arg, list(sets))
    except OSError as exc:   # a path the system refuses
        raise HwsimError(f"cannot open: {exc.strerror or exc}", source=arg) from None


def _columns(spec: Spec, designs: list, grid_paths: list) -> list:
    """model, hw, one column per grid path (as written in the spec), then compare --csv's columns, then error.

    The header is written before any point is costed, so its area columns are every unit a point can have:
    the base designs' units, plus the optional units (count 0 -> N) the grid can add."""
    from .hw.area import design_area
    from .hw.cost import ENERGY_CATEGORIES

    areas = {}
    for hw in designs:
        areas.update(dict.fromkeys(design_area(hw.tech, hw.arch).breakdown_mm2))
    for path in grid_paths:
        if path.startswith("units."):
            areas.setdefault("units." + path.split(".")[1], None)
    fake = {"designs": [{"energy_breakdown_pj": dict.fromkeys(ENERGY_CATEGORIES), "area_breakdown_mm2": areas}]}
    cols = compare_columns(fake)
    grid_cols = list(spec.grid)
    clash = set(grid_cols) & set(cols + ["error"])
    if clash:
        raise HwsimError(f"grid path '{clash.pop()}' clashes with a result column", source=spec.path, field="grid")
    return cols[:2] + grid_cols + cols[2:] + ["error"]


def _check_out(out: str, spec: Spec, designs: list) -> None:
    """RESULTS.csv must be a file we may append to and none of the sweep's inputs."""
    from .fileio import STDOUT, check_output_target

    if out == STDOUT:
        raise HwsimError("a sweep appends its rows to a file (so it can resume): give a file name", field="--out")
    check_output_target(out)
    if not os.path.exists(out):
        return
    for path in [spec.path, *spec.models, spec.dataset, *(hw.path for hw in designs)]:
        try:
            same = path is not None and os.path.samefile(out, path)
        except OSError:
            same = False
        if same:
            raise HwsimError(f"is an input of the sweep ({safe_text(path)}): refusing to write results into it",
                             source=out, field="--out")


# ------------------------------------------------------------------------------------------------ CSV rows

def _text(value) -> str:
    """A cell's text exactly as it is written (and read back on resume): formula-safe, numbers in full."""
    value = _cell(value)
    return "" if value is None else str(value)


def grid_cells(values: tuple) -> list:
    """The CSV text of a point's grid values: numbers as numbers, text as is, true/false and lists as --set
    takes them."""
    out = []
    for v in values:
        plain = isinstance(v, (int, float, str)) and not isinstance(v, bool)
        out.append(_text(v if plain else set_text(v)))
    return out


def point_key(plan_: Plan, point) -> tuple:
    """What identifies a point's row: model name, design name and grid values, as CSV text."""
    m, h, values = point
    return (_text(plan_.models[m].name), _text(plan_.designs[h].arch.name), *grid_cells(values))


def _row_key(row: dict, plan_: Plan) -> tuple:
    return (row.get("model", ""), row.get("hw", ""), *(row.get(c, "") for c in plan_.spec.grid))


def read_done(out: str, plan_: Plan) -> set:
    """Keys of the rows already in RESULTS.csv (an empty set for a new or empty file). A header that is not
    this sweep's is refused; a last line cut short by an interruption is removed."""
    try:
        with open(out, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return set()
    except OSError as exc:
        raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=out, field="--out") from None
    if not data:
        return set()
    rows = list(csv.reader(data.decode("utf-8", errors="replace").splitlines()))
    if rows[0] != plan_.columns:    # checked first: someone else's file is never modified
        raise HwsimError("holds another sweep's columns (a different grid or designs): give another --out or "
                         "remove the file", source=out, field="--out")
    if not data.endswith(b"\n"):   # a row half written when the sweep was killed: drop it, the point reruns
        with open(out, "r+b") as f:
            f.truncate(data.rfind(b"\n") + 1)
        rows.pop()
    return {_row_key(dict(zip(rows[0], row)), plan_) for row in rows[1:]}


class RowWriter:
    """Appends rows to RESULTS.csv, each flushed as soon as it is written (the header once, on a new file)."""

    def __init__(self, out: str, columns: list):
        self.columns = columns
        new = not os.path.exists(out) or os.path.getsize(out) == 0
        try:
            self.file = open(out, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise HwsimError(f"cannot write file: {exc.strerror or exc}", source=out, field="--out") from None
        self.writer = csv.writer(self.file, lineterminator="\n")
        if new:
            self.write_texts(columns)

    def write_texts(self, texts: list) -> None:
        self.writer.writerow(texts)
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# ------------------------------------------------------------------------------------------------ workers

def cost_points(task: dict) -> list:
    """Cost a batch of one model's points (runs in a worker process or on a Dask worker): for each point,
    (point number, the compare --csv row, None) or (point number, None, error text)."""
    import warnings

    import numpy as np

    from . import report
    from .hw.cost import estimate

    out = []
    with warnings.catch_warnings(), np.errstate(all="ignore"):   # as the CLI: no stray warning lines
        warnings.simplefilter("ignore")
        for number, hw_arg, sets in task["points"]:
            try:
                hw = _load_hardware(hw_arg, sets)
                cost = estimate(task["workloads"], hw, task["batch"])
                rep = report.cost_report(cost, task["model_path"], task["model_name"])
                out.append((number, design_row(rep, task["accuracy"], task["columns"]), None))
            except HwsimError as exc:
                out.append((number, None, exc.line()))
            except Exception as exc:   # a bug or a resource limit on one point must not end the sweep
                out.append((number, None, f"internal error: {type(exc).__name__}: {safe_text(exc, 300)}"))
    return out


def _warm_up() -> None:
    """Import the cost model and load its kernel in a worker, while this process runs the models on the engine."""
    try:
        from . import report  # noqa: F401
        from .hw import access, cost  # noqa: F401
        access.warm_up()
    except Exception:   # the first point loads it anyway
        pass


def _worker_init() -> None:
    """A pool worker: Ctrl-C is the parent's to handle (it cancels the pool; see _children_ignore_ctrl_c)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up()


def _noop() -> None:
    return None


@contextlib.contextmanager
def _children_ignore_ctrl_c():
    """Worker processes started inside inherit SIGINT ignored (Python keeps an ignored SIGINT at start-up), so a
    Ctrl-C at the terminal, which reaches the whole process group, interrupts this process only: it stops the
    workers itself, and no worker prints a traceback of its own."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class _Pool:
    """Local worker processes (--jobs N), all started at once and kept for every batch."""

    def __init__(self, jobs: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # spawn, not fork: this process has numba's threads and the engine's worker threads running
        self.executor = ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_worker_init)
        with _children_ignore_ctrl_c():
            self.executor.submit(_noop)   # launches the workers now

    def submit(self, task):
        return self.executor.submit(cost_points, task)

    def results(self, futures):
        from concurrent.futures import as_completed
        from concurrent.futures.process import BrokenProcessPool

        try:
            for future in as_completed(futures):
                yield future.result()
        except BrokenProcessPool:   # killed (out of memory?): the rows so far are kept, a rerun resumes
            raise HwsimError("a worker process died; the rows written so far are kept: rerun the same command "
                             "to resume (--jobs 1 runs every point in this process)", field="--jobs") from None

    def close(self, cancel: bool) -> None:
        self.executor.shutdown(wait=not cancel, cancel_futures=cancel)


def check_dask() -> None:
    """--dask needs the 'dask' extra: one line saying how to install it (checked before any work)."""
    try:
        import dask.distributed  # noqa: F401
    except ImportError:
        raise HwsimError(f"needs the 'dask' extra (dask[distributed]): {DASK_HINT}", field="--dask") from None


class _Dask:
    """The same interface as _Pool, on a dask.distributed cluster: a scheduler's address (tcp://host:port), or
    local:N for a LocalCluster of N worker processes started here."""

    def __init__(self, address: str):
        import logging

        from dask.distributed import Client, LocalCluster

        if address.startswith("local:"):
            n = address[len("local:"):]
            if not n.isdigit() or int(n) < 1:
                raise HwsimError(f"local:N needs a positive number of workers, got {address!r}", field="--dask")
            with _children_ignore_ctrl_c():
                cluster = LocalCluster(n_workers=int(n), threads_per_worker=1, processes=True,
                                       dashboard_address=None, silence_logs=logging.ERROR)
            self.client = Client(cluster)
        else:
            try:
                self.client = Client(address, timeout="20s")
            except (OSError, TimeoutError, ValueError) as exc:
                raise HwsimError(f"cannot reach the Dask scheduler: {safe_text(exc, 200)}", source=address,
                                 field="--dask") from None
        # one warm-up task per worker, running while this process runs the models (kept: a released future
        # may be cancelled)
        self.warm = [self.client.submit(_warm_up, workers=[w], pure=False, key=f"hwsim-warm-up-{i}-{w}")
                     for i, w in enumerate(self.client.scheduler_info()["workers"])]

    def workers(self) -> int:
        try:
            return max(1, len(self.client.scheduler_info()["workers"]))
        except Exception:
            return 1

    def submit(self, task):
        return self.client.submit(cost_points, task, pure=False)

    def results(self, futures):
        from dask.distributed import as_completed

        for future in as_completed(futures):
            try:
                result = future.result()
            except Exception as exc:   # e.g. a worker without hwsim installed: cost_points itself never raises
                raise HwsimError(f"a Dask worker failed: {type(exc).__name__}: {safe_text(exc, 200)} (every worker "
                                 f"needs hwsim installed, docs/sweep.md)", field="--dask") from None
            yield result

    def close(self, cancel: bool) -> None:
        cluster = getattr(self.client, "cluster", None)   # local:N: the cluster started here
        self.client.close()
        if cluster is not None:
            cluster.close()


# ------------------------------------------------------------------------------------------------ running

def run_sweep(plan_: Plan, out: str, jobs: int | None = None, dask: str | None = None,
              quiet: bool = False) -> dict:
    """Cost every point of `plan_` not yet in `out`, appending its row. Returns what was done: points,
    skipped (already in the file), costed, errors, functional_runs (models run on the engine), wall_s."""
    t0 = time.perf_counter()
    done = read_done(out, plan_)
    pending = [i for i, p in enumerate(plan_.points) if point_key(plan_, p) not in done]
    stats = {"points": len(plan_.points), "skipped": len(plan_.points) - len(pending), "costed": 0,
             "errors": 0, "functional_runs": 0}
    runner = _Dask(dask) if pending and dask else None
    workers = runner.workers() if runner else max(1, min(jobs or os.cpu_count() or 1, len(pending)))
    writer = None
    bar = _progress_bar(len(pending), quiet)
    try:
        def write(results):
            nonlocal writer
            writer = writer or RowWriter(out, plan_.columns)   # opened with the first row: a model or dataset
            for number, row, error in results:                 # that fails to run leaves no file behind
                writer.write_texts(_row_texts(plan_, number, row, error))
                stats["costed"] += 1
                stats["errors"] += error is not None
                if bar is not None:
                    bar.update(1)

        futures, here_s = [], []    # seconds per point costed here
        for task in _tasks(plan_, pending, workers, quiet, stats):
            points = list(task["points"])
            while points and runner is None and not _pool_pays(here_s, len(pending) - stats["costed"], workers):
                start = time.perf_counter()
                write(cost_points({**task, "points": [points.pop(0)]}))
                here_s.append(time.perf_counter() - start)
            if points:
                runner = runner or _Pool(workers)
                futures.append(runner.submit({**task, "points": points}))
                finished = [f for f in futures if f.done()]   # their rows now, not after the next model's run
                for results in runner.results(finished):
                    write(results)
                futures = [f for f in futures if not any(f is g for g in finished)]
        if runner is not None:
            for results in runner.results(futures):
                write(results)
    except BaseException:
        if runner is not None:
            runner.close(cancel=True)
            runner = None
        raise
    finally:
        if runner is not None:
            runner.close(cancel=False)
        if bar is not None:
            bar.close()
        if writer is not None:
            writer.close()
    stats["wall_s"] = time.perf_counter() - t0
    return stats


def _progress_bar(total: int, quiet: bool):
    """tqdm's bar on standard error when it is a terminal (not with --quiet, not in logs); else None."""
    if quiet or not total or not sys.stderr.isatty():
        return None
    try:
        from tqdm import tqdm
    except ImportError:   # an install from before tqdm was a dependency: no bar, the sweep is the same
        return None
    return tqdm(total=total, unit="point", file=sys.stderr, dynamic_ncols=True)


def _pool_pays(here_s: list, points_left: int, workers: int) -> bool:
    """Whether starting worker processes ends the sweep sooner than costing the points left here: they take
    points_left x (a point's time here) here, that / workers + POOL_START_S (the workers' start-up) on the pool.
    A point's time is the median of a few costed here (not the first: it may wait for the cost model's kernel)."""
    if workers < 2 or len(here_s) < 3:
        return workers >= 2 and POOL_START_S == 0
    work_s = points_left * sorted(here_s[1:])[len(here_s[1:]) // 2]
    return work_s > work_s / workers + POOL_START_S


def _tasks(plan_: Plan, pending: list, workers: int, quiet: bool, stats: dict):
    """The worker tasks, model by model: a model runs on the engine once (here) when its first pending point
    is due; a model with none pending is not run. Points are batched per task, a few tasks per worker, so a
    worker's start-up is paid once and every worker stays busy to the end."""
    from types import SimpleNamespace

    from .commands import _functional_run
    from .importers.qnn_shapes import workloads_from_model

    spec = plan_.spec
    chunk = max(1, min(MAX_POINTS_PER_TASK, len(pending) // (workers * 4)))
    for m, model in enumerate(plan_.models):
        mine = [i for i in pending if plan_.points[i][0] == m]
        if not mine:
            continue
        args = SimpleNamespace(dataset=spec.dataset, input=None, limit=spec.limit, batch_size=512, quiet=quiet)
        result, accuracy, _ = _functional_run(args, model)
        stats["functional_runs"] += 1
        base = {"workloads": workloads_from_model(model, result.trace), "model_name": model.name,
                "model_path": spec.models[m], "accuracy": accuracy, "batch": spec.batch,
                "columns": plan_.columns}
        for start in range(0, len(mine), chunk):
            points = []
            for i in mine[start:start + chunk]:
                _, h, values = plan_.points[i]
                sets = [f"{path}={set_text(v)}" for path, v in zip(plan_.grid_paths, values)]
                points.append((i, spec.hw[h], sets))
            yield {**base, "points": points}


def _row_texts(plan_: Plan, number: int, row: dict | None, error: str | None) -> list:
    """The CSV texts of point `number`'s row: its figures, or only its identity and the error."""
    m, h, values = plan_.points[number]
    row = dict(row) if row is not None else {"batch": plan_.spec.batch, "error": error}
    # identity columns from this process (a remote worker may resolve a design's path elsewhere)
    row.update({"model": plan_.models[m].name, "hw": plan_.designs[h].arch.name, "hw_path": plan_.designs[h].path})
    texts = [_text(row.get(c)) for c in plan_.columns]
    for col, cell in zip(plan_.spec.grid, grid_cells(values)):
        texts[plan_.columns.index(col)] = cell
    return texts


def summary_line(out: str, stats: dict) -> str:
    return (f"{out}: {stats['points']} points: {stats['costed']} costed ({stats['errors']} with an error), "
            f"{stats['skipped']} already in the file; {stats['functional_runs']} functional run(s); "
            f"{stats['wall_s']:.1f} s")
