"""Extra face images for distillation, kept clear of the people the evaluation tests on.

Extra images (a second face data set, a scrape) add teacher targets without labels, but any
of them may show a person of LFW folds 6-10, whom the evaluation rule keeps out of training.
Their names are no help (other data sets spell them differently, or carry none), so the
teacher decides: :func:`filter_against_people` drops every candidate whose teacher embedding
the teacher itself would accept as the same person as some image of those people.

Scores are cosine similarities and a pair is "the same person" when ``score >= threshold``,
as everywhere in edgeface (``edgeface_runtime.metrics``). Use the teacher's own threshold
(e.g. its best-accuracy threshold on LFW folds 1-5), and embed the candidates and the
references with the same teacher, with no per-set centring in between: an
:class:`~edgeface._teachers.EnsembleTeacher` centres over the set it embeds, so embed both
sets in one call, or compare its members' vectors one member at a time.
"""

from __future__ import annotations

from typing import Any

import numpy as np

# Candidates compared at a time: bounds the (chunk, references) similarity matrix in memory.
_CHUNK = 2048


def filter_against_people(candidate_embeddings: Any, reference_embeddings: Any,
                          threshold: float) -> tuple[np.ndarray, int]:
    """Which candidates to keep: ``(keep_mask, dropped_count)``.

    A candidate is dropped when its cosine similarity to any reference is ``>= threshold``
    (the teacher would call them the same person), and when its own embedding is not finite
    (the teacher failed on it, so it cannot be shown to be someone else). References that
    are not finite are ignored; at least one must be finite. Vectors need not be normalised.
    """
    candidates = _as_matrix(candidate_embeddings, "candidate_embeddings")
    references = _as_matrix(reference_embeddings, "reference_embeddings")
    if candidates.shape[1] != references.shape[1]:
        raise ValueError(f"candidate and reference embeddings must have the same width (one teacher for both); "
                         f"got {candidates.shape[1]} and {references.shape[1]} dimensions")
    try:
        limit = float(threshold)
    except (TypeError, ValueError):
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1], got {threshold!r}") from None
    if not -1.0 <= limit <= 1.0:
        raise ValueError(f"threshold must be a cosine similarity in [-1, 1] (the teacher's same-person threshold), "
                         f"got {threshold!r}")
    usable = np.all(np.isfinite(references), axis=1) & (np.linalg.norm(np.nan_to_num(references), axis=1) > 0)
    if not usable.any():
        # Filtering against nobody would keep everyone, silently breaking the evaluation rule.
        raise ValueError(f"none of the {len(references)} reference embeddings is a finite, non-zero vector; "
                         "embed the held-out people's images with the teacher first")
    refs = _unit(references[usable])
    keep = np.all(np.isfinite(candidates), axis=1) & (np.linalg.norm(np.nan_to_num(candidates), axis=1) > 0)
    for start in range(0, len(candidates), _CHUNK):
        rows = np.flatnonzero(keep[start:start + _CHUNK]) + start
        if len(rows):
            closest = (_unit(candidates[rows]) @ refs.T).max(axis=1)
            keep[rows[closest >= limit]] = False
    return keep, int((~keep).sum())


def _as_matrix(values: Any, name: str) -> np.ndarray:
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 2:
        raise ValueError(f"{name} must be an (N, D) array of embeddings, got shape {array.shape}")
    return array


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)
