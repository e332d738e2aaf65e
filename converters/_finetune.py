"""Fine-tuning between a compression step's apply and strip.

Loss = ``distill_weight`` × (1 − cosine to the source model's embedding of the same batch)
+ ``task_weight`` × the training half's classification loss (a head on ``[embedding,
labels]``, softmax cross-entropy on its logits). The source model is the teacher: every
gallery enrolled with it, the thresholds and the agreement check all expect its embedding, so
by default (``task_weight=0``) fine-tuning only pulls the compressed model back towards it.
A classification loss on the small fine-tuning sets a converter sees (LFW's training half:
two images per person on average, thousands of classes) moved the embedding instead:
pruned at 50 %, mean cosine 0.877 to the source after 500 steps, the task loss rising from
0.04 on the imprinted batches to 5.2 on the rest.

Distillation needs no identity labels, so with ``task_weight=0`` the batches mix the
fine-tuning images with the calibration crops (:func:`distillation_data`), half and half, and
without fine-tuning data the calibration crops alone are enough. The mix is what the agreement
gate needs: tuned on ORL's 400 grayscale photos alone, the demo's pruned model reproduced the
source at cosine 0.94 on them and 0.56 on the LFW crops it is checked on.

With ``task_weight > 0`` the head starts from the source model's class-mean embeddings
("imprinting"). BatchNorm layers stay frozen and Dropout is off (``_model.copy_model``), so
the student is trained on the same inference-mode function the teacher computes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ._data import FineTuneData

logger = logging.getLogger(__name__)


# (steps, learning rate) per compression step when the caller leaves them unset. Pruning needs more:
# at 50 % sparsity the demo's model kept mean cosine 0.862 to the source after 500 steps at 1e-4 and
# 0.912 after 1000 at 1e-3 (floor 0.90; the default model: 0.859 and 0.894 after 500 at 1e-4 and
# 1e-3). Clustering at 16 clusters after 500 steps at 1e-4 lost 0.013 of the demo's verification AUC
# (fine-tuned on ORL and the calibration crops; the gate allows 0.01), after 1500 it passed; QAT after
# clustering lost 0.0102 after 500 steps and passed after 1500 (docs/conversion.md).
# PReLU replacement ("leaky", _activations) starts far from the source (SFace: distillation loss
# 0.65) and needs a large rate: 600 steps at 3e-4 brought SFace back to 0.04 (98.8 % on LFW).
STEP_DEFAULTS: dict[str, tuple[int, float]] = {"prune": (1000, 1e-3), "cluster": (1500, 1e-4), "qat": (1500, 1e-4),
                                               "leaky": (600, 3e-4)}
# The steps that start at the source's function: a model's compression_learning_rate (a face
# source's gentle 1e-5) replaces their default rate; "leaky" must move far and keeps its own.
GENTLE_STEPS = ("prune", "cluster", "qat")


@dataclass(frozen=True)
class FineTuneOptions:
    steps: int = 500  # per compression step
    learning_rate: float = 1e-4
    distill_weight: float = 1.0
    task_weight: float = 0.0  # classification loss; 0: distillation from the source model only
    head_scale: float = 16.0  # cosine-softmax scale of the default (margin-free) head
    imprint_batches: int = 20

    @classmethod
    def for_step(cls, step: str, steps: int | None = None, learning_rate: float | None = None,
                 **options: Any) -> "FineTuneOptions":
        """Options for compression ``step``; ``steps``/``learning_rate`` left None take :data:`STEP_DEFAULTS`."""
        default_steps, default_rate = STEP_DEFAULTS[step]
        return cls(steps=default_steps if steps is None else int(steps),
                   learning_rate=default_rate if learning_rate is None else float(learning_rate), **options)

    def __post_init__(self) -> None:
        if int(self.steps) < 1:
            raise ValueError(f"finetune_steps must be at least 1, got {self.steps!r}")
        if not self.learning_rate > 0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if not (self.distill_weight >= 0 and self.task_weight >= 0) or self.distill_weight + self.task_weight <= 0:
            raise ValueError(f"distill_weight and task_weight must be >= 0 and not both 0, got "
                             f"{self.distill_weight!r} and {self.task_weight!r}")


def distillation_data(data: FineTuneData | None, crops: np.ndarray, *, batch_size: int = 32,
                      seed: int = 0) -> FineTuneData:
    """Label-free batches for distillation: ``data``'s images and the preprocessed ``crops`` (the
    calibration set, the device's domain), mixed half and half within each batch; ``crops``
    alone when ``data`` is None. Crops are flipped at random (a face mirrored is still a face
    the model must embed as the source does). Labels are zeros: the distillation loss reads none.
    """
    from edgeface.keras import tf

    if len(crops) < 2:
        raise ValueError(f"distillation needs at least 2 calibration crops, got {len(crops)}")
    own = (tf.data.Dataset.from_tensor_slices(np.asarray(crops, np.float32)).repeat()
           .shuffle(min(len(crops), 4096), seed=seed)
           .map(lambda x: (tf.image.random_flip_left_right(x, seed=seed), tf.constant(0, tf.int32))))
    if data is None:
        mixed, describe = own, {"source": "calibration crops (no fine-tuning data)", "crops": int(len(crops))}
    else:
        def unlabelled(x, y):
            if isinstance(x, (tuple, list)):  # the training half's ((images, labels), labels)
                x = x[0]
            return x, tf.zeros_like(tf.cast(y, tf.int32))

        images = data.dataset.map(unlabelled).unbatch().repeat()
        mixed = tf.data.Dataset.sample_from_datasets([images, own], weights=[0.5, 0.5], seed=seed)
        describe = {**data.describe, "mixed_with": f"{len(crops)} calibration crops, half of each batch"}
    dataset = mixed.batch(batch_size, drop_remainder=True).prefetch(2)
    return FineTuneData(dataset, num_classes=max(2, int(data.num_classes) if data is not None else 2),
                        describe=describe)


def _batches(data: FineTuneData, steps: int):
    def split(batch):
        x, y = batch
        if isinstance(x, (tuple, list)):  # the training half's ((images, labels), labels)
            x = x[0]
        return x, y

    for batch in data.dataset.repeat().take(steps):
        yield split(batch)


def class_centres(data: FineTuneData, teacher: Any, batches: int) -> np.ndarray:
    """(num_classes, dim) sums of the teacher's embeddings per class over ``batches`` batches."""
    sums = np.zeros((int(data.num_classes), int(teacher.output_shape[-1])), np.float64)
    for x, y in _batches(data, batches):
        np.add.at(sums, y.numpy().astype(int), teacher(x, training=False).numpy())
    return sums


def make_head(data: FineTuneData, centres: np.ndarray, options: FineTuneOptions) -> Any:
    """The classification head, its class centres imprinted from the teacher's embeddings."""
    from edgeface.keras import tf
    from edgeface.heads import classification_head

    head = data.head or classification_head("cosface", int(data.num_classes), scale=options.head_scale, margin=0.0)
    dim = centres.shape[1]
    head([tf.zeros((1, dim)), tf.zeros((1,), tf.int32)])  # build
    kernel = getattr(head, "kernel", None)
    if kernel is not None and tuple(kernel.shape) == (dim, int(data.num_classes)):
        norms = np.linalg.norm(centres, axis=1, keepdims=True)
        seen = norms[:, 0] > 0  # classes absent from the imprinting batches keep their initial centre
        imprinted = kernel.numpy()
        imprinted[:, seen] = (centres[seen] / norms[seen]).T
        kernel.assign(imprinted)
    return head


def finetune(model: Any, data: FineTuneData, teacher: Any, options: FineTuneOptions,
             callbacks: Sequence[Any] = (), centres: np.ndarray | None = None) -> dict[str, Any]:
    """Train ``model`` in place for ``options.steps`` batches; returns what happened, for the manifest.

    ``centres``: :func:`class_centres` of this data and teacher, when already computed.
    """
    from edgeface.keras import keras, tf, tune_allocator_for_training

    tune_allocator_for_training()
    start = time.perf_counter()
    head = None
    if options.task_weight > 0:
        if centres is None:
            centres = class_centres(data, teacher, options.imprint_batches)
        head = make_head(data, centres, options)
        logger.debug("head imprinted at %.2f s", time.perf_counter() - start)
    optimizer = keras.optimizers.Adam(options.learning_rate)
    distill_weight = tf.constant(float(options.distill_weight))
    task_weight = tf.constant(float(options.task_weight))
    variables = None

    @tf.function
    def train_step(x, y):
        with tf.GradientTape() as tape:
            embedding = model(x, training=True)  # training: pruning/clustering/QAT wrappers update
            if head is None:
                task = tf.constant(0.0)
            else:
                logits = head([embedding, y])
                task = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True))
            target = tf.stop_gradient(teacher(x, training=False))
            unit = tf.math.l2_normalize(embedding, axis=1)
            distill = tf.reduce_mean(1.0 - tf.reduce_sum(unit * target, axis=1))
            loss = task_weight * task + distill_weight * distill
        grads = tape.gradient(loss, variables)
        optimizer.apply_gradients(zip(grads, variables))
        return task, distill

    variables = model.trainable_variables + (head.trainable_variables if head is not None else [])
    for callback in callbacks:
        callback.set_model(model)
        callback.on_train_begin()
    history = []
    every = max(1, options.steps // 10)
    for step, (x, y) in enumerate(_batches(data, options.steps)):
        for callback in callbacks:
            callback.on_train_batch_begin(step)
        task, distill = train_step(x, tf.cast(y, tf.int32))
        history.append((float(task), float(distill)))
        if step == 0:
            logger.debug("first step (traced) done at %.2f s", time.perf_counter() - start)
        elif (step + 1) % every == 0:  # a big model fine-tunes for many minutes: say how far it is
            logger.info("fine-tuning: step %d of %d, distillation loss %.4f (mean of the last %d), %.2f s per step",
                        step + 1, options.steps, float(np.mean([h[1] for h in history[-every:]])), every,
                        (time.perf_counter() - start) / (step + 1))
        for callback in callbacks:
            callback.on_train_batch_end(step)
    for callback in callbacks:
        callback.on_epoch_end(0)  # UpdatePruningStep re-applies the masks here
        callback.on_train_end()
    if not history:
        raise ValueError("the fine-tuning dataset gave no batches")
    first, last = np.mean(history[:10], axis=0), np.mean(history[-10:], axis=0)
    stats = {"steps": len(history), "learning_rate": options.learning_rate, "distill_weight": options.distill_weight,
             "task_weight": options.task_weight, "task_loss": [round(float(first[0]), 4), round(float(last[0]), 4)],
             "distill_loss": [round(float(first[1]), 4), round(float(last[1]), 4)],
             "seconds": round(time.perf_counter() - start, 2)}
    logger.info("fine-tuned %d steps: task loss %.3f -> %.3f, distillation %.4f -> %.4f", len(history),
                first[0], last[0], first[1], last[1])
    return stats
