"""Does a site threshold keep its FAR on people it never saw? Measured on a folder of people.

    python examples/site_calibration.py --data $EDGEFACE_DATA_HOME/orl --far 1e-3 --far 1e-2 --splits 5

``--data`` is one folder per person (ORL/AT&T: ``s1`` ... ``s40``, PGM). For each split the
people are shuffled and halved: the first half is enrolled (``--enroll`` photos each) into a
fresh gallery, which is calibrated exactly as ``edgeface calibrate`` does it (its
different-person template pairs); the second half is never enrolled and gives every pair of
its photos: impostor pairs for the FAR, same-person pairs for the TAR, at the site threshold
and at the model's stored threshold. Photos in which the detector finds no face are skipped
and counted, as the device would refuse them.

Uses only edgeface_runtime (no TensorFlow). Prints a table, or JSON with ``--json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

def embed_folder(root: Path, model: str | None = None) -> tuple[dict, dict]:
    """``({person: [(photo, embedding), ...]}, {"images": n, "no_face": n, "skipped": [...]})``."""
    from edgeface_runtime import FaceVerifier, NoFaceError, image_files

    people: dict = {}
    skipped = []
    total = 0
    with FaceVerifier.from_path(model) as fv:
        for folder in sorted((p for p in root.iterdir() if p.is_dir()), key=_natural):
            for photo in sorted(image_files(folder), key=_natural):
                total += 1
                try:
                    people.setdefault(folder.name, []).append((photo.name, fv.embed(str(photo))))
                except NoFaceError:
                    skipped.append(str(photo.relative_to(root)))
    return people, {"images": total, "no_face": len(skipped), "skipped": skipped}


def _natural(path: Path) -> tuple:
    digits = "".join(ch for ch in path.stem if ch.isdigit())
    return (path.stem.rstrip("0123456789"), int(digits) if digits else -1, path.name)


def _pair_scores(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    scores = (unit @ unit.T).astype(np.float32)
    upper = np.triu(np.ones_like(scores, dtype=bool), k=1)
    same = labels[:, None] == labels[None, :]
    return scores[upper & ~same], scores[upper & same]


def measure(people: dict, fars: Sequence[float], *, splits: int = 5, enroll: int = 5, model: str | None = None,
            seed: int = 0) -> list[dict]:
    """One record per (split, FAR): the site threshold's FAR/TAR on the held-out people vs the model's."""
    from edgeface_runtime import FaceVerifier

    names = sorted(people, key=lambda n: _natural(Path(n)))
    rng = np.random.default_rng(seed)
    records = []
    for split in range(splits):
        order = names if split == 0 else [names[i] for i in rng.permutation(len(names))]
        half = len(order) // 2
        enrolled, held_out = order[:half], order[half:]
        labels = np.array([n for n in held_out for _ in people[n]])
        test = np.stack([e for n in held_out for _, e in people[n]])
        impostors, genuine = _pair_scores(test, labels)
        with tempfile.TemporaryDirectory() as tmp:
            with FaceVerifier.from_path(model, detect=False, gallery_path=Path(tmp) / "site.db") as fv:
                for name in enrolled:
                    fv.enroll(name, [e for _, e in people[name][:enroll]])
                for far in fars:
                    cal = fv.calibrate(far)
                    model_threshold = cal.model_threshold  # None when the model has none at this FAR
                    records.append({
                        "split": split, "far": far,
                        "calibration_people": len(enrolled), "calibration_pairs": cal.impostor_pairs,
                        "min_supported_far": cal.min_supported_far, "warning": cal.warning,
                        "site_threshold": cal.threshold, "model_threshold": model_threshold,
                        "test_people": len(held_out), "test_impostor_pairs": int(impostors.size),
                        "test_genuine_pairs": int(genuine.size),
                        "site_far": float(np.mean(impostors >= cal.threshold)),
                        "site_tar": float(np.mean(genuine >= cal.threshold)),
                        "model_far": None if model_threshold is None else float(np.mean(impostors >= model_threshold)),
                        "model_tar": None if model_threshold is None else float(np.mean(genuine >= model_threshold)),
                    })
    return records


def summarise(records: list[dict]) -> list[dict]:
    """Per FAR: mean and range over the splits."""
    rows = []
    for far in sorted({r["far"] for r in records}):
        chosen = [r for r in records if r["far"] == far]
        row: dict[str, Any] = {"far": far, "splits": len(chosen)}
        for key in ("site_far", "site_tar", "model_far", "model_tar", "site_threshold"):
            if chosen[0][key] is None:
                row[key] = None
                continue
            values = np.array([r[key] for r in chosen])
            row[key] = {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}
        row["model_threshold"] = chosen[0]["model_threshold"]
        row["calibration_pairs"] = chosen[0]["calibration_pairs"]
        row["test_impostor_pairs"] = chosen[0]["test_impostor_pairs"]
        rows.append(row)
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, required=True, help="one folder of photos per person (e.g. ORL)")
    parser.add_argument("--model", "-m", default=None, help="embedding .tflite (default: the bundled model)")
    parser.add_argument("--far", type=float, action="append", help="FAR to calibrate at (repeatable; default 1e-3)")
    parser.add_argument("--splits", type=int, default=5, help="random halvings of the people (default: 5)")
    parser.add_argument("--enroll", type=int, default=5, help="photos enrolled per calibration person (default: 5)")
    parser.add_argument("--json", dest="as_json", action="store_true")
    args = parser.parse_args(argv)
    people, counts = embed_folder(args.data, args.model)
    records = measure(people, args.far or [1e-3], splits=args.splits, enroll=args.enroll, model=args.model)
    summary = summarise(records)
    if args.as_json:
        print(json.dumps({"images": counts, "summary": summary, "splits": records}, indent=2))
        return 0
    print(f"{counts['images']} photos of {len(people)} people, {counts['no_face']} without a detected face (skipped)")
    for row in summary:
        print(f"FAR {row['far']:g}: {row['splits']} splits, calibrated on {row['calibration_pairs']} impostor pairs, "
              f"tested on {row['test_impostor_pairs']} impostor pairs of other people")
        for who in ("site", "model"):
            far, tar = row[f"{who}_far"], row[f"{who}_tar"]
            if far is None:
                print(f"  {who:5s} threshold: none stored at this FAR")
                continue
            print(f"  {who:5s} threshold: FAR {far['mean']:.4f} ({far['min']:.4f}-{far['max']:.4f}), "
                  f"TAR {tar['mean']:.3f} ({tar['min']:.3f}-{tar['max']:.3f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
