"""Target-domain adaptation (`edgeface adapt`) and its k-shot evaluation, on the tiny backbone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from training_helpers import synthetic_face, tiny_config


def make_target(root: Path, identities: int = 8, per_identity: int = 6, offset: int = 30, prefix: str = "s") -> Path:
    """Grayscale PGM people the source model never saw (identities offset from the training ones)."""
    from PIL import Image

    for i in range(identities):
        person = root / f"{prefix}{i + 1}"
        person.mkdir(parents=True, exist_ok=True)
        for j in range(per_identity):
            Image.fromarray(synthetic_face(offset + i, j, 40)).convert("L").save(person / f"{j + 1}.pgm")
    return root


@pytest.fixture(scope="module")
def source_model(tmp_path_factory) -> Path:
    from training_helpers import make_dataset

    from edgeface.training import train

    root = tmp_path_factory.mktemp("source")
    data = make_dataset(root / "faces", identities=6, per_identity=6)
    result = train(tiny_config(data, root / "run", epochs=1, steps_per_epoch=3, val_fraction=0.0))
    return result.model_path


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Path:
    return make_target(tmp_path_factory.mktemp("target") / "faces")


SHORT = dict(steps=4, batch_size=8, lr=1e-2)


def _weights(model, name):
    return [np.array(w) for w in model.get_layer(name).get_weights()]


def test_adapt_writes_a_loadable_model_recording_its_source(source_model, target, tmp_path):
    from edgeface.adaptation import adapt
    from edgeface.training import load_model

    result = adapt(source_model, target, tmp_path / "adapted", unfreeze=0, **SHORT)
    model, metadata = load_model(result.model_path)
    source, source_meta = load_model(source_model)
    assert metadata.preprocess == source_meta.preprocess and metadata.embedding_size == source_meta.embedding_size
    assert metadata.thresholds == {}  # the source's thresholds do not hold after adaptation
    extra = metadata.extra
    assert extra["adapted_from"]["sha256"] == hashlib.sha256(Path(source_model).read_bytes()).hexdigest()
    assert extra["adaptation"]["steps"] == 4 and extra["adaptation"]["unfreeze"] == 0 and extra["backbone"] == "tiny"
    assert "compression_learning_rate" not in extra  # trained here from scratch: the converter's own defaults
    card = json.loads(result.card_path.read_text())
    assert card["data"]["identities"] == 8 and card["data"]["images"] == 48
    assert card["result"]["trainable_layers"] == ["embedding_dense", "embedding_bn"]
    # Only the embedding head moved: unfreeze=0 freezes the backbone.
    assert not np.allclose(_weights(model, "embedding_dense")[0], _weights(source, "embedding_dense")[0])
    for a, b in zip(_weights(model, "tiny_block3_conv"), _weights(source, "tiny_block3_conv")):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).normal(size=(3, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(np.linalg.norm(model.predict(x, verbose=0), axis=1), 1.0, atol=1e-5)


def test_unfreeze_trains_the_top_blocks_only(source_model, target, tmp_path):
    from edgeface.adaptation import adapt
    from edgeface.training import load_model

    result = adapt(source_model, target, tmp_path / "adapted", unfreeze=1, **SHORT)
    model, _ = load_model(result.model_path)
    source, _ = load_model(source_model)
    assert not np.allclose(_weights(model, "tiny_block3_conv")[0], _weights(source, "tiny_block3_conv")[0])
    for name in ("tiny_block1_conv", "tiny_block2_conv"):
        np.testing.assert_array_equal(_weights(model, name)[0], _weights(source, name)[0])
    assert result.card["result"]["trainable_layers"] == ["tiny_block3_conv", "tiny_block3_bn", "embedding_dense",
                                                         "embedding_bn"]


def test_a_strong_pull_to_the_source_keeps_embeddings_closer(source_model, target, tmp_path):
    from edgeface.adaptation import adapt

    free = adapt(source_model, target, tmp_path / "free", anchor_weight=0.0, steps=15, batch_size=8, lr=3e-2)
    held = adapt(source_model, target, tmp_path / "held", anchor_weight=50.0, steps=15, batch_size=8, lr=3e-2)
    assert held.card["result"]["mean_cosine_to_start"] > free.card["result"]["mean_cosine_to_start"]


def test_kshot_split_is_seeded_and_identity_disjoint(target):
    from edgeface.adaptation import kshot_indices, kshot_split
    from edgeface.data import scan_folder

    dataset = scan_folder(target)
    adapt_people, held = kshot_split(dataset, seed=3)
    assert not set(adapt_people) & set(held) and sorted(adapt_people + held) == sorted(dataset.identities)
    assert len(held) == 4 and kshot_split(dataset, seed=3) == (adapt_people, held)
    assert len({tuple(kshot_split(dataset, seed=s)[1]) for s in range(6)}) > 1
    one, three = kshot_indices(dataset, adapt_people, 1, seed=3), kshot_indices(dataset, adapt_people, 3, seed=3)
    names = np.array(dataset.identities)[dataset.labels]
    assert sorted(names[three]) == sorted(adapt_people * 3) and set(one) <= set(three)


def test_kshot_evaluation_scores_held_out_people_only(source_model, target, tmp_path):
    from edgeface.adaptation import kshot_evaluation, kshot_markdown, write_kshot_report

    report = kshot_evaluation(source_model, target, shots=(1, 2), seeds=(0, 1), n_pairs=40, **SHORT)
    assert [row["k"] for row in report["summary"]] == [1, 2] and len(report["runs"]) == 4
    for run in report["runs"]:
        adapted_people = {path.split("/")[0] for path in run["adaptation_images"]}
        assert adapted_people == set(run["adaptation_people"]) and not adapted_people & set(run["held_out_people"])
        assert len(run["adaptation_images"]) == run["k"] * len(run["adaptation_people"])
        assert 0.0 <= run["after"]["accuracy"] <= 1.0
    by_seed = {}
    for run in report["runs"]:  # one source score per split, whatever k
        by_seed.setdefault(run["seed"], set()).add(run["before"]["accuracy"])
    assert all(len(scores) == 1 for scores in by_seed.values())
    assert "| 2 |" in kshot_markdown(report)
    json_path, md_path = write_kshot_report(report, tmp_path / "out")
    assert json.loads(json_path.read_text())["shots"] == [1, 2] and md_path.read_text().startswith("k-shot")


def test_k_above_the_images_per_person_is_a_clear_error(source_model, target):
    from edgeface.adaptation import kshot_evaluation

    with pytest.raises(ValueError, match=r"k=7 images per person, but 's\d+' has only 6"):
        kshot_evaluation(source_model, target, shots=(1, 7), seeds=(0,), **SHORT)
    with pytest.raises(ValueError, match="positive integers"):
        kshot_evaluation(source_model, target, shots=(0,), seeds=(0,), **SHORT)


def test_fewer_than_four_people_is_a_clear_error(source_model, tmp_path):
    from edgeface.adaptation import adapt, kshot_evaluation

    small = make_target(tmp_path / "three", identities=3)
    with pytest.raises(ValueError, match="holds 3 people; a k-shot evaluation needs at least 4"):
        kshot_evaluation(source_model, small, shots=(1,), seeds=(0,), **SHORT)
    alone = make_target(tmp_path / "one", identities=1)
    with pytest.raises(ValueError, match="adaptation needs at least 2 people"):
        adapt(source_model, alone, tmp_path / "out", **SHORT)


def test_bad_settings_are_rejected_before_any_work(source_model, target, tmp_path):
    from edgeface.adaptation import adapt

    with pytest.raises(ValueError, match="head must be one of arcface, cosface"):
        adapt(source_model, target, tmp_path / "out", head="softmax")
    with pytest.raises(ValueError, match="unfreeze must be 'all' or a number"):
        adapt(source_model, target, tmp_path / "out", unfreeze=-1)
    with pytest.raises(ValueError, match="unknown adaptation option"):
        adapt(source_model, target, tmp_path / "out", epochs=3)
    assert not (tmp_path / "out").exists()


def test_adapt_command_writes_the_model_and_the_kshot_report(source_model, target, tmp_path, edgeface):
    out = tmp_path / "cli"
    code, stdout, stderr = edgeface("adapt", source_model, "--data", target, "--out", out, "--steps", "3",
                                    "--batch-size", "8", "--kshot", "1,2", "--seeds", "1", "--pairs", "40")
    assert code == 0, stderr
    assert "| 1 |" in stdout and "adapted model:" in stdout
    assert (out / "model.keras").is_file() and (out / "kshot.json").is_file() and (out / "kshot.md").is_file()
    code, _, stderr = edgeface("adapt", source_model, "--data", target, "--out", out, "--kshot", "1,x")
    assert code == 2 and "--kshot takes" in stderr


@pytest.mark.slow
@pytest.mark.orl
def test_a_short_adaptation_on_orl(source_model, tmp_path, orl_dir):
    from edgeface.adaptation import kshot_evaluation

    # The tiny source model at 32x32: this checks the real data's path (92x112 grayscale PGM,
    # centre crops), not the accuracy (the README's table comes from the LFW-trained model).
    report = kshot_evaluation(source_model, orl_dir, shots=(2,), seeds=(0,), n_pairs=200, steps=10,
                              batch_size=16)
    run = report["runs"][0]
    assert report["dataset"]["identities"] == 40 and report["dataset"]["images"] == 400
    assert len(run["held_out_people"]) == 20 and len(run["adaptation_images"]) == 40
    assert run["pairs"] == 200 and not run["folds_share_people"]
    assert 0.5 <= run["after"]["accuracy"] <= 1.0


class _HeldPeople:
    """The three things ``_held_out_pairs`` asks of the held-out split."""

    def __init__(self, images_per_person):
        self.identities = {f"p{i}": [f"p{i}/{j}.png" for j in range(n)] for i, n in enumerate(images_per_person)}
        self.num_classes = len(self.identities)

    def counts(self):
        return [len(v) for v in self.identities.values()]

    def by_identity(self):
        return self.identities


def test_held_out_pairs_flags_shared_folds_and_passes_other_warnings_on(monkeypatch):
    import warnings

    import edgeface_runtime.metrics as metrics
    from edgeface._adapt import _held_out_pairs

    # Only one person with several photos: two folds cannot each have their own same-person pairs.
    _, few = _held_out_pairs(_HeldPeople([6] + [1] * 7), 40, seed=0)
    assert few["folds_share_people"]
    _, enough = _held_out_pairs(_HeldPeople([5] * 40), 40, seed=0)
    assert not enough["folds_share_people"]

    real = metrics.generate_pairs

    def noisy(*args, **kwargs):
        warnings.warn("an unrelated numeric warning", RuntimeWarning)
        return real(*args, **kwargs)

    monkeypatch.setattr(metrics, "generate_pairs", noisy)
    with pytest.warns(RuntimeWarning, match="unrelated"):
        _, info = _held_out_pairs(_HeldPeople([5] * 40), 40, seed=0)
    assert not info["folds_share_people"]


def test_a_face_source_model_with_the_adapter_head_can_be_adapted(target, tmp_path):
    """Models trained from sface/dlib_resnet have an identity-initialised dense layer and no batch-norm after it."""
    from edgeface._heads import build_face_models
    from edgeface._keras import keras
    from edgeface.adaptation import adapt
    from edgeface.training import load_model, save_model
    from edgeface_runtime import ModelMetadata, Preprocess

    image = keras.Input((32, 32, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, name="src_conv")(image)
    x = keras.layers.GlobalAveragePooling2D(name="src_pool")(x)
    source_embedding = keras.layers.Dense(16, name="src_fc")(x)  # stands in for a face source's own embedding
    models = build_face_models(image, source_embedding, num_classes=4, embedding_size=16, style="adapter", dropout=0.0)
    path = save_model(models.embedding, tmp_path / "source" / "model.keras",
                      ModelMetadata(preprocess=Preprocess(input_size=(32, 32), alignment="none"), embedding_size=16))
    result = adapt(path, target, tmp_path / "adapted", unfreeze=0, **SHORT)
    model, _ = load_model(result.model_path)
    assert result.card["result"]["trainable_layers"] == ["embedding_dense"]
    assert not np.allclose(_weights(model, "embedding_dense")[0], np.eye(16))


def test_kshot_scores_on_separate_test_people_from_a_folder_or_a_pairs_file(source_model, target, tmp_path):
    from edgeface.adaptation import kshot_evaluation, kshot_markdown

    others = make_target(tmp_path / "others", identities=4, per_identity=4, offset=60, prefix="t")
    report = kshot_evaluation(source_model, target, shots=(1,), seeds=(0,), n_pairs=20, test_data=others, **SHORT)
    run = report["runs"][0]
    assert len(run["adaptation_people"]) == 8  # every --data person is adapted on
    assert run["held_out_people"] == ["t1", "t2", "t3", "t4"] and report["test"]["root"] == str(others)
    assert "separate test data" in kshot_markdown(report)

    pairs = tmp_path / "pairs.txt"  # ORL-style names: t1/1.pgm
    pairs.write_text("1\t3\nt1\t1\t2\nt2\t1\t3\nt3\t2\t4\nt1\t1\tt2\t2\nt3\t1\tt4\t1\nt4\t2\tt2\t3\n")
    listed = kshot_evaluation(source_model, target, shots=(1,), seeds=(0, 1), test_data=others, test_pairs=pairs,
                              **SHORT)
    assert all(r["pairs"] == 6 and r["pairs_file"] == str(pairs) for r in listed["runs"])
    assert listed["runs"][0]["before"] == listed["runs"][1]["before"]  # the same pairs for every seed


def test_kshot_refuses_test_people_it_adapts_on(source_model, target, tmp_path):
    from edgeface.adaptation import kshot_evaluation

    with pytest.raises(ValueError, match="shares 8 people with the adaptation data"):
        kshot_evaluation(source_model, target, shots=(1,), seeds=(0,), test_data=target, **SHORT)
    with pytest.raises(ValueError, match="needs test_data"):
        kshot_evaluation(source_model, target, shots=(1,), seeds=(0,), test_pairs=tmp_path / "p.txt", **SHORT)


def test_an_adapted_model_is_calibrated_on_target_people_it_was_not_adapted_on(source_model, target, tmp_path):
    from edgeface.adaptation import adapt
    from edgeface.training import read_keras_metadata

    result = adapt(source_model, target, tmp_path / "held", calibrate_far=0.1, **SHORT)
    card = result.card
    assert card["data"]["identities"] == 6  # 2 of the 8 people held back for calibration
    calibration = card["calibration"]
    assert calibration["people"] == 2 and calibration["impostor_pairs"] == 36
    assert not set(calibration["identity_names"]) & set(card["data"]["identity_names"])
    stored = read_keras_metadata(result.model_path).thresholds
    assert list(stored) == [0.1] and stored[0.1] == pytest.approx(calibration["thresholds"][0]["threshold"])

    others = make_target(tmp_path / "others", identities=4, per_identity=3, offset=60, prefix="t")
    result = adapt(source_model, target, tmp_path / "other", calibrate_far=[0.01, 0.1], calibration_data=others,
                   **SHORT)
    assert result.card["data"]["identities"] == 8 and result.card["calibration"]["impostor_pairs"] == 54
    assert "warning" in result.card["calibration"]  # 54 pairs cannot back FAR 0.01
    assert sorted(read_keras_metadata(result.model_path).thresholds) == [0.01, 0.1]


def test_adapt_command_says_loudly_when_the_model_carries_no_threshold(source_model, target, tmp_path, edgeface):
    code, out, err = edgeface("adapt", source_model, "--data", target, "--out", tmp_path / "a", "--steps", "2",
                              "--batch-size", "8")
    assert code == 0 and "WARNING: NO THRESHOLD" in err
    code, out, err = edgeface("adapt", source_model, "--data", target, "--out", tmp_path / "b", "--steps", "2",
                              "--batch-size", "8", "--calibrate-far", "0.1")
    assert code == 0 and "NO THRESHOLD" not in err and "at FAR 0.1, calibrated on 36 different-person pairs" in out
    code, _, err = edgeface("adapt", source_model, "--data", target, "--out", tmp_path / "c", "--test-data", target)
    assert code == 2 and "add --kshot" in err
