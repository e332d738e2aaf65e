"""Tests for edgeface_runtime._matching (numpy only; no TensorFlow)."""

from __future__ import annotations

import numpy as np
import pytest

from edgeface_runtime._matching import (
    IdentifyResult,
    Match,
    TemplateGroups,
    VerifyResult,
    cosine_similarity,
    identify_embeddings,
    identify_many,
    l2_normalize,
    verify_embeddings,
)


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    return l2_normalize(rng.standard_normal((n, d))).astype(np.float32)


def _brute_force(probe, templates, labels, top_k):
    """Reference: per-person max by a Python loop, ranked by score."""
    probe = probe / np.linalg.norm(probe)
    best: dict[str, float] = {}
    for row, label in zip(templates, labels):
        score = float(np.dot(row.astype(np.float64), probe))
        best[label] = max(best.get(label, -np.inf), score)
    return sorted(best.items(), key=lambda item: -item[1])[:top_k]


# -- l2_normalize / cosine ----------------------------------------------------------


def test_l2_normalize_gives_unit_rows_and_leaves_zero_vectors_finite():
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    out = l2_normalize(x)
    np.testing.assert_allclose(out[0], [0.6, 0.8])
    np.testing.assert_array_equal(out[1], [0.0, 0.0])
    np.testing.assert_allclose(l2_normalize(np.array([[3.0], [4.0]]), axis=0).ravel(), [0.6, 0.8])
    assert l2_normalize(np.array([1, 1], dtype=np.int64)).dtype == np.float64
    assert l2_normalize(np.ones(4, dtype=np.float32)).dtype == np.float32


@pytest.mark.parametrize(
    "a, b, expected",
    [
        ([1, 0, 0], [1, 0, 0], 1.0),
        ([1, 0, 0], [0, 1, 0], 0.0),
        ([1, 0], [-2, 0], -1.0),
        ([3, 4], [4, 3], 24 / 25),
        ([1, 1], [5, 0], 1 / np.sqrt(2)),
    ],
)
def test_cosine_of_known_vectors(a, b, expected):
    score = cosine_similarity(a, b)
    assert isinstance(score, float)
    assert score == pytest.approx(expected, abs=1e-12)


def test_cosine_batches_broadcast_rowwise():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]])
    np.testing.assert_allclose(cosine_similarity(a, [1.0, 0.0]), [1.0, 0.0, 1 / np.sqrt(2)])
    np.testing.assert_allclose(cosine_similarity(a, a), [1.0, 1.0, 1.0])


def test_cosine_dimension_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match=r"3 .*\b4\b"):
        cosine_similarity(np.ones(3), np.ones(4))


# -- verify -------------------------------------------------------------------------


def test_verify_score_equal_to_threshold_counts_as_same():
    a, b = np.array([0.3, 0.7, -0.2]), np.array([0.1, 0.9, 0.4])
    score = verify_embeddings(a, b, threshold=0.0).score
    at_threshold = verify_embeddings(a, b, threshold=score)
    assert at_threshold.same is True
    assert at_threshold.score == score
    just_above = verify_embeddings(a, b, threshold=float(np.nextafter(score, 2.0)))
    assert just_above.same is False


def test_verify_reports_threshold_and_far():
    result = verify_embeddings([1, 0], [1, 0], 0.5, far=1e-3)
    assert result == VerifyResult(same=True, score=1.0, threshold=0.5, far=1e-3)
    assert verify_embeddings([1, 0], [0, 1], 0.5).far is None


def test_verify_accepts_a_batch_of_one():
    assert verify_embeddings(np.ones((1, 8)), np.ones(8), 0.9).same


@pytest.mark.parametrize(
    "a, b, threshold, message",
    [
        (np.ones(3), np.ones(4), 0.5, "3 .*4"),
        ([np.nan, 1.0], [1.0, 1.0], 0.5, "NaN"),
        (np.ones((2, 3)), np.ones(3), 0.5, "single embedding"),
        ([1.0, 0.0], [1.0, 0.0], float("nan"), "threshold"),
        ([1.0, 0.0], [1.0, 0.0], 40, r"\[-1, 1\]"),
        ([1.0, 0.0], [1.0, 0.0], "high", "number"),
    ],
)
def test_verify_rejects_bad_input(a, b, threshold, message):
    with pytest.raises(ValueError, match=message):
        verify_embeddings(a, b, threshold)


def test_verify_rejects_far_outside_unit_interval():
    with pytest.raises(ValueError, match="far"):
        verify_embeddings([1, 0], [1, 0], 0.5, far=2.0)


# -- identify -----------------------------------------------------------------------


def test_identify_picks_the_right_person_among_many_with_max_over_templates():
    rng = np.random.default_rng(1)
    n_people, per_person, dim = 500, 3, 64
    templates = _unit_rows(rng, n_people * per_person, dim)
    labels = [f"person-{i}" for i in range(n_people) for _ in range(per_person)]
    # The probe is close to person 123's *second* template only: the max must find it.
    target_row = 123 * per_person + 1
    probe = templates[target_row] + 0.05 * rng.standard_normal(dim)
    result = identify_embeddings(probe, templates, labels, 5, 0.5)
    assert isinstance(result, IdentifyResult)
    assert [type(m) for m in result.matches] == [Match] * 5
    assert result.best is not None and result.best.name == "person-123"
    expected_score = float(np.dot(templates[target_row], probe / np.linalg.norm(probe)))
    assert result.best.score == pytest.approx(expected_score, abs=1e-5)
    scores = [m.score for m in result.matches]
    assert scores == sorted(scores, reverse=True)
    assert [m.accepted for m in result.matches] == [s >= 0.5 for s in scores]
    assert len({m.name for m in result.matches}) == 5  # one entry per person, not per template


def test_identify_top_k_order_on_a_constructed_gallery():
    rows = [[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 1.0, 0.0], [0.6, 0.8, 0.0], [0.0, 0.0, 1.0]]
    templates = l2_normalize(np.array(rows))
    labels = ["ann", "bob", "cat", "ann", "dan"]  # ann's templates are not adjacent
    result = identify_embeddings([0.0, 1.0, 0.0], templates.astype(np.float32), labels, 3, 0.7)
    assert [m.name for m in result.matches] == ["cat", "ann", "bob"]
    assert [round(m.score, 6) for m in result.matches] == [1.0, 0.8, 0.6]
    assert [m.accepted for m in result.matches] == [True, True, False]
    assert result.best == Match("cat", pytest.approx(1.0), True)


@pytest.mark.parametrize("seed", range(3))
def test_top_1_is_the_head_of_the_longer_ranking_ties_included(seed):
    # top_k=1 takes its own path (argmax); equal scores still go to the person enrolled first.
    rng = np.random.default_rng(seed)
    people = _unit_rows(rng, 40, 16)
    templates = np.concatenate([people, people[::-1], people[:5]])  # each score reached 2-3 times
    labels = [f"p{i}" for i in range(40)] + [f"q{i}" for i in range(40)] + [f"r{i}" for i in range(5)]
    probes = np.concatenate([people[:5], rng.standard_normal((5, 16)).astype(np.float32)])
    for probe in probes:
        one = identify_embeddings(probe, templates, labels, 1, 0.5)
        three = identify_embeddings(probe, templates, labels, 3, 0.5)
        assert one.matches == three.matches[:1]
    ties = identify_many(np.stack([people[3], people[3]]), templates, labels, 1, 0.5)
    assert [r.best.name for r in ties] == ["p3", "p3"]  # q36 and r3 score the same, enrolled later


def test_identify_best_is_none_when_top_match_is_below_threshold():
    templates = np.eye(3, dtype=np.float32)
    result = identify_embeddings([1.0, 1.0, 0.0], templates, ["a", "b", "c"], 2, 0.9, far=1e-4)
    assert len(result.matches) == 2
    assert result.best is None
    assert result.far == 1e-4 and result.threshold == 0.9


def test_identify_counts_comparisons_and_compounds_far_into_a_stranger_accept_rate():
    templates = np.eye(4, dtype=np.float32)
    result = identify_embeddings([1.0, 0.0, 0.0, 0.0], templates, ["a", "a", "b", "c"], 1, 0.5, far=1e-3)
    assert result.comparisons == 4  # every template is a chance to pass, not every person
    assert result.stranger_accept_rate == pytest.approx(1 - (1 - 1e-3) ** 4, rel=1e-9)
    big = IdentifyResult(matches=(), threshold=0.5, far=1e-3, comparisons=1000)
    assert big.stranger_accept_rate == pytest.approx(0.6323, abs=1e-4)  # 1 - e^-1: one in 1000 is no longer rare
    assert IdentifyResult(matches=(), threshold=0.5, far=None, comparisons=9).stranger_accept_rate is None


def test_identify_empty_gallery_returns_no_matches():
    result = identify_embeddings(np.ones(16), np.zeros((0, 16), np.float32), [], 5, 0.3, far=1e-3)
    assert result.matches == ()
    assert result.best is None
    assert result.comparisons == 0 and result.stranger_accept_rate == 0.0


def test_identify_top_k_larger_than_gallery_returns_everyone():
    templates = np.eye(4, dtype=np.float32)
    result = identify_embeddings([0.1, 0.2, 0.3, 0.9], templates, ["a", "b", "c", "d"], 50, 0.5)
    assert [m.name for m in result.matches] == ["d", "c", "b", "a"]


def test_identify_probe_dimension_mismatch_names_both_sizes():
    with pytest.raises(ValueError, match=r"\b8\b.*\b16\b"):
        identify_embeddings(np.ones(8), np.ones((3, 16), np.float32), ["a", "b", "c"], 1, 0.5)
    with pytest.raises(ValueError, match=r"\b8\b.*\b16\b"):  # even for an empty gallery
        identify_embeddings(np.ones(8), np.zeros((0, 16), np.float32), [], 1, 0.5)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True])
def test_identify_rejects_bad_top_k(top_k):
    with pytest.raises(ValueError, match="top_k"):
        identify_embeddings(np.ones(4), np.eye(4, dtype=np.float32), list("abcd"), top_k, 0.5)


def test_identify_rejects_label_count_mismatch():
    with pytest.raises(ValueError, match="3 labels for 4 templates"):
        identify_embeddings(np.ones(4), np.eye(4, dtype=np.float32), ["a", "b", "c"], 1, 0.5)


@pytest.mark.parametrize("seed", range(5))
def test_vectorised_identify_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    dim = int(rng.integers(4, 64))
    n_people = int(rng.integers(1, 200))
    counts = rng.integers(1, 5, size=n_people)
    labels = [f"p{i}" for i, count in enumerate(counts) for _ in range(count)]
    rng.shuffle(labels)  # templates of one person scattered through the matrix
    templates = _unit_rows(rng, len(labels), dim)
    top_k = int(rng.integers(1, n_people + 3))
    for _ in range(5):
        probe = rng.standard_normal(dim)
        everyone = _brute_force(probe, templates, labels, n_people)
        expected = everyone[:top_k]
        result = identify_embeddings(probe, templates, labels, top_k, 0.2)
        assert len(result.matches) == len(expected) == min(top_k, n_people)
        np.testing.assert_allclose([m.score for m in result.matches], [s for _, s in expected], atol=1e-5)
        # Names agree wherever the reference scores are not (numerically) tied.
        for match, (_, score) in zip(result.matches, expected):
            assert match.name in {name for name, s in everyone if abs(s - score) < 1e-5}


def test_identify_many_equals_identify_one_by_one():
    rng = np.random.default_rng(7)
    templates = _unit_rows(rng, 300, 32)
    labels = [f"p{i % 97}" for i in range(300)]
    groups = TemplateGroups.from_labels(labels)
    probes = rng.standard_normal((6, 32))
    batch = identify_many(probes, templates, groups, 4, 0.1, far=0.01)
    assert len(batch) == 6
    for probe, from_batch in zip(probes, batch):
        single = identify_embeddings(probe, templates, labels, 4, 0.1, far=0.01)
        assert [m.name for m in from_batch.matches] == [m.name for m in single.matches]
        np.testing.assert_allclose([m.score for m in from_batch.matches], [m.score for m in single.matches], atol=1e-6)


def test_template_groups_from_grouped_and_scattered_labels():
    grouped = TemplateGroups.from_labels(["a", "a", "b", "c", "c", "c"])
    assert grouped.names == ("a", "b", "c")
    assert grouped.order is None
    assert grouped.starts.tolist() == [0, 2, 3]
    scattered = TemplateGroups.from_labels(["b", "a", "b", "a"])
    assert scattered.names == ("b", "a")
    assert scattered.order.tolist() == [0, 2, 1, 3]
    assert scattered.starts.tolist() == [0, 2]
    empty = TemplateGroups.from_labels([])
    assert empty.names == () and empty.size == 0


def test_single_probes_and_batches_rank_alike():
    # One probe is scored without BLAS threads, a batch with the matrix product: same answers.
    from edgeface_runtime._matching import identify_embeddings, identify_many

    rng = np.random.default_rng(7)
    templates = rng.standard_normal((3000, 64)).astype(np.float32)
    templates /= np.linalg.norm(templates, axis=1, keepdims=True)
    labels = [f"p{i % 1000}" for i in range(3000)]  # three templates per person, interleaved
    probes = templates[rng.choice(3000, 12, replace=False)] + 0.05 * rng.standard_normal((12, 64)).astype(np.float32)
    batch = identify_many(probes, templates, labels, top_k=5, threshold=0.5)
    for probe, together in zip(probes, batch):
        alone = identify_embeddings(probe, templates, labels, top_k=5, threshold=0.5)
        assert [m.name for m in alone.matches] == [m.name for m in together.matches]
        np.testing.assert_allclose([m.score for m in alone.matches], [m.score for m in together.matches], atol=1e-5)
