"""Dropping extra training images that show a held-out (LFW folds 6-10) person."""

from __future__ import annotations

import numpy as np
import pytest


def _people(rng, count: int, dim: int = 16) -> np.ndarray:
    return rng.normal(size=(count, dim))


def test_candidates_close_to_any_reference_are_dropped():
    from edgeface._extra_faces import filter_against_people

    rng = np.random.default_rng(0)
    held_out = _people(rng, 3)  # three held-out people
    strangers = _people(rng, 4)
    references = np.concatenate([held_out + 0.05 * rng.normal(size=held_out.shape) for _ in range(2)])
    candidates = np.concatenate([held_out[[0, 2]] * 3.0 + 0.05 * rng.normal(size=(2, 16)),  # scale is irrelevant
                                 strangers])
    keep, dropped = filter_against_people(candidates, references, threshold=0.8)
    assert keep.tolist() == [False, False, True, True, True, True] and dropped == 2
    assert keep.dtype == bool


def test_threshold_is_inclusive_like_the_accept_rule():
    from edgeface._extra_faces import filter_against_people

    reference = np.array([[1.0, 0.0]])
    at = np.array([[0.6, 0.8]])  # cosine 0.6 with the reference
    assert filter_against_people(at, reference, 0.6)[0].tolist() == [False]  # score >= threshold: same person
    assert filter_against_people(at, reference, 0.61)[0].tolist() == [True]


def test_failed_candidates_are_dropped_and_failed_references_ignored():
    from edgeface._extra_faces import filter_against_people

    references = np.array([[1.0, 0.0, 0.0], [np.nan, np.nan, np.nan]])
    candidates = np.array([[0.0, 1.0, 0.0], [np.nan, 0.0, 0.0], [0.0, 0.0, 0.0], [0.99, 0.1, 0.0]])
    keep, dropped = filter_against_people(candidates, references, 0.5)
    # Unknown (NaN) and empty (zero) embeddings cannot be shown to be someone else.
    assert keep.tolist() == [True, False, False, False] and dropped == 3


def test_many_candidates_are_compared_in_chunks(monkeypatch):
    from edgeface import _extra_faces

    monkeypatch.setattr(_extra_faces, "_CHUNK", 7)
    rng = np.random.default_rng(1)
    references = _people(rng, 5)
    candidates = _people(rng, 50)
    candidates[[3, 17, 49]] = references[[0, 4, 2]]
    keep, dropped = _extra_faces.filter_against_people(candidates, references, 0.95)
    assert np.flatnonzero(~keep).tolist() == [3, 17, 49] and dropped == 3


def test_no_candidates_keeps_nothing_and_drops_nothing():
    from edgeface._extra_faces import filter_against_people

    keep, dropped = filter_against_people(np.zeros((0, 4)), np.eye(2, 4), 0.5)
    assert keep.shape == (0,) and dropped == 0


def test_bad_inputs_say_what_was_received():
    from edgeface._extra_faces import filter_against_people

    with pytest.raises(ValueError, match=r"same width.*got 4 and 8"):
        filter_against_people(np.ones((2, 4)), np.ones((2, 8)), 0.5)
    with pytest.raises(ValueError, match=r"candidate_embeddings must be an \(N, D\) array.*\(4,\)"):
        filter_against_people(np.ones(4), np.ones((2, 4)), 0.5)
    with pytest.raises(ValueError, match=r"in \[-1, 1\].*got 1.5"):
        filter_against_people(np.ones((2, 4)), np.ones((2, 4)), 1.5)
    with pytest.raises(ValueError, match="none of the 2 reference embeddings"):
        filter_against_people(np.ones((2, 4)), np.full((2, 4), np.nan), 0.5)
    with pytest.raises(ValueError, match="none of the 0 reference embeddings"):
        filter_against_people(np.ones((2, 4)), np.zeros((0, 4)), 0.5)
