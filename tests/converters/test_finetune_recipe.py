"""The fine-tuning recipe between a compression step's apply and strip (``_finetune``, ``_pruning``)."""

from __future__ import annotations

import numpy as np
import pytest

from converters_testkit import build_tiny


def _with_dropout():
    from edgeface.keras import keras
    from edgeface.layers import L2Normalize

    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, name="dense")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Dropout(0.5, name="drop")(x)
    return keras.Model(inputs, L2Normalize(name="embedding")(keras.layers.Dense(4, name="out")(x)))


def test_copy_for_finetuning_computes_the_inference_function_in_training_mode():
    from edgeface_converters._model import copy_model

    model = _with_dropout()
    x = np.random.default_rng(0).normal(size=(64, 8)).astype(np.float32)
    copy = copy_model(model)
    np.testing.assert_allclose(copy(x, training=True), model(x, training=False), atol=1e-6)
    assert model.get_layer("drop").rate == 0.5  # the source model is left as it was
    noisy = copy_model(model, dropout=True)
    assert not np.allclose(noisy(x, training=True), model(x, training=False), atol=1e-3)


def test_distillation_only_pulls_a_perturbed_model_back_to_the_source():
    from edgeface.keras import keras, tf
    from edgeface_converters import FineTuneData
    from edgeface_converters._finetune import FineTuneOptions, finetune
    from edgeface_converters._model import copy_model

    keras.utils.set_random_seed(0)
    teacher = build_tiny()
    student = copy_model(teacher)
    rng = np.random.default_rng(1)
    student.get_layer("b2_pw").set_weights([w + rng.normal(0, 0.05, w.shape).astype(np.float32)
                                            for w in student.get_layer("b2_pw").get_weights()])
    images = rng.uniform(-1, 1, size=(64, 32, 32, 3)).astype(np.float32)
    data = FineTuneData(tf.data.Dataset.from_tensor_slices((images, np.zeros(64, np.int32))).batch(16), 3)

    def cosine():
        return float(np.mean(np.sum(student(images).numpy() * teacher(images).numpy(), axis=1)))

    before = cosine()
    stats = finetune(student, data, teacher, FineTuneOptions(steps=40, learning_rate=1e-3))
    assert cosine() > before + 0.5 * (1 - before)  # at least half the gap closed
    assert stats["task_weight"] == 0.0 and stats["task_loss"] == [0.0, 0.0]  # no classification head built
    assert stats["distill_loss"][1] < stats["distill_loss"][0]


def test_finetune_weights_must_leave_something_to_learn():
    from edgeface_converters._finetune import FineTuneOptions

    with pytest.raises(ValueError, match="not both 0, got 0.0 and 0.0"):
        FineTuneOptions(distill_weight=0.0, task_weight=0.0)
    with pytest.raises(ValueError, match="must be >= 0"):
        FineTuneOptions(task_weight=-1.0)


def test_pruning_reaches_its_target_by_two_thirds_of_the_steps():
    from edgeface_converters._pruning import schedule

    for steps in (30, 300, 500):
        config = schedule(0.5, steps).get_config()["config"]
        assert config["final_sparsity"] == 0.5
        assert 0.6 * steps <= config["end_step"] <= 2 * steps / 3  # the last third recovers at the final mask
        assert config["end_step"] % config["frequency"] == 0  # reached on a mask update


def test_pruning_leaves_the_smallest_layers_dense_and_prunes_the_rest():
    from edgeface.keras import keras
    from edgeface.layers import L2Normalize
    from edgeface_converters._pruning import apply_pruning, layers_to_prune

    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(4, 3, name="stem")(inputs)  # 108 weights: 0.3 % of the prunable ones
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)  # never pruned (tfmot cannot)
    x = keras.layers.Conv2D(64, 1, name="pointwise")(x)  # 256 weights: 0.8 %, kept too (1.1 % together)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(512, name="wide")(x)  # 32,768 weights
    outputs = L2Normalize(name="embedding")(keras.layers.Dense(4, name="out")(x))  # 2,048 weights: 5.6 %
    model = keras.Model(inputs, outputs)
    assert layers_to_prune(model) == {"wide", "out"}
    assert layers_to_prune(model, keep_dense_share=0.0) == {"stem", "pointwise", "wide", "out"}
    pruned, _ = apply_pruning(model, 0.5, 30)
    wrapped = {layer.name for layer in pruned.layers if type(layer).__name__ == "PruneLowMagnitude"}
    assert wrapped == {"prune_low_magnitude_wide", "prune_low_magnitude_out"}


def test_block_mask_prunes_the_weakest_runs_of_input_channels_per_output_channel():
    from edgeface_converters._pruning import block_mask

    rng = np.random.default_rng(0)
    kernel = rng.normal(size=(1, 1, 20, 6))  # Keras layout (h, w, in, out); 20 inputs: blocks of 8, 8 and 4
    mask = block_mask(kernel, 0.5, 8)
    assert mask.shape == kernel.shape and mask.dtype == bool
    runs = np.moveaxis(mask[0, 0], 0, 1)  # (out, in)
    blocks = [runs[:, 0:8], runs[:, 8:16], runs[:, 16:20]]
    for block in blocks:  # each block is kept or pruned whole
        assert np.array_equal(block.all(axis=1), block.any(axis=1))
    kept = np.stack([block[:, 0] for block in blocks], axis=1)  # (out, 3 blocks)
    assert kept.sum() == 9  # half of the 18 blocks
    scores = np.stack([np.abs(np.moveaxis(kernel[0, 0], 0, 1)[:, sl]).mean(axis=1)
                       for sl in (slice(0, 8), slice(8, 16), slice(16, 20))], axis=1)
    assert scores[kept].min() > scores[~kept].max()  # by mean magnitude, the short block on its own count
    assert block_mask(kernel, 0.5, 1).sum() == kernel.size // 2  # block 1: each weight on its own


def test_block_pruning_keeps_its_masks_through_finetuning_updates():
    from edgeface.keras import keras
    from edgeface_converters._pruning import apply_pruning

    inputs = keras.Input((4, 4, 16))
    model = keras.Model(inputs, keras.layers.Conv2D(32, 1, name="pointwise")(inputs))
    pruned, callbacks = apply_pruning(model, 0.5, 12, block=4)
    assert pruned is model and not any(type(layer).__name__ == "PruneLowMagnitude" for layer in pruned.layers)
    (masks,) = callbacks
    kernel = model.get_layer("pointwise").kernel
    for step in range(12):
        masks.on_train_batch_begin(step)
        kernel.assign_add(np.full(kernel.shape, 0.01, np.float32))  # an optimizer step moves every weight
    masks.on_train_end()
    runs = np.moveaxis(kernel.numpy()[0, 0], 0, 1).reshape(32, 4, 4)  # (out, blocks, 4)
    zero = (runs == 0).all(axis=-1)
    assert zero.mean() == 0.5 and np.array_equal((runs == 0).any(axis=-1), zero)


def _two_layer_model():
    from edgeface._keras import keras

    inputs = keras.Input((4, 4, 16))
    x = keras.layers.Conv2D(32, 1, name="pointwise")(inputs)  # 512 weights
    x = keras.layers.Flatten()(x)
    return keras.Model(inputs, keras.layers.Dense(64, name="fc")(x))  # 32,768 weights


def test_layer_sparsity_patterns_give_named_layers_their_own_target():
    from edgeface_converters._pruning import sparsity_plan

    model = _two_layer_model()
    assert sparsity_plan(model, 0.5) == {"fc": 0.5}  # the pointwise conv is 1.5 %: kept dense
    assert sparsity_plan(model, 0.5, {"^fc$": 0.9}) == {"fc": 0.9}
    # naming a small layer prunes it all the same; the first matching pattern wins
    assert sparsity_plan(model, 0.5, ["point=0.3", "t=0.7"]) == {"fc": 0.5, "pointwise": 0.3}
    assert sparsity_plan(model, 0.5, "fc=0.9,pointwise=0.25") == {"fc": 0.9, "pointwise": 0.25}
    assert sparsity_plan(model, 0.5, {"fc": 0.0}) == {}  # 0 keeps it dense


@pytest.mark.parametrize("spec, message", [
    (["fcc=0.9"], "match no Conv2D/Dense layer of the model; its prunable layers are: pointwise, fc"),
    (["fc"], "is not PATTERN=FRACTION"),
    (["fc=1.0"], "must be a fraction in [0, 1)"),
    (["fc=most"], "got 'most'"),
    (["fc[=0.5"], "is not a regular expression"),
])
def test_layer_sparsity_mistakes_say_what_was_received(spec, message):
    from edgeface_converters._pruning import sparsity_plan

    with pytest.raises(ValueError) as info:
        sparsity_plan(_two_layer_model(), 0.5, spec)
    assert message in str(info.value)


@pytest.mark.parametrize("block", [1, 4])
def test_per_layer_targets_hold_after_finetuning(block):
    import tensorflow as tf

    from edgeface._keras import keras
    from edgeface_converters._data import FineTuneData
    from edgeface_converters._finetune import FineTuneOptions, finetune
    from edgeface_converters._pruning import apply_pruning, strip_pruning

    model = _two_layer_model()
    teacher = keras.Model(model.input, tf.math.l2_normalize(model.output, axis=1))
    x = np.random.default_rng(0).normal(size=(64, 4, 4, 16)).astype(np.float32)
    data = FineTuneData(tf.data.Dataset.from_tensor_slices((x, np.zeros(64, np.int32))).batch(16), num_classes=1)
    wrapped, callbacks = apply_pruning(keras.models.clone_model(model), 0.5, 20, block=block,
                                       layer_sparsity={"fc": 0.9, "pointwise": 0.25})
    finetune(wrapped, data, teacher, FineTuneOptions(steps=20, learning_rate=1e-3), callbacks)
    stripped = strip_pruning(wrapped)
    zeros = {name: float(np.mean(stripped.get_layer(name).kernel.numpy() == 0)) for name in ("fc", "pointwise")}
    assert abs(zeros["fc"] - 0.9) < 0.01 and abs(zeros["pointwise"] - 0.25) < 0.01, zeros


def test_finetuned_variants_are_held_to_the_source_auc_with_pairs_and_to_its_embedding_without():
    from edgeface_converters import VARIANTS, VariantResult
    from edgeface_converters._convert import source_problems

    pruned = VARIANTS["pruned-int8"]
    moved = {"mean": 0.83, "min": 0.6, "n": 100}  # far from the source's embedding (floor 0.90)

    def result(**fields):
        return VariantResult("pruned-int8", pruned.technique, agreement=moved, **fields)

    # Thresholds inherited from the source: its embedding must stay close.
    (problem,) = source_problems(pruned, result())
    assert "mean cosine 0.8300 to the source model" in problem and "pass calibration pairs" in problem
    # Thresholds recalibrated on pairs: verification quality is what must hold.
    assert source_problems(pruned, result(pairs_auc={"variant": 0.9364, "source": 0.9390})) == []
    (problem,) = source_problems(pruned, result(pairs_auc={"variant": 0.9200, "source": 0.9390}))
    assert "ROC AUC 0.9200 on the calibration pairs is 0.0190 below the source model's 0.9390" in problem
    assert source_problems(pruned, VariantResult("pruned-int8", "", agreement={"mean": 0.95, "min": 0.9})) == []


def test_prune_block_must_be_a_positive_whole_number():
    from edgeface_converters._pruning import check_block

    assert check_block(8) == 8
    for bad in (0, -4, 2.5, "8", True):
        with pytest.raises(ValueError, match="prune_block must be a whole number"):
            check_block(bad)


def test_each_compression_step_has_its_own_finetuning_defaults_and_explicit_values_win():
    from edgeface_converters._finetune import FineTuneOptions

    prune, qat = FineTuneOptions.for_step("prune"), FineTuneOptions.for_step("qat")
    assert (prune.steps, prune.learning_rate) == (1000, 1e-3)  # pruning needs the longer, faster recovery
    assert (qat.steps, qat.learning_rate) == (1500, 1e-4)
    given = FineTuneOptions.for_step("prune", 60, 1e-4, task_weight=0.5)
    assert (given.steps, given.learning_rate, given.task_weight) == (60, 1e-4, 0.5)
    with pytest.raises(ValueError, match="finetune_steps must be at least 1"):
        FineTuneOptions.for_step("cluster", 0)
