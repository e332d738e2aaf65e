"""Embedding comparison: cosine scores, 1:1 verification and 1:N identification.

numpy only. Identification is one matrix-vector product over every stored template, a
segmented max (``np.maximum.reduceat``) to get one score per person, and
``np.argpartition`` for the top k, so its cost is dominated by reading the template matrix
once (memory bandwidth), not by Python.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import numpy as np

__all__ = [
    "IdentifyResult",
    "Match",
    "TemplateGroups",
    "VerifyResult",
    "cosine_similarity",
    "identify_embeddings",
    "identify_many",
    "l2_normalize",
    "verify_embeddings",
]


@dataclass(frozen=True)
class VerifyResult:
    """Outcome of a 1:1 comparison.

    ``far`` is the false-accept rate ``threshold`` was calibrated for, or None when the
    caller gave the threshold explicitly. ``threshold_source`` says which threshold decided:
    "site" (calibrated on the site's own gallery, ``edgeface calibrate``), "model" (stored in
    the model by its maker, calibrated on *their* pairs) or "explicit" (given by the caller);
    None when the result was not made by a :class:`FaceVerifier`.
    """

    same: bool
    score: float
    threshold: float
    far: Optional[float]
    threshold_source: Optional[str] = None


@dataclass(frozen=True)
class Match:
    """One enrolled person's best score against a probe."""

    name: str
    score: float
    accepted: bool


@dataclass(frozen=True)
class IdentifyResult:
    """The top-k people for one probe, best first (empty for an empty gallery).

    ``far`` is the false-accept rate of *one* comparison at ``threshold``; the probe was
    compared with ``comparisons`` templates, so a stranger gets that many chances to pass
    (see :attr:`stranger_accept_rate`); it was compared with ``people`` enrolled people
    (see :attr:`compounded_far`). ``threshold_source`` as in :class:`VerifyResult`.
    """

    matches: tuple[Match, ...]
    threshold: float
    far: Optional[float]
    comparisons: int = 0
    people: int = 0
    threshold_source: Optional[str] = None

    @property
    def compounded_far(self) -> Optional[float]:
        """How often a stranger passes as *someone* among the ``people`` enrolled: ``1 - (1 - far) ** people``.

        One chance per person (a person's templates resemble each other, so their best
        score is nearly one comparison): the estimate to quote for 1:N. With several
        templates per person the truth lies between this and :attr:`stranger_accept_rate`.
        None when the threshold was explicit.
        """
        if self.far is None:
            return None
        return float(-np.expm1(self.people * np.log1p(-self.far)))

    @property
    def stranger_accept_rate(self) -> Optional[float]:
        """About how often a stranger is accepted as someone at this threshold: ``1 - (1 - far) ** comparisons``.

        Treats the comparisons as independent (an upper bound in practice: one person's
        templates resemble each other). None when the threshold was explicit. For a target
        rate R, calibrate at a FAR of about R / comparisons.
        """
        if self.far is None:
            return None
        return float(-np.expm1(self.comparisons * np.log1p(-self.far)))

    @property
    def best(self) -> Optional[Match]:
        """The top match if its score reaches the threshold, else None (an unknown face)."""
        if self.matches and self.matches[0].accepted:
            return self.matches[0]
        return None


@dataclass(frozen=True, eq=False)
class TemplateGroups:
    """Which rows of a template matrix belong to which person, computed once per gallery.

    Building this from N labels costs a Python pass over them; a gallery builds it when it
    (re)loads its templates and passes it to :func:`identify_embeddings` instead of the
    label list, so each identification is numpy work only.
    """

    names: tuple[str, ...]  # one per person, in group order
    starts: np.ndarray  # row (in grouped order) where each person's templates begin
    order: Optional[np.ndarray]  # permutation that groups the rows; None if already grouped
    size: int  # number of templates (rows)

    @classmethod
    def from_labels(cls, labels: Sequence[str]) -> "TemplateGroups":
        """Group template rows by label, keeping people in order of first appearance."""
        codes_by_label: dict = {}
        codes = np.fromiter(
            (codes_by_label.setdefault(label, len(codes_by_label)) for label in labels),
            dtype=np.intp,
            count=len(labels),
        )
        names = tuple(codes_by_label)
        grouped = codes.size == 0 or bool(np.all(codes[1:] >= codes[:-1]))
        order = None if grouped else np.argsort(codes, kind="stable")
        sorted_codes = codes if order is None else codes[order]
        if codes.size:
            starts = np.flatnonzero(np.r_[True, sorted_codes[1:] != sorted_codes[:-1]])
        else:
            starts = np.zeros(0, dtype=np.intp)
        return cls(names=names, starts=starts.astype(np.intp), order=order, size=int(codes.size))


Labels = Union[Sequence[str], TemplateGroups]

_FEW_PROBES = 4  # up to this many probes per call, score without BLAS threads (see identify_many)


def l2_normalize(x, axis: int = -1, eps: float = 1e-12) -> np.ndarray:
    """Scale ``x`` to unit L2 norm along ``axis``; all-zero vectors stay zero (no NaN)."""
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    norm = np.linalg.norm(x, axis=axis, keepdims=True)
    return x / np.maximum(norm, eps).astype(x.dtype, copy=False)


def cosine_similarity(a, b):
    """Cosine similarity of embeddings along the last axis, broadcasting like ``a * b``.

    Two vectors give a float; an (N, D) batch against a (D,) vector or another (N, D)
    batch gives an (N,) array. Both sides are normalised here, so raw embeddings are fine.
    """
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"cosine_similarity needs embeddings (1-D or 2-D arrays), got shapes {a.shape} and {b.shape}")
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(
            f"cannot compare embeddings of different sizes: a has {a.shape[-1]} values per embedding, "
            f"b has {b.shape[-1]}; were they made by the same model?"
        )
    scores = np.sum(l2_normalize(a) * l2_normalize(b), axis=-1)
    return float(scores) if scores.ndim == 0 else scores


def verify_embeddings(a, b, threshold: float, far: Optional[float] = None) -> VerifyResult:
    """Decide whether two embeddings show the same person: ``same`` iff cosine >= threshold."""
    threshold = _check_threshold(threshold)
    far = _check_far(far)
    a = _as_vector(a, "a")
    b = _as_vector(b, "b")
    score = cosine_similarity(a, b)
    return VerifyResult(same=score >= threshold, score=score, threshold=threshold, far=far)


def identify_embeddings(
    probe,
    templates,
    labels: Labels,
    top_k: int,
    threshold: float,
    far: Optional[float] = None,
) -> IdentifyResult:
    """Rank enrolled people against one probe embedding.

    ``templates`` is an (N, D) matrix of L2-normalised embeddings (not re-checked here:
    that would cost as much as the search); ``labels`` names the person of each row, or is
    a precomputed :class:`TemplateGroups`. A person's score is the max over their templates.
    Returns at most ``top_k`` matches, best first; an empty gallery gives no matches.
    """
    probe = _as_vector(probe, "probe")  # checked here, so not again below
    return _identify(probe[np.newaxis, :], templates, labels, top_k, threshold, far)[0]


def identify_many(
    probes,
    templates,
    labels: Labels,
    top_k: int,
    threshold: float,
    far: Optional[float] = None,
) -> list[IdentifyResult]:
    """:func:`identify_embeddings` for an (M, D) batch of probes, with one matrix product."""
    probes = np.asarray(probes)
    if probes.ndim != 2 or probes.shape[0] == 0:
        raise ValueError(f"probes must be an (M, D) array of embeddings with M >= 1, got shape {probes.shape}")
    _check_real(probes, "probe")
    return _identify(probes, templates, labels, top_k, threshold, far)


def _identify(probes: np.ndarray, templates, labels: Labels, top_k: int, threshold: float,
              far: Optional[float]) -> list[IdentifyResult]:
    """:func:`identify_many` on probes already checked to be a real (M, D) array."""
    threshold = _check_threshold(threshold)
    far = _check_far(far)
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        raise ValueError(f"top_k must be a positive integer, got {top_k!r}")
    templates = np.asarray(templates)
    if not np.issubdtype(templates.dtype, np.floating):
        templates = templates.astype(np.float32)
    if templates.ndim != 2:
        raise ValueError(f"templates must be an (N, D) matrix, got shape {templates.shape}")
    if probes.shape[1] != templates.shape[1]:
        raise ValueError(
            f"probe embedding has {probes.shape[1]} values but the templates have {templates.shape[1]}; "
            "the probe and the gallery must come from the same model"
        )
    groups = labels if isinstance(labels, TemplateGroups) else TemplateGroups.from_labels(labels)
    if groups.size != templates.shape[0]:
        raise ValueError(f"got {groups.size} labels for {templates.shape[0]} templates; they must match one to one")

    n_probes = probes.shape[0]
    n_people = len(groups.names)
    if n_people == 0:
        return [IdentifyResult(matches=(), threshold=threshold, far=far, comparisons=0) for _ in range(n_probes)]

    unit_probes = l2_normalize(probes).astype(templates.dtype, copy=False)
    # (N, M): the only pass over the gallery. For a few probes, numpy's own single-threaded
    # loop rather than BLAS: OpenBLAS splits a 10,000-row product over threads that, on a busy
    # CPU, wait for each other (measured 16 ms median instead of 0.07 ms); the loop takes
    # 0.2-0.4 ms whatever the load. Batches keep the much faster blocked matrix product.
    if n_probes <= _FEW_PROBES:
        scores = np.einsum("nd,md->nm", templates, unit_probes)
    else:
        scores = templates @ unit_probes.T
    if groups.order is not None:
        scores = scores[groups.order]
    # With one template per person every group is a single row and the max is a no-op.
    person_scores = scores if n_people == scores.shape[0] else np.maximum.reduceat(scores, groups.starts, axis=0)

    k = min(int(top_k), n_people)
    if k == 1 and n_people > 1:
        # The common kiosk question; argmax takes the first of equal scores, as the sort below does.
        candidates = person_scores.argmax(axis=0)[np.newaxis, :]
    elif k < n_people:
        candidates = np.argpartition(-person_scores, k - 1, axis=0)[:k]  # (k, M), unordered
        candidates.sort(axis=0)  # so equal scores rank in group order, deterministically
    else:
        candidates = np.broadcast_to(np.arange(n_people)[:, np.newaxis], (n_people, n_probes))

    results = []
    for column in range(n_probes):
        people = candidates[:, column]
        column_scores = person_scores[people, column]
        ranked = np.argsort(-column_scores, kind="stable")
        matches = []
        for i in ranked:
            score = float(column_scores[i])
            matches.append(Match(name=groups.names[people[i]], score=score, accepted=score >= threshold))
        results.append(IdentifyResult(matches=tuple(matches), threshold=threshold, far=far,
                                      comparisons=groups.size, people=n_people))
    return results


def _as_vector(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 2 and x.shape[0] == 1:  # a batch of one is what most embedders return
        x = x[0]
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{what} must be a single embedding (a 1-D array), got shape {x.shape}")
    _check_real(x, what)
    return x


def _check_real(x: np.ndarray, what: str) -> None:
    if x.dtype == np.bool_ or not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
        raise ValueError(f"{what} must be a real-valued embedding, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{what} contains NaN or infinity; check the model output")


def _check_threshold(threshold) -> float:
    try:
        value = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a number, got {threshold!r}") from None
    if not (math.isfinite(value) and -1.0 <= value <= 1.0):
        raise ValueError(f"threshold is a cosine similarity and must lie in [-1, 1], got {threshold!r}")
    return value


def _check_far(far) -> Optional[float]:
    if far is None:
        return None
    try:
        value = float(far)
    except (TypeError, ValueError):
        raise ValueError(f"far must be a false-accept rate in [0, 1] or None, got {far!r}") from None
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"far must be a false-accept rate in [0, 1] or None, got {far!r}")
    return value
