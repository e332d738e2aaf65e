"""Face-verification metrics and the LFW pairs protocol (numpy only).

Shared by training, conversion checks, reports and devices (a device can calibrate a
threshold on its own impostor pairs), so every number means the same thing everywhere.

Conventions used throughout:

* ``scores`` are similarities: higher means "more likely the same person".
* ``labels`` are booleans (or 0/1): True for a same-person (positive, genuine) pair.
* A pair is **accepted** when ``score >= threshold``.
* FAR (false accept rate) = accepted negatives / negatives; TAR = accepted positives /
  positives; FRR = 1 - TAR.
* Thresholds that are "just above" a score are the next representable value in the
  scores' own float type (float16/float32 stay in their type, anything else is float64),
  so a device comparing float32 scores against the stored threshold accepts exactly the
  pairs the calibration accepted.
* Folds of the LFW protocol are numbered from 1, as in the LFW documentation
  ("folds 6-10"); :data:`LFW_HELD_OUT_FOLDS` is ``(6, 7, 8, 9, 10)``.
* Every function returns plain Python floats (results are JSON-serialisable).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from os import PathLike
from pathlib import Path, PurePosixPath
from typing import Any, Dict, Iterable, List, Mapping, NamedTuple, Sequence, Set, Tuple, Union

import numpy as np

__all__ = [
    "LFW_HELD_OUT_FOLDS",
    "BestAccuracy",
    "Eer",
    "FoldsSharePeopleWarning",
    "KFoldResult",
    "Pair",
    "RocCurve",
    "TarAtFar",
    "best_accuracy_threshold",
    "calibrate_threshold",
    "eer",
    "false_accept_rate",
    "generate_pairs",
    "kfold_accuracy",
    "lfw_identities_in_folds",
    "read_pairs",
    "roc_auc",
    "roc_curve",
    "tar_at_far",
    "verification_report",
]

# The project's evaluation rule: report on LFW folds 6-10 and train only on people absent
# from them (1-based, as in the LFW documentation).
LFW_HELD_OUT_FOLDS = (6, 7, 8, 9, 10)


class FoldsSharePeopleWarning(RuntimeWarning):
    """:func:`generate_pairs` could not keep its folds identity-disjoint (too few people)."""


class RocCurve(NamedTuple):
    """ROC points in order of decreasing threshold; ``thresholds[0]`` is +inf (accept none)."""

    far: np.ndarray
    tar: np.ndarray
    thresholds: np.ndarray


class TarAtFar(NamedTuple):
    tar: float
    threshold: float


class Eer(NamedTuple):
    eer: float
    threshold: float


class BestAccuracy(NamedTuple):
    accuracy: float
    threshold: float


@dataclass(frozen=True)
class KFoldResult:
    """Accuracy under the LFW protocol: one threshold per fold, chosen on the other folds.

    ``mean`` is the mean of the per-fold accuracies and ``std`` their population standard
    deviation (ddof=0), as the LFW results tables report. ``folds`` holds the fold ids in
    the order of ``thresholds`` and ``accuracies`` (sorted ids; 1..k for an int split).
    """

    mean: float
    std: float
    thresholds: Tuple[float, ...]
    accuracies: Tuple[float, ...]
    folds: Tuple[Any, ...] = ()


# --------------------------------------------------------------------------- validation


def _float_dtype(array: np.ndarray) -> np.dtype:
    # Half and single precision keep their type so thresholds are representable in it.
    if array.dtype in (np.float16, np.float32):
        return array.dtype
    return np.dtype(np.float64)


def _as_scores(values: Any, name: str = "scores") -> Tuple[np.ndarray, np.dtype]:
    """1-D finite float64 copy of ``values`` and the float type thresholds are rounded in."""
    try:
        raw = np.asarray(values)
        if raw.dtype.kind not in "biuf":
            raw = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be real numbers, got {type(values).__name__} {values!r:.80}") from None
    if raw.ndim != 1:
        raise ValueError(f"{name} must be one-dimensional, got shape {raw.shape}")
    dtype = _float_dtype(raw)
    as_float = raw.astype(np.float64)
    finite = np.isfinite(as_float)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{name} must be finite, got {bad.size} non-finite value(s), "
            f"the first {as_float[bad[0]]!r} at index {bad[0]}"
        )
    return as_float, dtype


def _as_labels(values: Any) -> np.ndarray:
    raw = np.asarray(values)
    if raw.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {raw.shape}")
    if raw.dtype == np.bool_:
        return raw
    if raw.dtype.kind not in "iuf":
        raise ValueError(f"labels must be booleans (True = same person) or 0/1, got dtype {raw.dtype}")
    invalid = ~((raw == 0) | (raw == 1))
    if invalid.any():
        shown = np.unique(raw[invalid])[:5].tolist()
        raise ValueError(f"labels must be booleans (True = same person) or 0/1, got values {shown}")
    return raw == 1


def _scores_and_labels(scores: Any, labels: Any) -> Tuple[np.ndarray, np.ndarray, np.dtype]:
    values, dtype = _as_scores(scores)
    same = _as_labels(labels)
    if values.size != same.size:
        raise ValueError(
            f"scores and labels must have the same length, got {values.size} scores and {same.size} labels"
        )
    _require_both_classes(same, "")
    return values, same, dtype


def _require_both_classes(same: np.ndarray, where: str) -> None:
    positives = int(np.count_nonzero(same))
    negatives = same.size - positives
    if positives == 0 or negatives == 0:
        raise ValueError(
            f"{where}need at least one positive (same) and one negative (different) pair, "
            f"got {positives} positive and {negatives} negative"
        )


def _check_far(far: Any) -> float:
    try:
        value = float(far)
    except (TypeError, ValueError):
        raise ValueError(f"far must be a rate in [0, 1], got {far!r}") from None
    if not 0.0 <= value <= 1.0:  # also rejects nan
        raise ValueError(f"far must be a rate in [0, 1], got {far!r}")
    return value


# --------------------------------------------------------------------------- ROC family


def _cumulative_counts(values: np.ndarray, same: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores (descending) and the positives/negatives scoring at least each.

    Equal scores form one group, so a threshold never splits a tie: this is what makes
    the ROC, AUC and accuracy exact with ties.
    """
    # No stable sort needed: counts are read only at the end of each group of ties.
    order = np.argsort(-values)
    return _grouped_counts(values[order], same[order])


def _grouped_counts(ordered: np.ndarray, same: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`_cumulative_counts` of scores already in decreasing order."""
    group_ends = np.append(np.flatnonzero(ordered[1:] != ordered[:-1]), ordered.size - 1)
    true_accepts = np.cumsum(same, dtype=np.int64)[group_ends]
    false_accepts = group_ends + 1 - true_accepts
    return ordered[group_ends], true_accepts, false_accepts


def roc_curve(scores: Any, labels: Any) -> RocCurve:
    """ROC of similarity scores: ``(far, tar, thresholds)``, one point per distinct score.

    Point ``i`` accepts every pair with ``score >= thresholds[i]``. The first point is
    ``(0, 0)`` at threshold +inf, the last ``(1, 1)`` at the lowest score; thresholds
    decrease and FAR/TAR never decrease. Tied scores share one point, so a run of ties
    mixing both labels is a diagonal segment (the chance of ordering them correctly is 1/2).
    """
    values, same, _ = _scores_and_labels(scores, labels)
    distinct, true_accepts, false_accepts = _cumulative_counts(values, same)
    positives = int(true_accepts[-1])
    negatives = int(false_accepts[-1])
    far = np.concatenate(([0.0], false_accepts / negatives))
    tar = np.concatenate(([0.0], true_accepts / positives))
    thresholds = np.concatenate(([np.inf], distinct))
    return RocCurve(far, tar, thresholds)


def roc_auc(scores: Any, labels: Any) -> float:
    """Area under the ROC by the trapezoid rule.

    Equals the Mann-Whitney probability that a random positive outscores a random negative,
    ties counting 1/2. Computed on integer counts so that 1.0 and 0.5 come out exact.
    """
    values, same, _ = _scores_and_labels(scores, labels)
    _, true_accepts, false_accepts = _cumulative_counts(values, same)
    true_accepts = np.concatenate(([0], true_accepts))
    false_accepts = np.concatenate(([0], false_accepts))
    doubled_area = np.sum(np.diff(false_accepts) * (true_accepts[1:] + true_accepts[:-1]))
    return float(doubled_area) / (2.0 * float(true_accepts[-1]) * float(false_accepts[-1]))


def eer(scores: Any, labels: Any) -> Eer:
    """Equal error rate and its threshold: where FAR and FRR cross on the ROC.

    FAR rises and FRR falls from one ROC point to the next; the crossing is found by linear
    interpolation between the two points around it, and the threshold is interpolated the
    same way (the +inf of the first ROC point is replaced by the highest score).
    """
    far, tar, thresholds = roc_curve(scores, labels)
    gap = far - (1.0 - tar)  # -1 at the first point, +1 at the last
    after = int(np.argmax(gap >= 0.0))
    before = after - 1
    fraction = gap[before] / (gap[before] - gap[after])
    rate = far[before] + fraction * (far[after] - far[before])
    thresholds = thresholds.copy()
    thresholds[0] = thresholds[1]
    threshold = thresholds[before] + fraction * (thresholds[after] - thresholds[before])
    return Eer(float(rate), float(threshold))


def _allowed_false_accepts(far: float, negatives: int) -> int:
    """Largest k with k / negatives <= far, robust to far * negatives rounding (0.29 * 100)."""
    count = int(math.floor(far * negatives))
    while count < negatives and (count + 1) / negatives <= far:
        count += 1
    while count > 0 and count / negatives > far:
        count -= 1
    return count


def _just_above(value: float, dtype: np.dtype) -> float:
    return float(np.nextafter(dtype.type(value), dtype.type(np.inf)))


def _smallest_threshold(negatives: np.ndarray, far: float, dtype: np.dtype, lowest: float) -> float:
    allowed = _allowed_false_accepts(far, negatives.size)
    if allowed >= negatives.size:
        # Every threshold at or below the lowest score accepts all pairs; report that score.
        return float(lowest)
    # Accepting the (allowed+1)-th highest negative would break the target, so the
    # threshold must sit just above it; any threshold up to it accepts too many.
    position = negatives.size - 1 - allowed
    first_refused = np.partition(negatives, position)[position]
    return _just_above(first_refused, dtype)


def tar_at_far(scores: Any, labels: Any, far: float) -> TarAtFar:
    """TAR at the smallest threshold whose empirical FAR on the negatives is ``<= far``.

    With ``k = floor(far * negatives)`` the threshold is the next representable value above
    the (k+1)-th highest negative score, so at most ``k`` negatives (fewer when scores tie)
    are accepted. When ``far < 1 / negatives`` only zero false accepts qualify: the
    threshold is then just above the *highest* negative score (``threshold >
    max(negative scores)``, achieved FAR 0), and the TAR is an estimate limited by the
    number of negatives (:func:`verification_report` flags this as
    ``limited_by_negatives``). When ``far`` allows every negative, the threshold is the
    lowest score and TAR is 1.
    """
    values, same, dtype = _scores_and_labels(scores, labels)
    target = _check_far(far)
    threshold = _smallest_threshold(values[~same], target, dtype, values.min())
    positives = values[same]
    tar = np.count_nonzero(positives >= threshold) / positives.size
    return TarAtFar(float(tar), threshold)


def calibrate_threshold(negative_scores: Any, far: float) -> float:
    """The smallest threshold at which the impostor pairs ``negative_scores`` give FAR <= far.

    Same rule as :func:`tar_at_far` (which uses the negatives of its pairs): just above the
    (k+1)-th highest impostor score, ``k = floor(far * n)``; just above the highest one when
    ``far < 1/n``; the lowest impostor score when ``far`` allows them all.
    """
    values, dtype = _as_scores(negative_scores, "negative_scores")
    if values.size == 0:
        raise ValueError("negative_scores must hold at least one impostor score, got none")
    return _smallest_threshold(values, _check_far(far), dtype, values.min())


def false_accept_rate(negative_scores: Any, threshold: float) -> float:
    """Fraction of the impostor pairs ``negative_scores`` accepted (``score >= threshold``)."""
    values, _ = _as_scores(negative_scores, "negative_scores")
    if values.size == 0:
        raise ValueError("negative_scores must hold at least one impostor score, got none")
    limit = float(threshold)
    if math.isnan(limit):
        raise ValueError(f"threshold must be a number, got {threshold!r}")
    return float(np.count_nonzero(values >= limit) / values.size)


# --------------------------------------------------------------------------- accuracy


def _best_accuracy(values: np.ndarray, same: np.ndarray, dtype: np.dtype) -> BestAccuracy:
    order = np.argsort(-values)
    return _best_accuracy_sorted(values[order], same[order], dtype)


def _best_accuracy_sorted(ordered: np.ndarray, same: np.ndarray, dtype: np.dtype) -> BestAccuracy:
    distinct, true_accepts, false_accepts = _grouped_counts(ordered, same)
    negatives = int(false_accepts[-1])
    # Candidates in increasing threshold order: accept the scores >= distinct[j] for
    # j = last..0 (lowest score first), then accept none. argmax takes the first best, so
    # ties go to the lowest threshold.
    correct = np.append((true_accepts + (negatives - false_accepts))[::-1], negatives)
    best = int(np.argmax(correct))
    accuracy = correct[best] / ordered.size
    if best == distinct.size:
        threshold = _just_above(distinct[0], dtype)
    elif best == 0:
        threshold = float(distinct[-1])
    else:
        group = distinct.size - 1 - best  # accept distinct[:group + 1]
        threshold = _midpoint(distinct[group], distinct[group + 1], dtype)
    return BestAccuracy(float(accuracy), threshold)


def _midpoint(upper: float, lower: float, dtype: np.dtype) -> float:
    """A value in (lower, upper], halfway where the float type allows, computed in ``dtype``."""
    high, low, half = dtype.type(upper), dtype.type(lower), dtype.type(0.5)
    # Halves first: no overflow near the float maximum. Operands all of ``dtype`` so that
    # numpy 1.x's value-based casting does not promote to float64.
    middle = high * half + low * half
    # Adjacent floats can round the middle down onto ``lower``, which would accept it.
    return float(middle if middle > low else high)


def best_accuracy_threshold(scores: Any, labels: Any) -> BestAccuracy:
    """Highest accuracy over all thresholds, and the threshold giving it.

    Candidates are the midpoints between consecutive distinct scores (so no pair sits on
    the threshold), the lowest score (accept all) and the value just above the highest
    score (accept none); one sort and a cumulative sum evaluate them all (O(n log n)).
    When several thresholds reach the best accuracy, the lowest is returned.
    """
    values, same, dtype = _scores_and_labels(scores, labels)
    return _best_accuracy(values, same, dtype)


def _fold_ids(folds: Any, size: int) -> np.ndarray:
    if isinstance(folds, (int, np.integer)) and not isinstance(folds, (bool, np.bool_)):
        count = int(folds)
        if not 2 <= count <= size:
            raise ValueError(f"folds must be between 2 and the number of pairs ({size}), got {count}")
        # Contiguous blocks in input order, numbered from 1: LFW's pairs.txt lists its ten
        # folds one after another, so folds=10 reproduces the official split.
        return np.arange(size) * count // size + 1
    ids = np.asarray(folds)
    if ids.ndim != 1 or ids.size != size:
        raise ValueError(f"folds must be an int or one fold id per pair ({size}), got shape {ids.shape}")
    if np.unique(ids).size < 2:
        raise ValueError(f"folds must name at least two different folds, got only {np.unique(ids).tolist()}")
    return ids


def _python_scalar(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def kfold_accuracy(scores: Any, labels: Any, folds: Union[int, Sequence[Any], np.ndarray] = 10) -> KFoldResult:
    """Accuracy under the LFW protocol.

    For each fold, the best-accuracy threshold (:func:`best_accuracy_threshold`) is chosen
    on all the *other* folds and the accuracy is measured on the held-out fold.

    ``folds`` is either an array of fold ids, one per pair (e.g. ``[p.fold for p in
    pairs]`` to use LFW's own folds), or an int ``k``: the pairs are then split, in the
    order given, into ``k`` contiguous blocks whose sizes differ by at most one (fold ``i``
    holds pairs ``floor((i-1) n / k)`` up to ``floor(i n / k)``, ids 1..k). Contiguous,
    not shuffled, so that LFW's pairs.txt order yields its official folds; shuffle the
    pairs first if they are sorted by label or identity.
    """
    values, same, dtype = _scores_and_labels(scores, labels)
    ids = _fold_ids(folds, values.size)
    thresholds: List[float] = []
    accuracies: List[float] = []
    # Sort once; every fold's training set is then a sorted subsequence.
    order = np.argsort(-values)
    ordered, ordered_same, ordered_ids = values[order], same[order], ids[order]
    fold_names = np.unique(ids)
    for fold in fold_names:
        held_out = ids == fold
        train = ordered_ids != fold
        where = f"to choose a threshold for fold {_python_scalar(fold)!r} the other folds "
        _require_both_classes(ordered_same[train], where)
        threshold = _best_accuracy_sorted(ordered[train], ordered_same[train], dtype).threshold
        correct = (values[held_out] >= threshold) == same[held_out]
        thresholds.append(threshold)
        accuracies.append(float(np.mean(correct)))
    return KFoldResult(
        mean=float(np.mean(accuracies)),
        std=float(np.std(accuracies)),
        thresholds=tuple(thresholds),
        accuracies=tuple(accuracies),
        folds=tuple(_python_scalar(fold) for fold in fold_names),
    )


def verification_report(
    scores: Any,
    labels: Any,
    folds: Union[int, Sequence[Any], np.ndarray] = 10,
    fars: Iterable[float] = (1e-2, 1e-3),
) -> Dict[str, Any]:
    """A JSON-serialisable summary of verification quality (plain floats, ints, lists).

    Keys: ``num_pairs``, ``num_same``, ``num_different``; ``accuracy`` (k-fold ``mean``,
    ``std``, ``folds``, ``fold_accuracies``, ``fold_thresholds``, see
    :func:`kfold_accuracy`); ``best_accuracy`` (``accuracy`` and ``threshold`` chosen on
    all pairs: optimistic, but the threshold to deploy); ``tar_at_far``: one entry per
    requested FAR with ``far``, ``tar``, ``threshold``, ``achieved_far`` and
    ``limited_by_negatives`` (True when ``0 < far < 1/num_different``: too few impostor
    pairs to measure that rate, so the threshold sits above every impostor score, see
    :func:`tar_at_far`); ``eer`` (``eer``, ``threshold``);
    ``auc``.
    """
    values, same, dtype = _scores_and_labels(scores, labels)
    targets = [_check_far(far) for far in fars]
    negatives = values[~same]
    kfold = kfold_accuracy(values.astype(dtype), same, folds)
    best = _best_accuracy(values, same, dtype)
    operating_points = []
    for target in targets:
        tar, threshold = tar_at_far(values.astype(dtype), same, target)
        operating_points.append(
            {
                "far": target,
                "tar": tar,
                "threshold": threshold,
                "achieved_far": false_accept_rate(negatives, threshold),
                "limited_by_negatives": bool(0.0 < target and _allowed_false_accepts(target, negatives.size) == 0),
            }
        )
    equal_error = eer(values, same)
    return {
        "num_pairs": int(values.size),
        "num_same": int(np.count_nonzero(same)),
        "num_different": int(negatives.size),
        "accuracy": {
            "mean": kfold.mean,
            "std": kfold.std,
            "folds": list(kfold.folds),
            "fold_accuracies": list(kfold.accuracies),
            "fold_thresholds": list(kfold.thresholds),
        },
        "best_accuracy": {"accuracy": best.accuracy, "threshold": best.threshold},
        "tar_at_far": operating_points,
        "eer": {"eer": equal_error.eer, "threshold": equal_error.threshold},
        "auc": roc_auc(values, same),
    }


# --------------------------------------------------------------------------- LFW pairs


@dataclass(frozen=True)
class Pair:
    """Two images to verify, as paths relative to the image root (``/`` separated).

    ``same`` is True for a matched (same-person) pair; ``fold`` is 1-based.
    """

    path_a: str
    path_b: str
    same: bool
    fold: int


def _lfw_image_path(name: str, number: int) -> str:
    return f"{name}/{name}_{number:04d}.jpg"


class _ImageResolver:
    """Image ``i`` of ``name`` under an image root, whatever the file type and naming.

    Tried in order, first existing file wins: ``name/name_%04d.EXT`` (LFW), ``name/%d.EXT``
    (ORL/AT&T: ``s1/1.pgm``), ``name/%04d.EXT``, for each EXT of the runtime's ``IMAGE_SUFFIXES``
    in order (any letter case). When none exists the LFW ``.jpg`` name is kept, so the caller reports
    the missing file. Each person's folder is listed once.
    """

    def __init__(self, root: Path) -> None:
        from ._images import IMAGE_SUFFIXES  # here, not at the top: importing metrics should not load Pillow

        self.root = root
        self._suffixes = IMAGE_SUFFIXES
        self._listings: Dict[str, Dict[str, str]] = {}

    def __call__(self, name: str, number: int) -> str:
        listing = self._listings.get(name)
        if listing is None:
            folder = self.root / name
            try:
                listing = {entry.name.lower(): entry.name for entry in folder.iterdir()}
            except OSError:
                listing = {}
            self._listings[name] = listing
        for stem in (f"{name}_{number:04d}", str(number), f"{number:04d}"):
            for extension in self._suffixes:
                found = listing.get((stem + extension).lower())
                if found is not None:
                    return f"{name}/{found}"
        return _lfw_image_path(name, number)


def read_pairs(path: Union[str, PathLike], *, image_root: Union[str, PathLike, None] = None) -> List[Pair]:
    """Parse an LFW pairs file: ``pairs.txt``, ``pairsDevTrain.txt`` or ``pairsDevTest.txt``.

    The first line is either ``folds<TAB>n`` (pairs.txt: ``10	300``) or a single count
    ``n`` (the View 1 files: ``1100``, ``500``; one fold). Then, for each fold in turn, ``n``
    matched lines ``name<TAB>i<TAB>j`` followed by ``n`` mismatched lines
    ``name1<TAB>i<TAB>name2<TAB>j``. Image ``i`` of ``name`` is ``name/name_%04d.jpg``
    (1-based) — or, given ``image_root``, whichever file exists there: ``name/name_%04d``,
    ``name/%d`` or ``name/%04d`` with any of the extensions JPEG, PNG, PGM, PPM, BMP, WebP
    (so a pairs file over ORL's ``s1/1.pgm`` works as one over LFW). Fields may be separated
    by any whitespace; blank lines are ignored.

    Folds are numbered from 1 (``Pair.fold``), following the file order. A line that does
    not fit, including a mismatched line where a matched one is due, a count that
    disagrees with the header, or a "mismatched" pair of one person, raises ValueError
    naming the line number and its content.
    """
    source = Path(path)
    resolve = _ImageResolver(Path(image_root)) if image_root is not None else _lfw_image_path
    lines = source.read_text(encoding="utf-8").splitlines()
    numbered = [(index + 1, line) for index, line in enumerate(lines) if line.strip()]
    if not numbered:
        raise ValueError(f"{source}: the pairs file is empty")
    header_number, header = numbered[0]
    fold_count, per_kind = _parse_header(source, header_number, header)
    per_fold = 2 * per_kind
    expected = fold_count * per_fold
    body = numbered[1:]
    pairs: List[Pair] = []
    for position, (number, line) in enumerate(body):
        if position >= expected:
            raise ValueError(
                f"{source}, line {number}: the header {header.strip()!r} promises {expected} pairs, "
                f"but the file goes on with {line!r}"
            )
        fold = position // per_fold + 1
        matched = position % per_fold < per_kind
        pairs.append(_parse_pair_line(source, number, line, matched, fold, per_kind, resolve))
    if len(body) < expected:
        raise ValueError(
            f"{source}: the header {header.strip()!r} promises {expected} pairs "
            f"({fold_count} fold(s) of {per_kind} matched + {per_kind} mismatched), found {len(body)}"
        )
    return pairs


def _parse_header(source: Path, number: int, line: str) -> Tuple[int, int]:
    fields = line.split()
    try:
        counts = [int(field) for field in fields]
    except ValueError:
        counts = []
    if len(counts) not in (1, 2) or min(counts) < 1:
        raise ValueError(
            f"{source}, line {number}: expected a header 'folds<TAB>pairs_per_kind' (like '10\\t300') "
            f"or a single count (like '1100'), got {line!r}"
        )
    return (1, counts[0]) if len(counts) == 1 else (counts[0], counts[1])


def _parse_pair_line(source: Path, number: int, line: str, matched: bool, fold: int, per_kind: int,
                     resolve: Any = _lfw_image_path) -> Pair:
    fields = line.split()
    where = f"{source}, line {number}"
    if matched and len(fields) != 3:
        raise ValueError(
            f"{where}: expected a matched pair 'name<TAB>i<TAB>j' (each fold lists its {per_kind} "
            f"matched pairs before its mismatched ones; this is fold {fold}), got {line!r}"
        )
    if not matched and len(fields) != 4:
        raise ValueError(
            f"{where}: expected a mismatched pair 'name1<TAB>i<TAB>name2<TAB>j' (fold {fold}'s "
            f"matched pairs are over), got {line!r}"
        )
    if matched:
        name_a, text_a, text_b = fields
        name_b = name_a
    else:
        name_a, text_a, name_b, text_b = fields
        if name_a == name_b:
            raise ValueError(f"{where}: a mismatched pair must name two different people, got {line!r}")
    return Pair(
        resolve(name_a, _image_number(where, text_a, line)),
        resolve(name_b, _image_number(where, text_b, line)),
        matched,
        fold,
    )


def _image_number(where: str, text: str, line: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"{where}: image numbers must be positive integers, got {text!r} in {line!r}")
    return int(text)


def _identity_of(path: str) -> str:
    parent = PurePosixPath(path.replace("\\", "/")).parent.as_posix()
    if parent in (".", "/", ""):
        raise ValueError(f"cannot tell whose image {path!r} is: expected 'name/file' relative to the image root")
    return parent


def lfw_identities_in_folds(pairs: Iterable[Pair], folds: Union[int, Iterable[int]]) -> Set[str]:
    """Names of the people appearing in the given folds (1-based, as in the LFW docs).

    The name is the folder of each image path (``name/name_0001.jpg`` -> ``name``). The
    project's rule: train only on people outside ``lfw_identities_in_folds(pairs,
    LFW_HELD_OUT_FOLDS)``, i.e. folds 6-10.
    """
    wanted = {int(folds)} if isinstance(folds, (int, np.integer)) else {int(fold) for fold in folds}
    too_small = sorted(fold for fold in wanted if fold < 1)
    if too_small:
        raise ValueError(f"folds are numbered from 1, like the LFW documentation's folds 1-10, got {too_small}")
    names: Set[str] = set()
    for pair in pairs:
        if pair.fold in wanted:
            names.add(_identity_of(pair.path_a))
            names.add(_identity_of(pair.path_b))
    return names


def generate_pairs(
    identities: Mapping[str, Sequence[str]],
    n_pairs: int,
    seed: int,
    folds: int = 10,
) -> List[Pair]:
    """Draw LFW-style verification pairs from a folder-per-identity dataset.

    ``identities`` maps a person to their image paths (relative to the image root; use
    ``person/file`` so :func:`lfw_identities_in_folds` recognises the names). The same
    ``identities``, ``n_pairs``, ``seed`` and ``folds`` always give the same list, whatever
    the order of the mapping or of its lists. The scheme:

    1. Names are sorted and each person's paths sorted and de-duplicated; people without
       images are dropped. ``rng = numpy.random.default_rng(seed)``.
    2. Half the pairs are same-person and half different (``n_pairs`` must be even and at
       least ``2 * folds``). Fold ``f`` (1-based) gets ``q // folds`` of each kind, plus one
       for the first ``q % folds`` folds, where ``q = n_pairs // 2``.
    3. People are assigned to folds first: the people with two or more images in the
       order ``rng.permutation``, then those with one image in another ``rng.permutation``,
       dealt round-robin (person ``i`` of that sequence to fold ``i % folds + 1``), which
       spreads the people able to form same pairs evenly.
    4. Fold by fold, a same pair picks a person uniformly among the fold's people with two
       or more images, then two different images uniformly (stored in sorted path order);
       a different pair picks two different people of the fold uniformly, then one image of
       each uniformly (the alphabetically first person first). A pair already drawn
       (in any fold) is discarded and another drawn; a fold still short of its quota after
       ``100 * quota + 1000`` draws of a kind raises ValueError.
    5. Output is fold 1's same pairs, then fold 1's different pairs, then fold 2's, and so on
       (the layout of LFW's pairs.txt).

    Folds are identity-disjoint whenever every fold can hold its quota alone: at least
    ``folds`` people with two images, ``2 * folds`` people in all, and enough distinct
    pairs in each fold. Otherwise every fold draws from all people (folds then share
    people) and a :class:`FoldsSharePeopleWarning` (a ``RuntimeWarning``) says so; if even
    all people together cannot supply the distinct pairs asked for, ValueError.
    """
    if isinstance(n_pairs, bool) or not isinstance(n_pairs, (int, np.integer)) or n_pairs < 2 or n_pairs % 2:
        raise ValueError(f"n_pairs must be a positive even integer (half same, half different), got {n_pairs!r}")
    if isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 1:
        raise ValueError(f"folds must be a positive integer, got {folds!r}")
    n_pairs, folds = int(n_pairs), int(folds)
    if n_pairs < 2 * folds:
        raise ValueError(
            f"n_pairs must be at least 2 * folds ({2 * folds}) so each fold has both kinds, got {n_pairs}"
        )

    images: Dict[str, List[str]] = {}
    for name in sorted(identities):
        paths = sorted(set(identities[name]))
        if paths:
            images[str(name)] = [str(path) for path in paths]
    names = list(images)
    several = [name for name in names if len(images[name]) >= 2]
    single = [name for name in names if len(images[name]) == 1]
    if not several or len(names) < 2:
        raise ValueError(
            "need at least one person with two or more images and two people in all, "
            f"got {len(several)} with two or more among {len(names)} people with images"
        )

    rng = np.random.default_rng(seed)
    half = n_pairs // 2
    quotas = [half // folds + (fold < half % folds) for fold in range(folds)]
    dealt = [several[i] for i in rng.permutation(len(several))] + [single[i] for i in rng.permutation(len(single))]
    pools: List[List[str]] = [sorted(dealt[fold::folds]) for fold in range(folds)]

    if not all(_pool_can_supply(pool, images, quota) for pool, quota in zip(pools, quotas)):
        if not _pool_can_supply(names, images, half):
            raise ValueError(
                f"{len(names)} people with {sum(map(len, images.values()))} images cannot supply "
                f"{half} distinct same-person and {half} distinct different-person pairs"
            )
        warnings.warn(
            f"cannot give each of {folds} folds its own people ({len(several)} people with two or "
            f"more images, {len(names)} in all, for {n_pairs} pairs): every fold draws from all people",
            FoldsSharePeopleWarning,
            stacklevel=2,
        )
        pools = [names] * folds

    drawn: Set[Tuple[str, str]] = set()
    pairs: List[Pair] = []
    for fold, (pool, quota) in enumerate(zip(pools, quotas), start=1):
        pairs.extend(_draw_same(rng, pool, images, quota, fold, drawn))
        pairs.extend(_draw_different(rng, pool, images, quota, fold, drawn))
    return pairs


def _pool_can_supply(pool: Sequence[str], images: Mapping[str, List[str]], quota: int) -> bool:
    counts = [len(images[name]) for name in pool]
    same_available = sum(count * (count - 1) // 2 for count in counts)
    different_available = (sum(counts) ** 2 - sum(count * count for count in counts)) // 2
    return same_available >= quota and different_available >= quota


def _two_distinct(rng: np.random.Generator, size: int) -> Tuple[int, int]:
    first = int(rng.integers(size))
    second = int(rng.integers(size - 1))
    return first, second + (second >= first)


def _draw_same(rng, pool, images, quota, fold, drawn) -> List[Pair]:
    eligible = [name for name in pool if len(images[name]) >= 2]
    pairs: List[Pair] = []
    for _ in range(100 * quota + 1000):
        if len(pairs) == quota:
            return pairs
        paths = images[eligible[int(rng.integers(len(eligible)))]]
        first, second = sorted(_two_distinct(rng, len(paths)))
        key = (paths[first], paths[second])
        if key not in drawn:
            drawn.add(key)
            pairs.append(Pair(key[0], key[1], True, fold))
    if len(pairs) == quota:
        return pairs
    raise ValueError(f"fold {fold}: drew only {len(pairs)} distinct same-person pairs of {quota}; ask for fewer pairs")


def _draw_different(rng, pool, images, quota, fold, drawn) -> List[Pair]:
    pairs: List[Pair] = []
    for _ in range(100 * quota + 1000):
        if len(pairs) == quota:
            return pairs
        first, second = sorted(_two_distinct(rng, len(pool)))  # pool is sorted by name
        paths_a, paths_b = images[pool[first]], images[pool[second]]
        key = (paths_a[int(rng.integers(len(paths_a)))], paths_b[int(rng.integers(len(paths_b)))])
        if key not in drawn:
            drawn.add(key)
            pairs.append(Pair(key[0], key[1], False, fold))
    if len(pairs) == quota:
        return pairs
    raise ValueError(
        f"fold {fold}: drew only {len(pairs)} distinct different-person pairs of {quota}; ask for fewer pairs"
    )
