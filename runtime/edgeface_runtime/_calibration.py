"""Site calibration: a threshold for a requested FAR, measured on the site's own faces.

A model's stored threshold was calibrated on the model maker's pairs (LFW for the bundled
model). On another domain (grayscale lab photos, hard lighting, one ethnicity, one camera)
different people can score much higher against each other, and that threshold then lets
through hundreds of times the promised FAR. The gallery already holds what is needed to
check and fix this: every pair of templates of two *different* enrolled people is an
impostor pair from the site's own camera and lighting.

numpy only. The threshold rule is :func:`edgeface_runtime.metrics.calibrate_threshold`
(just above the (k+1)-th highest impostor score, ``k = floor(far * n)``), so a site
threshold means exactly what a model's does.

How far the impostor pairs can be trusted: with ``n`` pairs, a FAR below ``1 / n`` cannot
even be observed, and with zero false accepts observed the 95 % upper bound on the true
FAR is about ``3 / n`` (the "rule of three"). ``min_supported_far`` is that ``3 / n``; a
FAR asked below it is calibrated anyway but flagged (``warning``). The pairs are also not
independent (each person appears in many), so treat the numbers as optimistic when few
people are enrolled.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ._metrics import calibrate_threshold

__all__ = ["SiteCalibration", "calibrate_templates", "check_site_far", "cross_person_scores"]

logger = logging.getLogger(__name__)

# Beyond this many impostor pairs, a seeded random sample of them is scored instead (40 MB
# of float32 scores): 10 million pairs already back a FAR of 3e-7.
DEFAULT_MAX_PAIRS = 10_000_000
_BLOCK_ROWS = 512  # rows of the template matrix scored at once (bounds the temporary memory)


@dataclass(frozen=True)
class SiteCalibration:
    """A threshold calibrated on a site's own impostor pairs, and what backs it.

    * ``threshold``: cosine score; a pair is accepted when ``score >= threshold``.
    * ``far``: the requested false-accept rate; ``achieved_far`` what the threshold gives
      on the calibration pairs (``false_accepts / impostor_pairs``, at most ``far``).
    * ``impostor_pairs``: template pairs of different people behind the threshold;
      ``min_supported_far`` = ``3 / impostor_pairs``, the lowest FAR they can back (rule of
      three: with no false accept seen in ``n`` pairs, the true FAR is below ``3 / n`` at
      95 % confidence).
    * ``genuine_pairs`` / ``tar``: template pairs of the same person and the fraction the
      threshold accepts (None when nobody has two templates). Enrolment photos are usually
      better than door frames, so this TAR is an optimistic estimate.
    * ``model_threshold`` / ``model_far_on_site``: the model's own stored threshold at the
      same FAR and the FAR it gives on these pairs — how wrong it would have been here.
    * ``model_fingerprint``: the model the templates (and so the threshold) belong to.
    * ``people`` / ``templates``: the gallery's size when calibrated (a later enrolment
      makes the calibration stale, not wrong; recalibrate).
    * ``warning``: set when the pairs are too few for ``far`` (or the threshold is degenerate).
    """

    threshold: float
    far: float
    achieved_far: float
    false_accepts: int
    impostor_pairs: int
    min_supported_far: float
    people: int
    templates: int
    model_fingerprint: str
    created: str
    genuine_pairs: int = 0
    tar: Optional[float] = None
    model_threshold: Optional[float] = None
    model_far_on_site: Optional[float] = None
    sampled: bool = False
    warning: Optional[str] = None
    source: str = "gallery"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SiteCalibration":
        known = {f for f in cls.__dataclass_fields__}  # ignore keys a newer version may add
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def supported(self) -> bool:
        """Whether the impostor pairs are enough to back the requested FAR (``far >= 3 / n``)."""
        return self.far >= self.min_supported_far


def check_site_far(far: Any) -> float:
    """``far`` as a float in (0, 1), else ValueError saying what was given."""
    try:
        value = float(far)
    except (TypeError, ValueError):
        raise ValueError(f"far must be a false-accept rate in (0, 1) such as 1e-3, got {far!r}") from None
    if not 0.0 < value < 1.0:  # also rejects nan
        raise ValueError(f"far must be a false-accept rate in (0, 1) such as 1e-3, got {far!r}")
    return value


def _pair_count(counts: np.ndarray) -> int:
    total = int(counts.sum())
    return (total * total - int(np.sum(counts.astype(np.int64) ** 2))) // 2


def cross_person_scores(templates: Any, labels: Sequence[str], *, same: bool = False,
                        max_pairs: int = DEFAULT_MAX_PAIRS, seed: int = 0) -> tuple[np.ndarray, bool]:
    """Cosine scores of every template pair of different people (``same=True``: of the same person).

    ``templates`` is an (N, D) matrix (normalised here); ``labels`` names each row's person.
    Returns ``(scores, sampled)``: float32 scores, one per unordered pair, and whether more
    than ``max_pairs`` pairs existed, so that a seeded random sample of ``max_pairs`` was scored.
    """
    matrix = np.asarray(templates, dtype=np.float32)
    if matrix.ndim != 2 or matrix.shape[0] != len(labels):
        raise ValueError(f"templates must be an (N, D) matrix with one label per row, got shape {matrix.shape} "
                         f"and {len(labels)} labels")
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    matrix = matrix / np.maximum(norms, 1e-12)
    _, codes, counts = np.unique(np.asarray(labels, dtype=object).astype(str), return_inverse=True,
                                 return_counts=True)
    codes = codes.reshape(-1)
    n = matrix.shape[0]
    total = int(np.sum(counts * (counts - 1) // 2)) if same else _pair_count(counts)
    if total == 0:
        return np.zeros(0, np.float32), False
    if total > max_pairs:
        # Draw pairs with replacement, keep those of the wanted kind; the kind is at least
        # ~1/people of all pairs, so a few rounds fill the sample.
        rng = np.random.default_rng(seed)
        chunks, have = [], 0
        while have < max_pairs:
            i = rng.integers(0, n, size=2 * max_pairs)
            j = rng.integers(0, n, size=2 * max_pairs)
            keep = (i != j) & ((codes[i] == codes[j]) if same else (codes[i] != codes[j]))
            i, j = i[keep], j[keep]
            chunks.append(np.einsum("nd,nd->n", matrix[i], matrix[j]))
            have += i.size
        return np.concatenate(chunks)[:max_pairs].astype(np.float32), True
    out = []
    for start in range(0, n, _BLOCK_ROWS):
        rows = slice(start, min(n, start + _BLOCK_ROWS))
        block = matrix[rows] @ matrix.T  # (b, N)
        row_ids = np.arange(rows.start, rows.stop)[:, None]
        upper = np.arange(n)[None, :] > row_ids  # each unordered pair once
        kind = (codes[rows][:, None] == codes[None, :]) if same else (codes[rows][:, None] != codes[None, :])
        out.append(block[upper & kind])
    return np.concatenate(out).astype(np.float32), False


def calibrate_templates(templates: Any, labels: Sequence[str], far: float, *, model_fingerprint: str,
                        model_thresholds: Optional[Mapping[float, float]] = None,
                        max_pairs: int = DEFAULT_MAX_PAIRS, source: str = "gallery") -> SiteCalibration:
    """Calibrate a threshold at ``far`` on the cross-person pairs of enrolled ``templates``.

    Raises ValueError when fewer than two people are enrolled (no impostor pair exists) or
    ``far`` is not in (0, 1). Logs a warning, and sets ``warning``, when the pairs are too
    few to back ``far`` (fewer than ``3 / far``).
    """
    far = check_site_far(far)
    people = len(set(labels))
    if people < 2:
        raise ValueError(f"site calibration needs at least two enrolled people (their cross pairs are the "
                         f"impostor pairs), got {people}; enroll more people first")
    impostors, sampled = cross_person_scores(templates, labels, max_pairs=max_pairs)
    threshold = calibrate_threshold(impostors, far)
    n = int(impostors.size)
    false_accepts = int(np.count_nonzero(impostors >= threshold))
    min_supported = 3.0 / n
    warning = None
    if far < min_supported:
        needed = math.ceil(3.0 / far)
        warning = (f"only {n} impostor pairs back FAR {far:g}: at least {needed} are needed (the lowest FAR "
                   f"{n} pairs support is {min_supported:.2g}, rule of three); enroll more people or templates, "
                   f"or calibrate at FAR >= {min_supported:.2g}")
    if threshold > 1.0:
        # Just above a score of 1.0: nothing could ever be accepted (duplicated templates?).
        warning = (warning + "; " if warning else "") + (
            f"the threshold {threshold:.6f} is above 1 and would accept no one: two different people have "
            "identical templates (the same photo enrolled under two names?)")
    if warning:
        logger.warning("site calibration: %s", warning)
    genuine, _ = cross_person_scores(templates, labels, same=True, max_pairs=max_pairs)
    tar = float(np.count_nonzero(genuine >= threshold) / genuine.size) if genuine.size else None
    model_threshold = model_far = None
    for known, value in (model_thresholds or {}).items():
        if abs(float(known) - far) <= 1e-12 * max(1.0, far):
            model_threshold = float(value)
            model_far = float(np.count_nonzero(impostors >= model_threshold) / n)
    return SiteCalibration(
        threshold=float(threshold), far=far, achieved_far=false_accepts / n, false_accepts=false_accepts,
        impostor_pairs=n, min_supported_far=min_supported, people=people, templates=len(labels),
        model_fingerprint=model_fingerprint,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        genuine_pairs=int(genuine.size), tar=tar, model_threshold=model_threshold, model_far_on_site=model_far,
        sampled=sampled, warning=warning, source=source)

