"""``edgeface bench`` from Python: per-stage latency of the device pipeline on this machine.

:func:`latency_summary` is the form every timing takes (median and p90 in ms, and the count),
so other tools' numbers (``edgeface report``'s device latency) read like the benchmark's.
"""

from ._bench import format_bench, latency_summary, run_bench

__all__ = ["format_bench", "latency_summary", "run_bench"]
