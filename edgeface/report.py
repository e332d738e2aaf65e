"""Compare a trained model and its converted variants on one verification protocol.

>>> from edgeface.report import build_report
>>> report = build_report(["runs/demo/model.keras", "runs/demo/variants"],
...                       pairs="lfw/pairs.txt", images="lfw/lfw-deepfunneled", out_dir="runs/demo/report")
>>> print(report.recommendation["text"])
>>> report.to_markdown()  # also .to_html() (plots embedded), .to_json(), .write(folder)

Per variant: size, gzip size, parameters, sparsity, k-fold accuracy ± std, TAR at FAR 1e-3,
EER, AUC, cosine to the Keras model, the stored threshold and the FAR it gives, and
embed latency and peak memory through the TF-free runtime. The project's rule holds: LFW
is reported on folds 6-10 (the default), and people listed in the training card are
refused unless ``allow_overlap=True``.
"""

from __future__ import annotations

from ._report import Report, ReportOptions, VariantRow, build_report
from ._report_latency import device_info, measure_variant

__all__ = ["Report", "ReportOptions", "VariantRow", "build_report", "device_info", "measure_variant"]
