from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from training_helpers import make_dataset, synthetic_face, tiny_config

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO / "runtime"), str(REPO), env.get("PYTHONPATH", "")])
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from edgeface.training import train

    root = tmp_path_factory.mktemp("train")
    data = make_dataset(root / "faces", identities=6, per_identity=8)
    result = train(tiny_config(data, root / "run", epochs_frozen=1, epochs=3, lr=1e-2))
    return result


def test_train_writes_model_card_and_metadata(trained):
    assert trained.model_path == trained.out_dir / "model.keras" and trained.model_path.is_file()
    assert not [p for p in trained.out_dir.iterdir() if p.name.startswith(".")]  # no temp files left
    with zipfile.ZipFile(trained.model_path) as archive:
        meta = json.loads(archive.read("edgeface.json"))
    assert meta["embedding_size"] == 16 and meta["fingerprint"] == ""
    assert meta["preprocess"] == {"input_size": [32, 32], "color_order": "RGB", "mean": [127.5] * 3,
                                  "std": [127.5] * 3, "layout": "NHWC", "alignment": "none"}
    card = json.loads(trained.card_path.read_text())
    assert card["backbone"]["name"] == "tiny" and card["backbone"]["weights"] == {"source": "none", "sha256": None}
    assert card["preprocess"] == meta["preprocess"]
    assert card["hyperparameters"]["head"] == "arcface" and card["hyperparameters"]["seed"] == 1
    train_people, val_people = card["data"]["train"]["identity_names"], card["data"]["validation"]["identity_names"]
    assert len(train_people) + len(val_people) == 6 and set(train_people).isdisjoint(val_people)
    assert [row["stage"] for row in card["history"]] == ["frozen", "finetune", "finetune", "finetune"]
    assert all("val_accuracy" in row for row in card["history"]) and card["wall_time_seconds"] > 0
    assert card["metrics"]["best_validation"]["best"] is not None


def test_training_reduces_the_loss(trained):
    losses = [row["loss"] for row in trained.history]
    assert losses[-1] < losses[0]


def test_model_reloads_in_a_fresh_process_and_embeds(trained):
    from edgeface.data import to_model_input
    from edgeface.training import load_model

    crop = synthetic_face(0, 0, 32)
    model, metadata = load_model(trained.model_path)
    here = model.predict(to_model_input(crop[None], metadata.preprocess), verbose=0)[0]
    np.save(trained.out_dir / "crop.npy", crop)
    script = (
        "import sys, numpy as np\n"
        "from edgeface.training import load_model\n"
        "from edgeface.data import to_model_input\n"
        "model, md = load_model(sys.argv[1])\n"
        "crop = np.load(sys.argv[2])\n"
        "emb = model.predict(to_model_input(crop[None], md.preprocess), verbose=0)[0]\n"
        "print(md.embedding_size, md.preprocess.input_size, ' '.join(f'{v:.6f}' for v in emb))\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(trained.model_path), str(trained.out_dir / "crop.npy")],
                          capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    size, rest = done.stdout.strip().split(" ", 1)
    assert size == "16" and rest.startswith("(32, 32)")
    there = np.array([float(v) for v in rest.split(")", 1)[1].split()])
    np.testing.assert_allclose(there, here, atol=1e-5)
    assert abs(np.linalg.norm(there) - 1.0) < 1e-4


def test_no_partial_model_when_saving_fails(tmp_path, monkeypatch):
    from edgeface._keras import keras
    from edgeface.training import train

    data = make_dataset(tmp_path / "faces", identities=4, per_identity=4)

    def broken_save(self, path, *args, **kwargs):
        Path(path).write_bytes(b"PK partial")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        train(tiny_config(data, tmp_path / "run", epochs=1, steps_per_epoch=1, val_fraction=0.0))
    assert not (tmp_path / "run" / "model.keras").exists()
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.startswith(".")]


def test_resume_continues_an_interrupted_run(tmp_path):
    from edgeface._keras import keras
    from edgeface.training import train

    data = make_dataset(tmp_path / "faces", identities=4, per_identity=6)
    config = tiny_config(data, tmp_path / "run", epochs_frozen=1, epochs=3, steps_per_epoch=2)

    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 1:  # second fine-tuning epoch, after its checkpoint
                raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, callbacks=[Interrupt()])
    state = json.loads((tmp_path / "run" / "checkpoints" / "state.json").read_text())
    assert len(state["history"]) == 3 and not (tmp_path / "run" / "model.keras").exists()
    config.resume = True
    result = train(config)
    assert [(r["stage"], r["epoch"]) for r in result.history] == [("frozen", 1), ("finetune", 1), ("finetune", 2),
                                                                  ("finetune", 3)]
    assert result.model_path.is_file()


def test_resume_refuses_other_settings(tmp_path):
    from edgeface.training import train

    data = make_dataset(tmp_path / "faces", identities=3, per_identity=3)
    with pytest.raises(ValueError, match="nothing to resume"):
        train(tiny_config(data, tmp_path / "run", resume=True))
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "state.json").write_text(json.dumps({"fingerprint": {"backbone": "x"}}))
    with pytest.raises(ValueError, match="different .*backbone"):
        train(tiny_config(data, tmp_path / "run", resume=True))


def test_bad_inputs_are_clear_errors(tmp_path):
    from edgeface.training import TrainConfig, train

    one = make_dataset(tmp_path / "one", identities=1, per_identity=4)
    with pytest.raises(ValueError, match="at least 2 people"):
        train(tiny_config(one, tmp_path / "run1"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        train(tiny_config(tmp_path / "empty", tmp_path / "run2"))
    with pytest.raises(ValueError, match="did you mean 'mobilenet_v2_050'"):
        train(tiny_config(one, tmp_path / "run3", backbone="mobilenet_v2_05"))
    with pytest.raises(ValueError, match="no training data"):
        TrainConfig(backbone="tiny").validate()
    for out in ("run1", "run2", "run3"):
        assert not (tmp_path / out / "model.keras").exists()


def test_config_from_toml_recipe_and_unknown_keys(tmp_path):
    from edgeface.training import TrainConfig

    path = tmp_path / "train.toml"
    path.write_text('[train]\nrecipe = "seed-vgg16"\ndata = "faces"\nepochs = 4\ninput_size = 64\n')
    config = TrainConfig.from_toml(path, lr=0.01)
    assert ((config.backbone, config.head, config.embedding_style, config.optimizer)
            == ("vgg16", "softmax", "seed", "adam"))
    assert config.epochs == 4 and config.input_size == (64, 64) and config.lr == 0.01 and config.embedding_size == 1024
    path.write_text('data = "faces"\nbackbon = "tiny"\n')
    with pytest.raises(ValueError, match="did you mean 'backbone'"):
        TrainConfig.from_toml(path)
    path.write_text("data = [")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.from_toml(path)
    with pytest.raises(ValueError, match="unknown recipe"):
        TrainConfig(recipe="seed-vgg19")


def test_a_recipe_fills_only_the_options_the_caller_did_not_set(tmp_path):
    from edgeface.training import TrainConfig

    plain = TrainConfig.from_dict({"recipe": "lfw-mobilenet-v1-025", "data": "lfw"})
    assert (plain.align, plain.margin, plain.optimizer, plain.val_fraction) == (True, 0.35, "adam", 0.0)
    assert plain.augment == {"crop_scale": 0.92, "shift": 0.03}  # a default_factory field is filled too
    # Set explicitly, even to the default value: the caller wins.
    mine = TrainConfig.from_dict({"recipe": "lfw-mobilenet-v1-025", "align": False, "augment": {}, "margin": 0.3})
    assert (mine.align, mine.augment, mine.margin) == (False, {}, 0.3)
    path = tmp_path / "train.toml"
    path.write_text('recipe = "lfw-mobilenet-v1-025"\nalign = false\n[augment]\nflip = false\n')
    from_toml = TrainConfig.from_toml(path, epochs=2)
    assert ((from_toml.align, from_toml.augment, from_toml.epochs, from_toml.epochs_frozen)
            == (False, {"flip": False}, 2, 3))
    # Direct construction cannot tell "unset" from "the default": defaults are filled.
    assert TrainConfig(recipe="lfw-mobilenet-v1-025", align=False).align is True
    assert "given" not in TrainConfig.from_dict({"recipe": "seed-vgg16"}).to_dict()
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"given": ["align"]})


def test_load_model_refuses_keras3_and_other_files(tmp_path):
    from edgeface.training import load_model

    keras3 = tmp_path / "k3.keras"
    with zipfile.ZipFile(keras3, "w") as archive:
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.5.0"}))
        archive.writestr("config.json", "{}")
    with pytest.raises(ValueError, match="saved by Keras 3"):
        load_model(keras3)
    with pytest.raises(ValueError, match="not found"):
        load_model(tmp_path / "missing.keras")
    text = tmp_path / "model.keras"
    text.write_text("hello")
    with pytest.raises(ValueError, match="not a .keras model"):
        load_model(text)


def test_seed_recipe_style_with_a_softmax_head(tmp_path):
    from edgeface.training import load_model, train

    data = make_dataset(tmp_path / "faces", identities=4, per_identity=4)
    config = tiny_config(data, tmp_path / "run", embedding_style="seed", head="softmax", optimizer="adam",
                         embedding_size=24, epochs=1, steps_per_epoch=2, val_fraction=0.0)
    result = train(config)
    model, metadata = load_model(result.model_path)
    assert metadata.embedding_size == 24 and model.get_layer("embedding_dense").activation.__name__ == "relu"
    assert result.card["metrics"]["best_validation"]["best"] is None  # no validation split asked for


def test_gdc_head_trains_saves_and_converts_to_the_same_embedding(tmp_path):
    from edgeface.training import load_model, train
    from edgeface_converters import convert
    from edgeface_runtime import Embedder

    data = make_dataset(tmp_path / "faces", identities=4, per_identity=4)
    config = tiny_config(data, tmp_path / "run", embedding_style="gdc", epochs=1, steps_per_epoch=2, val_fraction=0.0)
    result = train(config)
    model, _ = load_model(result.model_path)
    assert model.get_layer("embedding_gdc").output.shape[1:3] == (1, 1)
    manifest = convert(result.model_path, tmp_path / "out", ["float32", "int8"], calibration=data, face_detector=None)
    assert [v.status for v in manifest.variants] == ["ok", "ok"]
    crop = np.random.default_rng(0).integers(0, 256, model.input_shape[1:], dtype=np.uint8)
    with Embedder.from_path(tmp_path / "out" / "float32.tflite") as embedder:
        on_device = embedder.embed(crop)
    in_keras = model.predict(embedder.to_input(crop).astype(np.float32), verbose=0)[0]
    assert float(on_device @ in_keras) > 0.999


@pytest.mark.parametrize("schedule,warmup", [("cosine", 0.0), ("cosine", 1.0), ("step", 0.0), ("constant", 0.0)])
def test_learning_rate_schedules(schedule, warmup):
    from edgeface._train import TrainConfig, _optimizer, _schedule

    config = TrainConfig(data="x", backbone="tiny", schedule=schedule, warmup_epochs=warmup)
    lr = _schedule(config, 0.1, epochs=4, steps_per_epoch=10)
    at = (lambda step: float(lr(step))) if callable(lr) else (lambda step: lr)
    assert at(39) <= at(10) <= 0.1 + 1e-6
    if schedule == "step":
        assert at(0) == pytest.approx(0.1) and at(25) == pytest.approx(0.01) and at(35) == pytest.approx(0.001)
    if warmup:
        assert at(0) < at(10) == pytest.approx(0.1, rel=1e-3)
    for name in ("adamw", "adam", "sgd"):
        config.optimizer = name
        assert _optimizer(config, lr) is not None
