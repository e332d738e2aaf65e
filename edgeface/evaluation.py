"""Verification of trained models (``.keras`` or ``.tflite``) on LFW-style pairs.

>>> from edgeface.evaluation import evaluate
>>> report = evaluate("runs/demo/model.keras", "lfw/pairs.txt", "lfw/lfw-deepfunneled", calibrate_far=1e-3)
>>> report["accuracy"]["mean"], report["tar_at_far"], report["eer"]

The project's rule: report on folds 6-10 (the default), for models trained on people
outside them.
"""

from __future__ import annotations

from ._evaluate import evaluate, score_pairs

__all__ = ["evaluate", "score_pairs"]
