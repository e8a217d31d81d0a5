"""Figures: a run's per-layer energy and cycle breakdowns (`hwsim run --plot`) and the Pareto front of a CSV of
design points (`hwsim plot`).

matplotlib is optional (the `plot` extra) and imported only here, only when a figure is drawn. The figures are
drawn on matplotlib's Agg canvas (no display needed) and returned as bytes, so the command's output plan
(fileio.Outputs) writes them like every other output: staged in a temporary file, renamed into place.
"""

from __future__ import annotations

import csv
import io
import math
import os

from .errors import HwsimError, safe_text

INSTALL = 'python -m pip install -e ".[plot]"'
FORMATS = {".png": "png", ".svg": "svg"}

# Columns where a larger value is the better one; every other column is better lower (energy, latency, area,
# cycles, EDP, leakage, and any parameter column).
HIGHER_IS_BETTER = ("accuracy", "throughput_inferences_per_s", "tops_per_w", "utilization")

# The two default panels of `hwsim plot`: (x column, y column).
DEFAULT_PANELS = (("energy_pj_per_inference", "accuracy"), ("latency_s", "area_mm2"))

# Columns that describe a design point's results or its identity; any other column (not energy_* / area_*,
# which are breakdowns) is a parameter of the point, shown in its label when it varies.
RESULT_COLUMNS = {"model", "hw", "hw_path", "technology", "technology_nm", "accuracy", "energy_pj_per_inference",
                  "cycles", "latency_s", "area_mm2", "edp_j_s", "clock_hz", "throughput_inferences_per_s",
                  "tops_per_w", "leakage_mw", "macs_per_inference", "gated_macs_per_inference",
                  "error"}   # a sweep's failed point: its message, no numbers (the point is not drawn)

MAX_CSV_BYTES = 64 << 20   # a results CSV from someone else is read whole: bounded
MAX_LABELS = 30            # front points labelled per panel (more would overlap into an unreadable block)


def higher_is_better(column: str) -> bool:
    return column in HIGHER_IS_BETTER


def pareto_front(xs, ys, maximize=(False, False)) -> list:
    """Which points (xs[i], ys[i]) are non-dominated: True per point.

    A point dominates another when it is at least as good in both coordinates and better in one (`maximize`
    says, per coordinate, whether larger is better). Equal points do not dominate each other, so duplicates
    on the front are all kept. Sort-and-sweep, O(n log n): after sorting by (x, y) in the "smaller is better"
    orientation, a point is dominated exactly when some earlier, different point has a y no larger."""
    sx = -1.0 if maximize[0] else 1.0
    sy = -1.0 if maximize[1] else 1.0
    pts = [(sx * float(x), sy * float(y)) for x, y in zip(xs, ys)]
    order = sorted(range(len(pts)), key=lambda i: pts[i])
    front = [False] * len(pts)
    best_y = math.inf   # smallest y among the points sorted before the current group of equal points
    i = 0
    while i < len(order):
        j = i
        while j < len(order) and pts[order[j]] == pts[order[i]]:
            j += 1
        y = pts[order[i]][1]
        for k in order[i:j]:
            front[k] = y < best_y
        best_y = min(best_y, y)
        i = j
    return front


# --------------------------------------------------------------------------------------------- checks

def figure_format(path: str, option: str) -> str:
    """'png' or 'svg' from the file name's extension; any other is one error line naming the file."""
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in FORMATS:
        raise HwsimError(f"unknown figure format {ext or '(no extension)'!r}: give a .png or .svg file",
                         source=str(path), field=option)
    return FORMATS[ext]


def require_matplotlib(option: str) -> None:
    """Fail early, before any work, when matplotlib is missing: one line saying what to install."""
    try:
        import matplotlib  # noqa: F401
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
    except ImportError:
        raise HwsimError(f"needs matplotlib, which is not installed: install the 'plot' extra: {INSTALL}",
                         field=option) from None


def _figure(nrows: int, ncols: int, size):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)   # Agg: renders without a display
    return fig, [fig.add_subplot(nrows, ncols, i + 1) for i in range(nrows * ncols)]


def _save(fig, fmt: str) -> bytes:
    buf = io.BytesIO()
    # no date in SVGs: the same figure gives the same file
    fig.savefig(buf, format=fmt, dpi=110, metadata={"Date": None} if fmt == "svg" else None)
    return buf.getvalue()


def _label(text, limit: int = 40) -> str:
    """A name from a file as figure text: at most `limit` characters (the middle cut out: layer names differ at
    their ends), escaped, and '$' kept literal (not a mathtext formula)."""
    text = str(text)
    if len(text) > limit:
        text = text[:limit // 2] + "…" + text[-(limit - limit // 2 - 1):]
    return safe_text(text, None).replace("$", r"\$")


# --------------------------------------------------------------------------------------------- run figure

def _energy_scale(values):
    """(divisor, unit) that keeps the largest per-layer energy readable."""
    top = max((abs(v) for v in values), default=0.0)
    for factor, unit in ((1e9, "mJ"), (1e6, "µJ"), (1e3, "nJ")):
        if top >= factor:
            return factor, unit
    return 1.0, "pJ"


def _stacked(ax, names, parts: dict, colors) -> None:
    """Bars per layer, one stacked segment per part (parts: part name -> value per layer)."""
    bottom = [0.0] * len(names)
    positions = range(len(names))
    for (part, values), color in zip(parts.items(), colors):
        ax.bar(positions, values, bottom=bottom, label=part, color=color, width=0.75)
        bottom = [b + v for b, v in zip(bottom, values)]
    ax.set_xticks(list(positions))
    ax.set_xticklabels([_label(n, 24) for n in names], rotation=45 if len(names) > 6 else 0, ha="right"
                       if len(names) > 6 else "center", fontsize=8 if len(names) > 20 else 9)
    ax.legend(fontsize=8, ncol=2 if len(parts) > 5 else 1)
    ax.grid(axis="y", alpha=0.3)


def run_figure(rep: dict, fmt: str) -> bytes:
    """Two panels for one run or estimate report: per-layer energy per inference stacked by the report's
    energy categories, and per-layer cycles per batch stacked as compute plus each stall cause. Categories and
    causes that are zero in every layer are left out of the legend."""
    import matplotlib

    layers = rep["layers"]
    names = [layer["name"] for layer in layers]
    cats = [c for c in rep["energy_breakdown_pj"] if any(lay["energy_breakdown_pj"].get(c) for lay in layers)]
    factor, unit = _energy_scale([lay["energy_pj"] for lay in layers])
    energy = {c: [lay["energy_breakdown_pj"].get(c, 0.0) / factor for lay in layers] for c in cats}
    causes = sorted({c for lay in layers for c, v in lay["stall_cycles"].items() if v})
    cycles = {"compute": [lay["compute_cycles"] for lay in layers]}
    cycles.update({f"stall: {c}": [lay["stall_cycles"].get(c, 0) for lay in layers] for c in causes})

    width = min(max(6.5, 0.45 * len(layers) + 3), 60.0)   # wider for more layers; bounded (Agg's pixel limit)
    fig, (ax_e, ax_c) = _figure(2, 1, (width, 7.5))
    cmap = matplotlib.colormaps["tab10" if max(len(energy), len(cycles)) <= 10 else "tab20"]
    _stacked(ax_e, names, energy, [cmap(i) for i in range(len(energy))])
    ax_e.set_ylabel(f"energy per inference ({unit})")
    hw = rep["hw"]
    network = (rep.get("model") or rep["network"])["name"]
    ax_e.set_title(f"{_label(network)} on {_label(hw['name'])}: energy by component, "
                   f"total {rep['energy_pj_per_inference'] / factor:.4g} {unit}", fontsize=10)
    _stacked(ax_c, names, cycles, ["0.55"] + [cmap(i) for i in range(len(cycles) - 1)])
    ax_c.set_ylabel(f"cycles per batch of {rep['batch']}")
    ax_c.set_title(f"cycles: compute and stalls by cause, total {rep['cycles']:,} "
                   f"({rep['latency_s'] * 1e6:.4g} µs at {rep['clock_hz'] / 1e6:.4g} MHz)", fontsize=10)
    return _save(fig, fmt)


# --------------------------------------------------------------------------------------------- results CSV

def read_results(paths) -> tuple[list, list]:
    """(columns, rows) of one or more results CSVs (as `compare --csv` writes; a sweep's too): rows as dicts of
    strings, columns in first-seen order over the files. Errors are one line naming the file."""
    columns, rows = {}, []
    for path in paths:
        try:
            size = os.path.getsize(path)
            if size > MAX_CSV_BYTES:
                raise HwsimError(f"is {size:,} bytes; a results CSV is read whole, at most {MAX_CSV_BYTES:,}",
                                 source=path)
            with open(path, "rb") as f:
                text = f.read(MAX_CSV_BYTES + 1).decode("utf-8-sig")
        except OSError as exc:
            raise HwsimError(f"cannot read file: {exc.strerror or exc}", source=path) from None
        except UnicodeDecodeError as exc:
            raise HwsimError(f"is not UTF-8 text (byte {exc.start})", source=path) from None
        reader = csv.DictReader(io.StringIO(text, newline=""))
        try:
            header = reader.fieldnames
            if not header:
                raise HwsimError("is empty: expected a header row (model, hw, energy_pj_per_inference, ...)",
                                 source=path)
            for name in header:
                columns.setdefault(name, None)
            for row in reader:
                row.pop(None, None)   # cells beyond the header: no column to put them in
                row["_file"] = path
                rows.append(row)
        except csv.Error as exc:
            raise HwsimError(f"line {reader.line_num}: not valid CSV: {exc}", source=path) from None
    return list(columns), rows


def _number(text):
    """A finite float from a cell, or None (empty, not a number, inf, nan)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def point_labels(columns: list, rows: list) -> list:
    """A short label per row: hw, then model when several models are present, then every parameter column
    (neither a result nor a breakdown) whose value varies, as name=value."""
    def varies(col):
        return len({r.get(col) for r in rows}) > 1

    parts = [c for c in ("hw", "model") if c in columns and (c == "hw" or varies(c))]
    params = [c for c in columns if c not in RESULT_COLUMNS and not c.startswith(("energy_", "area_"))
              and varies(c)]
    labels = []
    for i, row in enumerate(rows):
        text = "/".join([str(row.get(c) or "") for c in parts] + [f"{c}={row.get(c)}" for c in params])
        labels.append(safe_text(text or f"row {i + 1}", 60))   # printed in the summary as well as drawn
    return labels


def _direction(column: str) -> str:
    return "higher is better" if higher_is_better(column) else "lower is better"


def pareto_figure(columns: list, rows: list, panels, fmt: str, source: str,
                  chosen: bool = False) -> tuple[bytes, list]:
    """One panel per (x, y) column pair: every point drawn, the non-dominated ones marked, joined and labelled.
    Returns the figure and one summary line per panel. A panel without a single point with numbers in both
    columns (or, unless the columns were `chosen` by the user, without one of them) is left out, said in its
    summary line; when every panel is, that is the error."""
    from matplotlib.ticker import NullFormatter

    labels = point_labels(columns, rows)
    drawn, lines = [], {}   # lines: (x, y) -> that panel's summary line
    for x_col, y_col in panels:
        missing = [col for col in (x_col, y_col) if col not in columns]
        if missing and chosen:
            raise HwsimError(f"has no column {missing[0]!r} (columns: {', '.join(columns)})", source=source,
                             field="--x" if missing[0] == x_col else "--y")
        if missing:
            lines[x_col, y_col] = f"{x_col} vs {y_col}: left out, no column {missing[0]!r}"
            continue
        points = [(_number(r.get(x_col)), _number(r.get(y_col)), labels[i]) for i, r in enumerate(rows)]
        points = [p for p in points if p[0] is not None and p[1] is not None]
        if not points:
            lines[x_col, y_col] = f"{x_col} vs {y_col}: left out, no row has numbers in both columns"
            continue
        drawn.append((x_col, y_col, points))
    if not drawn:
        raise HwsimError("no panel to draw: " + "; ".join(lines.values()), source=source)

    fig, axes = _figure(1, len(drawn), (6.5 * len(drawn), 5.2))
    for ax, (x_col, y_col, points) in zip(axes, drawn):
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        front = pareto_front(xs, ys, (higher_is_better(x_col), higher_is_better(y_col)))
        best = sorted((p for p, f in zip(points, front) if f), key=lambda p: (p[0], p[1]))
        ax.scatter(xs, ys, s=18, color="0.6", label=f"design points ({len(points)})", zorder=2)
        ax.plot([p[0] for p in best], [p[1] for p in best], "-o", color="tab:red", ms=6, lw=1,
                label=f"Pareto front ({len(best)})", zorder=3)
        for x, y, text in best[:MAX_LABELS]:
            ax.annotate(_label(text, 80), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
        for axis, values in ((ax.xaxis, xs), (ax.yaxis, ys)):   # values spanning decades (a TPU's mm2 beside a
            if min(values) > 0 and max(values) / min(values) > 100:   # tiny array's): log scale
                (ax.set_xscale if axis is ax.xaxis else ax.set_yscale)("log")
                axis.set_minor_formatter(NullFormatter())   # labels on the decades only: no overlapping text
        ax.set_xlabel(f"{x_col} ({_direction(x_col)})")
        ax.set_ylabel(f"{y_col} ({_direction(y_col)})")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        more = f" ({len(best) - MAX_LABELS} more not labelled)" if len(best) > MAX_LABELS else ""
        lines[x_col, y_col] = (f"{x_col} vs {y_col}: {len(points)} points, {len(best)} on the Pareto front: "
                               + ", ".join(p[2] for p in best[:MAX_LABELS]) + more)
    return _save(fig, fmt), [lines[tuple(panel)] for panel in panels]
