"""`edgeface report`'s rendering: Markdown and HTML tables, notes, and the plots (matplotlib).

The numbers come from :mod:`edgeface._report`; nothing here measures anything.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from ._report import REPORT_FAR, _pct, _size
from ._report_latency import _describe_device

if TYPE_CHECKING:
    from ._report import Report, VariantRow


def _cell(value: Any, fmt: str = "{}") -> str:
    return "-" if value is None else fmt.format(value)


def _protocol_line(protocol: dict[str, Any]) -> str:
    counts = (f"{protocol['num_pairs']} pairs ({protocol['num_same']} same, {protocol['num_different']} different) "
              f"of {protocol['num_identities']} people, {protocol['num_images']} images")
    folds = protocol["folds"]
    fold_text = f"folds {folds[0]}-{folds[-1]}" if folds == list(range(folds[0], folds[-1] + 1)) else \
        f"folds {', '.join(map(str, folds))}"
    if protocol["kind"] == "pairs":
        where = f"{Path(protocol['pairs_file']).name} {fold_text}, images {protocol['images']}"
    else:
        where = (f"generated from {protocol['dataset']} (seed {protocol['seed']}, {len(folds)} folds)")
    cv = f"accuracy: threshold chosen by {len(folds)}-fold cross-validation" if len(folds) > 1 else \
        "accuracy: threshold chosen by 10-fold cross-validation within the fold"
    return f"{where}: {counts}; {cv}"


def _quality_table(report: Report) -> tuple[list[str], list[list[str]]]:
    header = ["variant", "file", "gzip", "parameters", "sparsity", "accuracy % (± std)",
              f"TAR % @ FAR {REPORT_FAR:g}", "EER %", "AUC", "cosine to keras (mean / min)",
              "stored threshold (FAR)", "FAR here"]
    body = []
    for row in report.rows:
        point = row.operating_point()
        tar = "-" if point is None else _pct(point["tar"]) + (" †" if point["limited_by_negatives"] else "")
        agreement = row.cosine_to_keras
        cosine = "ref" if row.kind == "keras" else (
            "-" if agreement is None else f"{agreement['mean']:.4f} / {agreement['min']:.4f}")
        stored = "-" if row.threshold is None else f"{row.threshold['threshold']:.4f} ({row.threshold['far']:g})"
        achieved = "-" if row.threshold is None else f"{row.threshold['achieved_far']:.4f}"
        body.append([row.name, _size(row.bytes), _size(row.gzip_bytes), _cell(row.parameters, "{:,}"),
                     _cell(row.sparsity, "{:.1%}"), f"{_pct(row.accuracy)} ± {_pct(row.accuracy_std)}", tar,
                     _pct(row.verification["eer"]["eer"]), f"{row.verification['auc']:.4f}", cosine, stored, achieved])
    return header, body


def _speed_table(report: Report) -> tuple[list[str], list[list[str]]]:
    threads = report.settings["threads"]
    header = ["variant"] + [f"embed ms, {t} thread{'s' if t > 1 else ''} (median / p90)" for t in threads] + \
        ["peak RSS MB", "model's share MB"]
    body = []
    for row in report.rows:
        cells = [row.name]
        for t in threads:
            stats = (row.latency or {}).get(str(t))
            cells.append("-" if stats is None else f"{stats['median_ms']:.2f} / {stats['p90_ms']:.2f}")
        cells += ["-" if row.memory is None else f"{row.memory['peak_rss_mb']:.1f}",
                  "-" if row.memory is None else f"{row.memory['model_rss_mb']:.1f}"]
        body.append(cells)
    return header, body


def _footnotes(report: Report) -> list[str]:
    lines = []
    if any((row.operating_point() or {}).get("limited_by_negatives") for row in report.rows):
        negatives = report.rows[0].verification["num_different"]
        lines.append(f"† fewer than {1 / REPORT_FAR:g} different-person pairs ({negatives}): FAR {REPORT_FAR:g} "
                     "cannot be measured, so this is the TAR with no false accept at all")
    lines.append("stored threshold: the one in the model's metadata (as a device uses it); FAR here: the share of "
                 "different-person pairs it accepts on this protocol")
    return lines


def _markdown_table(header: list[str], body: list[list[str]]) -> list[str]:
    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"

    align = ["---"] + ["---:"] * (len(header) - 1)
    return [line(header), "| " + " | ".join(align) + " |"] + [line(cells) for cells in body]


def render_markdown(report: Report) -> str:
    lines = ["## edgeface report", "",
             f"**Protocol:** {_protocol_line(report.protocol)}  ",
             f"**Device:** {_describe_device(report.device)}", "",
             "### Accuracy and size", ""]
    lines += _markdown_table(*_quality_table(report))
    lines += ["", f"**Recommendation:** {report.recommendation['text']}.", ""]
    lines += [f"- {note}" for note in _footnotes(report)]
    if report.settings["latency_runs"]:
        lines += ["", f"### Speed and memory (measured, varies between runs; {report.settings['latency_runs']} "
                      "embeddings per setting after warm-up, TF-free runtime)", ""]
        lines += _markdown_table(*_speed_table(report))
        if any(row.kind == "keras" for row in report.rows):
            lines += ["", "- keras runs only under TensorFlow: it is not timed on the device runtime"]
    if report.notes:
        lines += ["", "### Notes", ""] + [f"- {note}" for note in report.notes]
    return "\n".join(lines) + "\n"


def render_html(report: Report) -> str:
    def table(header: list[str], body: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        rows = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"

    plots = _plots(report)
    parts = ["<!DOCTYPE html>", "<html lang=\"en\"><head><meta charset=\"utf-8\">",
             "<title>edgeface report</title>", f"<style>{_CSS}</style></head><body>",
             "<h1>edgeface report</h1>",
             f"<p><b>Protocol:</b> {html.escape(_protocol_line(report.protocol))}<br>",
             f"<b>Device:</b> {html.escape(_describe_device(report.device))}</p>",
             "<h2>Accuracy and size</h2>", table(*_quality_table(report)),
             f"<p class=\"rec\"><b>Recommendation:</b> {html.escape(report.recommendation['text'])}.</p>",
             "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _footnotes(report)) + "</ul>"]
    if report.settings["latency_runs"]:
        parts += ["<h2>Speed and memory</h2>",
                  f"<p>Measured, varies between runs: {report.settings['latency_runs']} embeddings per setting after "
                  "warm-up, through the TF-free runtime in a fresh process.</p>", table(*_speed_table(report))]
    parts.append("<h2>Plots</h2>")
    for title, png in plots:
        encoded = base64.b64encode(png).decode("ascii")
        parts.append(f"<figure><img alt=\"{html.escape(title)}\" src=\"data:image/png;base64,{encoded}\">"
                     f"<figcaption>{html.escape(title)}</figcaption></figure>")
    if report.notes:
        parts += ["<h2>Notes</h2>", "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in report.notes) + "</ul>"]
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


_CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:80em}"
        "table{border-collapse:collapse;font-size:.9em}th,td{border:1px solid #ccc;padding:.3em .6em}"
        "td:not(:first-child){text-align:right}th{background:#f3f3f3}.rec{font-size:1.1em}"
        "figure{display:inline-block;margin:1em}img{max-width:100%}")


# --------------------------------------------------------------------------- plots


def _pareto(rows: Sequence[VariantRow]) -> list[VariantRow]:
    """Rows no other row beats on both size and accuracy, smallest first."""
    front, best = [], -1.0
    for row in sorted(rows, key=lambda r: (r.bytes, -r.accuracy)):
        if row.accuracy > best:
            front.append(row)
            best = row.accuracy
    return front


def _png(figure: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    # No "Software" tag: the same report gives the same bytes whatever matplotlib wrote it.
    figure.savefig(buffer, format="png", dpi=100, metadata={"Software": None})
    return buffer.getvalue()


def _plots(report: Report) -> list[tuple[str, bytes]]:
    # Figure + the Agg canvas directly: no pyplot, so no global backend switch in the caller's process.
    from matplotlib.figure import Figure

    rows = report.rows
    recommended = report.recommendation.get("variant")
    out = []

    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    front = _pareto(rows)
    # The front as a staircase out to the largest file: nothing beyond it is worth its size.
    xs = [r.bytes for r in front] + [max(r.bytes for r in rows)]
    ys = [r.accuracy * 100 for r in front] + [front[-1].accuracy * 100]
    ax.step(xs, ys, where="post", color="0.6", linestyle="--", label="Pareto front", zorder=1)
    for row in rows:
        marker = "*" if row.name == recommended else ("s" if row.kind == "keras" else "o")
        ax.plot(row.bytes, row.accuracy * 100, marker, markersize=14 if row.name == recommended else 7, zorder=2)
        ax.annotate(row.name, (row.bytes, row.accuracy * 100), textcoords="offset points", xytext=(5, 5),
                    fontsize=8)
    best = report.recommendation["best_accuracy"] * 100
    ax.axhline(best - report.recommendation["tolerance_points"], color="tab:red", linewidth=0.8, linestyle=":",
               label=f"best − {report.recommendation['tolerance_points']:g} points")
    ax.set_xscale("log")
    ax.set_xlabel("file size (bytes)")
    ax.set_ylabel("verification accuracy (%)")
    ax.set_title("Accuracy vs size (★ recommended)")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    out.append(("Accuracy vs file size, with the Pareto front", _png(figure)))

    figure = Figure(figsize=(7, 4.5))
    ax = figure.add_subplot()
    negatives = rows[0].verification["num_different"]
    for row in rows:
        if row.roc is None:
            continue
        far, tar = row.roc
        keep = far > 0  # log axis: the (0, 0) point cannot be drawn
        ax.plot(far[keep], tar[keep] * 100, label=row.name, linewidth=1.2)
    ax.axvline(REPORT_FAR, color="0.5", linestyle=":", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_xlim(1.0 / max(negatives, 1), 1.0)
    ax.set_ylim(0, 101)
    ax.set_xlabel("false accept rate")
    ax.set_ylabel("true accept rate (%)")
    ax.set_title("ROC per variant")
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    figure.tight_layout()
    out.append(("ROC curves per variant", _png(figure)))

    timed = [row for row in rows if row.latency]
    if timed:
        threads = report.settings["threads"]
        figure = Figure(figsize=(7, 4.5))
        ax = figure.add_subplot()
        width = 0.8 / len(threads)
        for j, t in enumerate(threads):
            bars = [i + (j - (len(threads) - 1) / 2) * width for i in range(len(timed))]
            medians = [row.latency[str(t)]["median_ms"] for row in timed if row.latency]  # (all of them)
            p90 = [row.latency[str(t)]["p90_ms"] for row in timed if row.latency]
            ax.bar(bars, medians, width, label=f"{t} thread{'s' if t > 1 else ''}",
                   yerr=[[0] * len(timed), [max(0.0, p - m) for p, m in zip(p90, medians)]], capsize=3)
        ax.set_xticks(range(len(timed)), [row.name for row in timed], rotation=20, ha="right", fontsize=8)
        ax.set_ylabel("embed latency per face (ms; bar median, whisker p90)")
        ax.set_title("Latency (TF-free runtime)")
        ax.legend(fontsize=8)
        ax.grid(True, axis="y", alpha=0.3)
        figure.tight_layout()
        out.append(("Embedding latency per face", _png(figure)))
    return out
