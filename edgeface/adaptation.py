"""Target-domain adaptation: fine-tune a trained model on a few images per person of a new domain.

>>> from edgeface.adaptation import adapt, kshot_evaluation, kshot_markdown
>>> result = adapt("runs/lfw/model.keras", "orl/", out="runs/orl")        # runs/orl/model.keras
>>> report = kshot_evaluation("runs/lfw/model.keras", "orl/", shots=(1, 3, 5), seeds=range(5))
>>> print(kshot_markdown(report))   # held-out people: verification before vs after, per k

The adapted ``model.keras`` keeps the source's preprocessing, drops its thresholds (calibrate
again) and records the source's sha256 and the settings; ``edgeface convert`` takes it as is.
"""

from __future__ import annotations

from ._adapt import (
    AdaptConfig,
    AdaptResult,
    adapt,
    check_kshot_dataset,
    kshot_evaluation,
    kshot_indices,
    kshot_markdown,
    kshot_split,
    write_kshot_report,
)

__all__ = [
    "AdaptConfig",
    "AdaptResult",
    "adapt",
    "check_kshot_dataset",
    "kshot_evaluation",
    "kshot_indices",
    "kshot_markdown",
    "kshot_split",
    "write_kshot_report",
]
