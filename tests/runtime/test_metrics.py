"""Verification metrics and the LFW pairs protocol (numpy only, no TensorFlow)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from edgeface_runtime._metrics import (
    LFW_HELD_OUT_FOLDS,
    KFoldResult,
    Pair,
    best_accuracy_threshold,
    calibrate_threshold,
    eer,
    false_accept_rate,
    generate_pairs,
    kfold_accuracy,
    lfw_identities_in_folds,
    read_pairs,
    roc_auc,
    roc_curve,
    tar_at_far,
    verification_report,
)

# ----------------------------------------------------------------------------- worked example
#
# positives: 0.9 0.8 0.5 0.3      negatives: 0.7 0.5 0.2 0.1      (0.5 is a tie across labels)
#
# threshold   inf  0.9  0.8  0.7  0.5  0.3  0.2  0.1
# TP            0    1    2    2    3    4    4    4   -> TAR 0 .25 .5 .5 .75 1 1 1
# FP            0    0    0    1    2    2    3    4   -> FAR 0 0 0 .25 .5 .5 .75 1
#
# AUC (trapezoids over FAR): .25*.5 + .25*(.5+.75)/2 + 0 + .25*1 + .25*1 = 0.78125.
# Mann-Whitney: positives beat 4 + 4 + (2 + 1/2 for the tie) + 2 = 12.5 of 16 -> 0.78125.
# EER: FAR - FRR is -0.25 at 0.7 (FAR .25, FRR .5) and +0.25 at 0.5 (FAR .5, FRR .25), so
#   they cross halfway: EER = 0.375 at threshold 0.6.
# Best accuracy (accept >= each score, correct = TP + 4 - FP, of 8): none 4, >=.9 5,
#   >=.8 6, >=.7 5, >=.5 5, >=.3 6, >=.2 5, all 4 -> 0.75, reached at the midpoints 0.75 and
#   0.25; the lowest, 0.25, is returned.
# TAR@FAR (k = floor(far * 4) negatives may pass; threshold just above the (k+1)-th highest
#   negative): far .25 -> above 0.5, accepts 0.9, 0.8 -> TAR .5; far .1 -> above 0.7 -> .5;
#   far .5 -> above 0.2 -> TAR 1.
WORKED_SCORES = np.array([0.9, 0.8, 0.5, 0.3, 0.7, 0.5, 0.2, 0.1])
WORKED_LABELS = np.array([True, True, True, True, False, False, False, False])


def test_worked_example_roc_points():
    far, tar, thresholds = roc_curve(WORKED_SCORES, WORKED_LABELS)
    np.testing.assert_allclose(far, [0, 0, 0, 0.25, 0.5, 0.5, 0.75, 1])
    np.testing.assert_allclose(tar, [0, 0.25, 0.5, 0.5, 0.75, 1, 1, 1])
    assert thresholds[0] == np.inf
    np.testing.assert_allclose(thresholds[1:], [0.9, 0.8, 0.7, 0.5, 0.3, 0.2, 0.1])


def test_worked_example_auc_eer_accuracy():
    assert roc_auc(WORKED_SCORES, WORKED_LABELS) == 0.78125
    rate, threshold = eer(WORKED_SCORES, WORKED_LABELS)
    assert rate == pytest.approx(0.375)
    assert threshold == pytest.approx(0.6)
    accuracy, threshold = best_accuracy_threshold(WORKED_SCORES, WORKED_LABELS)
    assert accuracy == 0.75
    assert threshold == pytest.approx(0.25)


def test_worked_example_tar_at_far():
    for far, expected_tar, refused_negative in [(0.25, 0.5, 0.5), (0.1, 0.5, 0.7), (0.5, 1.0, 0.2)]:
        tar, threshold = tar_at_far(WORKED_SCORES, WORKED_LABELS, far)
        assert tar == expected_tar
        assert threshold == np.nextafter(refused_negative, np.inf)  # the smallest threshold possible
    # far = 1 allows every negative: the lowest score, which accepts everything.
    assert tar_at_far(WORKED_SCORES, WORKED_LABELS, 1.0) == (1.0, 0.1)


# ----------------------------------------------------------------------------- reference cases


def test_perfect_separator():
    scores = np.array([0.95, 0.9, 0.8, 0.7, 0.4, 0.3, 0.2, 0.1])
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    assert roc_auc(scores, labels) == 1.0
    assert eer(scores, labels).eer == 0.0
    accuracy, threshold = best_accuracy_threshold(scores, labels)
    assert accuracy == 1.0 and 0.4 < threshold <= 0.7
    assert kfold_accuracy(scores, labels, folds=[1, 2, 1, 2, 1, 2, 1, 2]).mean == 1.0
    for far in (0.0, 1e-3, 0.25, 1.0):
        assert tar_at_far(scores, labels, far).tar == 1.0


def test_random_scores_are_at_chance():
    rng = np.random.default_rng(1234)
    scores = rng.normal(size=20_000)
    labels = rng.random(20_000) < 0.5
    assert roc_auc(scores, labels) == pytest.approx(0.5, abs=0.02)
    assert eer(scores, labels).eer == pytest.approx(0.5, abs=0.02)
    assert best_accuracy_threshold(scores, labels).accuracy < 0.53


def test_all_scores_tied():
    scores = np.full(10, 0.3)
    labels = np.arange(10) % 2 == 0
    assert roc_auc(scores, labels) == 0.5
    far, tar, _ = roc_curve(scores, labels)
    np.testing.assert_array_equal(far, [0, 1])
    np.testing.assert_array_equal(tar, [0, 1])
    assert eer(scores, labels) == (0.5, 0.3)
    # Any threshold accepts all or none: half right either way, the lowest (accept all) wins.
    assert best_accuracy_threshold(scores, labels) == (0.5, 0.3)


def _mann_whitney(scores, labels):
    positives, negatives = scores[labels], scores[~labels]
    wins = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return (wins + 0.5 * ties) / (positives.size * negatives.size)


@pytest.mark.parametrize("seed", range(5))
def test_auc_matches_brute_force_mann_whitney_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(size=400) + labels, 1)  # rounding makes many ties
    assert roc_auc(scores, labels) == pytest.approx(_mann_whitney(scores, labels), abs=1e-12)


def _brute_force_best_accuracy(scores, labels):
    candidates = np.concatenate((scores, [np.inf]))
    return max(np.mean((scores >= t) == labels) for t in candidates)


@pytest.mark.parametrize("seed", range(5))
def test_best_accuracy_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    labels = rng.random(300) < 0.5
    scores = np.round(rng.normal(size=300) + labels, 1)
    accuracy, threshold = best_accuracy_threshold(scores, labels)
    assert accuracy == pytest.approx(_brute_force_best_accuracy(scores, labels))
    assert np.mean((scores >= threshold) == labels) == pytest.approx(accuracy)
    assert threshold not in set(scores[:-1]) or threshold == scores.min()  # a midpoint between scores


def test_midpoint_between_adjacent_floats_stays_above_the_lower_score():
    lower = np.float32(0.5)
    upper = np.nextafter(lower, np.float32(1))
    accuracy, threshold = best_accuracy_threshold(np.array([upper, lower], dtype=np.float32), [True, False])
    assert accuracy == 1.0
    assert np.float32(threshold) > lower


# ----------------------------------------------------------------------------- k-fold


def test_kfold_with_explicit_folds():
    # Fold 1: P .9 .75, N .2 .1        Fold 2: P .8 .3, N .6 .4
    # Fold 1 held out: on fold 2 the best split is between .8 and .6 (3 of 4 right), at 0.7;
    #   on fold 1 it accepts .9 and .75 and refuses .2 and .1: accuracy 1.
    # Fold 2 held out: fold 1 separates perfectly between .75 and .2, at 0.475; on fold 2 it
    #   accepts .8 and .6 and refuses .3 and .4: 2 of 4 right.
    scores = [0.9, 0.75, 0.2, 0.1, 0.8, 0.3, 0.6, 0.4]
    labels = [True, True, False, False, True, True, False, False]
    result = kfold_accuracy(scores, labels, folds=[1, 1, 1, 1, 2, 2, 2, 2])
    assert isinstance(result, KFoldResult)
    assert result.folds == (1, 2)
    assert result.accuracies == (1.0, 0.5)
    np.testing.assert_allclose(result.thresholds, [0.7, 0.475])
    assert result.mean == 0.75 and result.std == 0.25  # population std of (1, 0.5)
    # An int splits into contiguous blocks in input order: the same two folds here.
    assert kfold_accuracy(scores, labels, folds=2) == result


def test_kfold_contiguous_split_sizes():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=23)
    labels = np.arange(23) % 2 == 0
    result = kfold_accuracy(scores, labels, folds=5)
    assert result.folds == (1, 2, 3, 4, 5)
    assert len(result.thresholds) == len(result.accuracies) == 5


def test_kfold_rejects_folds_that_leave_no_negatives_to_train_on():
    # Holding out fold 1 leaves only fold 2's single negative to choose a threshold on.
    with pytest.raises(ValueError, match="for fold 1 the other folds .* got 0 positive and 1 negative"):
        kfold_accuracy([0.9, 0.8, 0.1, 0.2], [True, True, False, True], folds=[1, 1, 2, 1])
    with pytest.raises(ValueError, match="between 2 and"):
        kfold_accuracy(WORKED_SCORES, WORKED_LABELS, folds=1)
    with pytest.raises(ValueError, match="one fold id per pair"):
        kfold_accuracy(WORKED_SCORES, WORKED_LABELS, folds=[1, 2])


# ----------------------------------------------------------------------------- calibration


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("far", [0.0, 1e-3, 1e-2, 0.05, 0.29, 0.5])
def test_calibrated_threshold_meets_the_target_and_is_the_smallest(dtype, far):
    rng = np.random.default_rng(7)
    negatives = np.round(rng.normal(size=1000), 2).astype(dtype)  # ties on purpose
    threshold = calibrate_threshold(negatives, far)
    assert false_accept_rate(negatives, threshold) <= far
    # One step lower (in the scores' own precision) would accept too many.
    lower = float(np.nextafter(dtype(threshold), dtype(-np.inf)))
    assert false_accept_rate(negatives, lower) > far
    # Representable in the scores' type: a device comparing float32 agrees exactly.
    assert float(dtype(threshold)) == threshold
    assert np.mean(negatives >= dtype(threshold)) <= far


def test_far_below_one_over_negatives_puts_threshold_above_every_negative():
    negatives = np.array([0.1, 0.2, 0.3, 0.4])
    threshold = calibrate_threshold(negatives, 0.1)  # 0.1 < 1/4
    assert threshold > negatives.max() and threshold == np.nextafter(0.4, 1)
    assert false_accept_rate(negatives, threshold) == 0.0
    assert calibrate_threshold(negatives, 1.0) == 0.1
    assert false_accept_rate(negatives, 0.25) == 0.5


def test_tar_at_far_agrees_with_calibrate_threshold():
    rng = np.random.default_rng(3)
    labels = rng.random(2000) < 0.5
    scores = rng.normal(size=2000) + 2 * labels
    tar, threshold = tar_at_far(scores, labels, 0.01)
    assert threshold == calibrate_threshold(scores[~labels], 0.01)
    assert tar == np.mean(scores[labels] >= threshold)


# ----------------------------------------------------------------------------- report


def test_report_is_json_serialisable_and_consistent():
    rng = np.random.default_rng(11)
    labels = np.arange(600) % 2 == 0
    scores = (rng.normal(size=600) + 2.5 * labels).astype(np.float32)
    report = verification_report(scores, labels, folds=10, fars=(1e-2, 1e-3))
    json.dumps(report, allow_nan=False)

    def leaves(node):
        if isinstance(node, dict):
            for value in node.values():
                yield from leaves(value)
        elif isinstance(node, list):
            for value in node:
                yield from leaves(value)
        else:
            yield node

    assert all(type(leaf) in (int, float, bool) for leaf in leaves(report))  # no numpy scalars
    assert report["num_pairs"] == 600 and report["num_same"] == 300 and report["num_different"] == 300
    kfold = kfold_accuracy(scores, labels, 10)
    assert report["accuracy"]["mean"] == kfold.mean and report["accuracy"]["std"] == kfold.std
    assert report["accuracy"]["folds"] == list(range(1, 11))
    assert report["auc"] == roc_auc(scores, labels)
    assert report["eer"]["eer"] == eer(scores, labels).eer
    first, second = report["tar_at_far"]
    assert first["far"] == 1e-2 and first["limited_by_negatives"] is False
    assert first["achieved_far"] <= 1e-2
    assert (first["tar"], first["threshold"]) == tuple(tar_at_far(scores, labels, 1e-2))
    assert second["far"] == 1e-3 and second["limited_by_negatives"] is True  # 1e-3 < 1/300
    assert second["achieved_far"] == 0.0 and second["threshold"] > scores[~labels].max()


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "scores, labels, message",
    [
        ([0.1, 0.2, 0.3], [True, False], "3 scores and 2 labels"),
        ([0.1, 0.2], [True, True], "2 positive and 0 negative"),
        ([0.1, 0.2], [False, False], "0 positive and 2 negative"),
        ([], [], "0 positive and 0 negative"),
        ([0.1, float("nan")], [True, False], "non-finite.*index 1"),
        ([0.1, float("inf")], [True, False], "non-finite"),
        ([[0.1, 0.2]], [True, False], "one-dimensional"),
        ([0.1, 0.2], [1, 2], r"0/1, got values \[2\]"),
        ([0.1, 0.2], ["same", "different"], "booleans"),
        (["a", "b"], [True, False], "real numbers"),
    ],
)
def test_invalid_inputs_say_what_was_received(scores, labels, message):
    for metric in (roc_curve, roc_auc, eer, best_accuracy_threshold, kfold_accuracy, verification_report):
        with pytest.raises(ValueError, match=message):
            metric(scores, labels)


@pytest.mark.parametrize("far", [-0.1, 1.5, float("nan"), "often"])
def test_far_must_be_a_rate(far):
    with pytest.raises(ValueError, match="far must be a rate"):
        tar_at_far(WORKED_SCORES, WORKED_LABELS, far)
    with pytest.raises(ValueError, match="far must be a rate"):
        calibrate_threshold([0.1, 0.2], far)


def test_calibration_needs_negatives():
    with pytest.raises(ValueError, match="got none"):
        calibrate_threshold([], 0.01)
    with pytest.raises(ValueError, match="threshold must be a number"):
        false_accept_rate([0.1], float("nan"))


# ----------------------------------------------------------------------------- LFW pairs files

PAIRS_TXT = """2\t2
Alice\t1\t2
Bob\t3\t12
Alice\t1\tBob\t2
Carol_Ann\t1\tDave\t4
Eve\t1\t2
Frank\t2\t3
Eve\t1\tGina\t1
Frank\t1\tHal\t2
"""

DEV_TXT = """2
Alice\t1\t2
Bob\t1\t3
Alice\t1\tBob\t2
Carol\t1\tDave\t1
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pairs.txt"
    path.write_text(text, encoding="utf-8")
    return path


def test_read_pairs_with_folds_header(tmp_path):
    pairs = read_pairs(_write(tmp_path, PAIRS_TXT))
    assert len(pairs) == 8
    assert pairs[0] == Pair("Alice/Alice_0001.jpg", "Alice/Alice_0002.jpg", True, 1)
    assert pairs[1] == Pair("Bob/Bob_0003.jpg", "Bob/Bob_0012.jpg", True, 1)
    assert pairs[3] == Pair("Carol_Ann/Carol_Ann_0001.jpg", "Dave/Dave_0004.jpg", False, 1)
    assert [p.fold for p in pairs] == [1, 1, 1, 1, 2, 2, 2, 2]
    assert [p.same for p in pairs] == [True, True, False, False] * 2
    assert lfw_identities_in_folds(pairs, 2) == {"Eve", "Frank", "Gina", "Hal"}
    assert lfw_identities_in_folds(pairs, [1]) == {"Alice", "Bob", "Carol_Ann", "Dave"}


def test_read_pairs_with_single_count_header(tmp_path):
    # pairsDevTrain.txt style; also tolerates spaces, CRLF and a trailing blank line.
    pairs = read_pairs(_write(tmp_path, DEV_TXT.replace("\t", " ").replace("\n", "\r\n") + "\r\n"))
    assert [(p.same, p.fold) for p in pairs] == [(True, 1), (True, 1), (False, 1), (False, 1)]
    assert pairs[2] == Pair("Alice/Alice_0001.jpg", "Bob/Bob_0002.jpg", False, 1)


@pytest.mark.parametrize(
    "text, message",
    [
        ("ten\t300\n", "line 1: expected a header"),
        ("", "empty"),
        (DEV_TXT.replace("Bob\t1\t3", "Bob\t1"), r"line 3: expected a matched pair.*'Bob\\t1'"),
        (DEV_TXT.replace("Bob\t1\t3", "Bob\t1\tCarol\t3"), "line 3: expected a matched pair"),
        (DEV_TXT.replace("Carol\t1\tDave\t1", "Carol\t1\t2"), "line 5: expected a mismatched pair"),
        (DEV_TXT.replace("Bob\t1\t3", "Bob\tx\t3"), r"line 3: image numbers.*'x'"),
        (DEV_TXT.replace("Bob\t1\t3", "Bob\t0\t3"), "line 3: image numbers"),
        (DEV_TXT.replace("Carol\t1\tDave", "Carol\t1\tCarol"), "line 5: a mismatched pair must name two"),
        (DEV_TXT + "Eve\t1\tFrank\t1\n", "line 6: the header '2' promises 4 pairs"),
        (DEV_TXT.rsplit("\n", 2)[0] + "\n", "promises 4 pairs .* found 3"),
    ],
)
def test_read_pairs_rejects_malformed_files(tmp_path, text, message):
    with pytest.raises(ValueError, match=message):
        read_pairs(_write(tmp_path, text))


def test_identities_in_folds_are_one_based():
    with pytest.raises(ValueError, match="numbered from 1"):
        lfw_identities_in_folds([], [0, 5])
    assert LFW_HELD_OUT_FOLDS == (6, 7, 8, 9, 10)


@pytest.mark.lfw
def test_real_lfw_pairs_file():
    home = os.environ.get("EDGEFACE_DATA_HOME")
    if not home:
        pytest.skip("EDGEFACE_DATA_HOME is not set, so there is no LFW pairs.txt to check")
    path = Path(home) / "lfw" / "pairs.txt"
    if not path.is_file():
        pytest.skip(f"{path} does not exist")
    pairs = read_pairs(path)
    assert len(pairs) == 6000
    for fold in range(1, 11):
        in_fold = [p for p in pairs if p.fold == fold]
        assert len(in_fold) == 600 and sum(p.same for p in in_fold) == 300
    held_out = lfw_identities_in_folds(pairs, LFW_HELD_OUT_FOLDS)
    assert held_out.isdisjoint(lfw_identities_in_folds(pairs, range(1, 6)))


# ----------------------------------------------------------------------------- generated pairs


def _dataset(people: int, images_each, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    counts = rng.integers(1, 8, size=people) if images_each is None else [images_each] * people
    return {f"p{i:03d}": [f"p{i:03d}/{j}.jpg" for j in range(count)] for i, count in enumerate(counts)}


def test_generate_pairs_balanced_disjoint_reproducible():
    identities = _dataset(100, None)
    pairs = generate_pairs(identities, 400, seed=5, folds=10)
    assert len(pairs) == 400 and sum(p.same for p in pairs) == 200
    assert len({(p.path_a, p.path_b) for p in pairs}) == 400  # no pair twice
    for fold in range(1, 11):
        in_fold = [p for p in pairs if p.fold == fold]
        assert [p.same for p in in_fold] == [True] * 20 + [False] * 20  # pairs.txt layout
    people_per_fold = [lfw_identities_in_folds(pairs, fold) for fold in range(1, 11)]
    for i, first in enumerate(people_per_fold):
        for second in people_per_fold[i + 1 :]:
            assert first.isdisjoint(second)
    for pair in pairs:
        same_person = pair.path_a.split("/")[0] == pair.path_b.split("/")[0]
        assert pair.same == same_person and pair.path_a != pair.path_b
    # Same inputs, whatever their order, same pairs; another seed, other pairs.
    shuffled = {name: list(reversed(paths)) for name, paths in reversed(list(identities.items()))}
    assert generate_pairs(shuffled, 400, seed=5, folds=10) == pairs
    assert generate_pairs(identities, 400, seed=6, folds=10) != pairs


def test_generate_pairs_uneven_quotas():
    pairs = generate_pairs(_dataset(60, 4), 46, seed=0, folds=4)  # 23 of each kind
    assert [sum(p.same for p in pairs if p.fold == f) for f in range(1, 5)] == [6, 6, 6, 5]
    assert [sum(not p.same for p in pairs if p.fold == f) for f in range(1, 5)] == [6, 6, 6, 5]


def test_generate_pairs_falls_back_to_shared_people_with_a_warning():
    from edgeface_runtime.metrics import FoldsSharePeopleWarning

    with pytest.warns(FoldsSharePeopleWarning, match="every fold draws from all people") as caught:
        pairs = generate_pairs(_dataset(5, 3), 20, seed=0, folds=10)
    assert issubclass(caught[0].category, RuntimeWarning)  # callers filtering RuntimeWarning still see it
    assert len(pairs) == 20 and len({(p.path_a, p.path_b) for p in pairs}) == 20


def test_generate_pairs_errors():
    with pytest.raises(ValueError, match="positive even"):
        generate_pairs(_dataset(10, 3), 7, seed=0)
    with pytest.raises(ValueError, match="at least 2 \\* folds"):
        generate_pairs(_dataset(10, 3), 10, seed=0, folds=10)
    with pytest.raises(ValueError, match="two or more images"):
        generate_pairs(_dataset(10, 1), 20, seed=0, folds=2)
    with pytest.raises(ValueError, match="cannot supply"):
        generate_pairs(_dataset(2, 2), 10, seed=0, folds=1)  # only 2 distinct same pairs exist
