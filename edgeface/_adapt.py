"""Target-domain adaptation of a trained embedding model, and its k-shot evaluation.

``adapt`` fine-tunes a source model's adaptation layer (the embedding head's dense and
batch-norm layers; optionally the top backbone blocks) on a small folder-per-identity set from
the target domain (another camera, grayscale lab photos, ...). Three things keep the
embedding space usable for people the adaptation never sees, which is what verification
needs: the margin head's class centres start at the identities' mean source embeddings
(imprinting), so the first steps refine the space rather than rebuild it; a low learning rate
for few steps; and a penalty on the cosine distance between each adapted embedding and the
starting model's embedding of the same image. Optionally (``bn_stats="target"``) the
batch-norm statistics are first re-estimated on the target images (AdaBN), which needs no
labels.

``kshot_evaluation`` measures what adaptation buys: the target identities are split
(seeded, identity-disjoint) into adaptation and held-out people; the model is adapted with
``k`` images per adaptation person and scored on verification pairs of the held-out people
only, before and after, for each ``k`` and seed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np

from edgeface_runtime.metadata import ModelMetadata

from ._modelio import atomic_write_text
from ._options import OptionsLoading, option

logger = logging.getLogger(__name__)

ADAPT_HEADS = ("arcface", "cosface")
BN_STATS = ("source", "head", "target")
CARD_NAME = "adaptation_card.json"
MODEL_NAME = "model.keras"
KSHOT_JSON = "kshot.json"
KSHOT_MARKDOWN = "kshot.md"
MIN_KSHOT_IDENTITIES = 4  # two to adapt on (a margin head needs two classes), two held out (impostor pairs)
HEAD_LAYERS = ("embedding_dense", "embedding_bn")
NO_THRESHOLD_NOTE = ("NO THRESHOLD: the adapted model carries no calibrated threshold (the source's no longer hold), "
                     "so verify/identify refuse it until one is set: calibrate it on pairs of target people it was "
                     "not adapted on (`edgeface evaluate MODEL --pairs ... --calibrate-far 1e-3`), at conversion "
                     "(`edgeface convert --calibration-pairs`), or on the device (`edgeface calibrate -g GALLERY`)")


def _augment_flag(on: bool) -> dict[str, Any] | None:
    return {} if on else None  # --augment: Augment's defaults; --no-augment: none


# Most of adapt's flags show no default in --help (as before the flags were derived from here).
_flag = functools.partial(option, show_default=False)


@dataclass
class AdaptConfig(OptionsLoading):
    """Settings of one adaptation run (the defaults are the ones measured on ORL, see the README).

    ``steps`` optimisation steps of ``batch_size`` images at learning rate ``lr`` (cosine
    decay); loss = margin-head cross-entropy + ``anchor_weight`` × mean(1 − cos(adapted,
    starting embedding)). ``unfreeze``: how many top backbone blocks train besides the
    embedding head (0: the head alone; ``"all"``: the whole network; use a lower ``lr`` then).
    ``bn_stats="target"`` re-estimates every batch-norm layer's statistics on the target images
    before training; ``"head"`` the embedding's batch-norm only, which re-centres the embedding
    on the target domain. ``augment``: :class:`edgeface.data.Augment` options (``{}``: its
    defaults; ``None``: no augmentation).
    """

    _what: ClassVar[str] = "adaptation"
    _table: ClassVar[str | None] = "adapt"

    head: str = _flag("cosface", help="Margin head: arcface or cosface.")
    scale: float = _flag(32.0, help="Margin head scale.")
    margin: float = _flag(0.35, help="Margin head margin.")
    steps: int = _flag(100, help="Optimisation steps.")
    batch_size: int = _flag(32, help="Images per step.")
    lr: float = _flag(1e-3, help="Learning rate (cosine decay).")
    unfreeze: int | str = _flag(0, cli_type=str, help="Also train the top N backbone blocks, or 'all' (default 0: the "
                                                      "embedding head's dense and batch-norm layers only).")
    anchor_weight: float = _flag(1.0, help="Weight of the pull towards the source embeddings (1 − cosine); 0 disables "
                                           "it.")
    bn_stats: str = _flag("head", help="Batch-norm statistics: source, head (re-estimate the embedding's on the "
                                       "target images) or target (re-estimate all).")
    augment: dict | None = option(default_factory=dict, flags=("--augment/--no-augment",), cli_type=bool,
                                  cli_default=True, parse=_augment_flag,
                                  help="Flip, crop, brightness/contrast jitter.")
    seed: int = option(0, help="Random seed (with --kshot: the first split's).")
    max_unreadable: float = 0.05
    detector: str | None = _flag(None, cli_type=Path, help="BlazeFace .tflite for models trained with --align.")
    no_face: str = option(  # aligned models: images without a detected face are left out ("center": centre-cropped)
        "skip", help="Images in which the detector finds no face (aligned models): 'skip' leaves them out, as the "
                     "device refuses them (default); 'center' centre-crops them. Counted in the output and the cards.")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def validate(self) -> None:
        if self.head not in ADAPT_HEADS:
            raise ValueError(f"head must be one of {', '.join(ADAPT_HEADS)} (a margin head whose class centres "
                             f"are imprinted from the source embeddings); got {self.head!r}")
        if self.bn_stats not in BN_STATS:
            raise ValueError(f"bn_stats must be one of {', '.join(BN_STATS)}; got {self.bn_stats!r}")
        for name in ("steps", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.unfreeze, str) and self.unfreeze.isdigit():
            self.unfreeze = int(self.unfreeze)
        count = isinstance(self.unfreeze, (int, np.integer)) and not isinstance(self.unfreeze, bool)
        if self.unfreeze != "all" and not (count and int(self.unfreeze) >= 0):
            raise ValueError(f"unfreeze must be 'all' or a number of top backbone blocks >= 0, got {self.unfreeze!r}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr!r}")
        if not self.scale > 0:
            raise ValueError(f"scale must be positive, got {self.scale!r}")
        if not 0 <= self.margin < 1:
            raise ValueError(f"margin must be in [0, 1), got {self.margin!r}")
        if self.no_face not in ("skip", "center"):
            raise ValueError(f"no_face must be 'skip' (leave images without a detected face out, as the device "
                             f"refuses them) or 'center' (centre-crop them); got {self.no_face!r}")
        if not self.anchor_weight >= 0:
            raise ValueError(f"anchor_weight must be >= 0 (0 disables the pull towards the source), "
                             f"got {self.anchor_weight!r}")
        if self.augment is not None:
            from ._data import Augment

            Augment.from_dict(self.augment)


@dataclass
class AdaptResult:
    out_dir: Path
    model_path: Path
    card_path: Path
    card: dict[str, Any]


# --------------------------------------------------------------------------- pieces

@dataclass
class _Source:
    path: Path
    model: Any
    metadata: ModelMetadata
    sha256: str
    weights: list


def _sha256(path: Path) -> str:
    from edgeface_runtime.download import sha256_of

    return sha256_of(path)


def _load_source(model_path: str | Path) -> _Source:
    from ._modelio import load_model

    path = Path(model_path)
    model, metadata = load_model(path)
    if metadata is None:
        raise ValueError(f"{path} carries no edgeface metadata (edgeface.json), so its preprocessing is unknown; "
                         "adapt a model saved by `edgeface train` (or `edgeface adapt`)")
    # The dense layer is what adaptation tunes; the batch-norm after it is absent from the adapter head
    # of face-source models (sface, dlib_resnet), whose dense layer starts as the identity.
    if "embedding_dense" not in {layer.name for layer in model.layers}:
        raise ValueError(f"{path} has no embedding_dense layer: adaptation tunes the embedding head of models made "
                         "by `edgeface train`")
    return _Source(path, model, metadata, _sha256(path), model.get_weights())


def _decode(data_dir: str | Path, metadata: ModelMetadata, config: AdaptConfig):
    """``(dataset, crops, no_face summary or None)``: images without a detected face are left out
    (``config.no_face="skip"``) or centre-cropped ("center"), and counted either way."""
    from ._data import CropMaker, decode_dataset, no_face_summary, scan_folder

    dataset = scan_folder(data_dir)
    preprocess = metadata.preprocess
    crop = CropMaker(dataset.root, preprocess.input_size, align=preprocess.alignment,
                     detector=config.detector, no_face=config.no_face)
    kept, crops = decode_dataset(dataset, crop, max_unreadable=config.max_unreadable)
    return kept, crops, no_face_summary(crop, len(dataset))


def _fresh_copy(source: _Source):
    from ._keras import keras

    model = keras.models.clone_model(source.model)
    model.set_weights(source.weights)
    return model


def _embed(model, crops: np.ndarray, metadata: ModelMetadata) -> np.ndarray:
    from ._data import embed_crops

    return embed_crops(model, crops, metadata.preprocess, batch_size=128)


def _backbone_layers(model) -> list:
    from ._keras import keras

    return [layer for layer in model.layers
            if not isinstance(layer, keras.layers.InputLayer) and not layer.name.startswith("embedding")]


def _set_trainable(model, metadata: ModelMetadata, unfreeze: int | str) -> list[str]:
    """Freeze everything but the embedding head and the top ``unfreeze`` blocks; return the trainable layers' names."""
    chosen = {name for name in HEAD_LAYERS}
    if unfreeze == "all":
        chosen |= {layer.name for layer in _backbone_layers(model)}
    elif unfreeze:
        from ._backbones import get_backbone_spec, top_block_layers

        backbone = (metadata.extra or {}).get("backbone")
        if not backbone:
            raise ValueError("unfreeze needs the backbone's name (metadata extra 'backbone', written by `edgeface "
                             "train`) to find its blocks; this model has none: use unfreeze=0")
        spec = get_backbone_spec(str(backbone))
        chosen |= {layer.name for layer in top_block_layers(spec, _backbone_layers(model), int(unfreeze))}
    for layer in model.layers:
        layer.trainable = layer.name in chosen
    return [layer.name for layer in model.layers if layer.trainable and layer.weights]


def _reestimate_batchnorm(model, crops: np.ndarray, metadata: ModelMetadata, *, head_only: bool = False,
                          batch_size: int = 128) -> int:
    """AdaBN: replace each batch-norm layer's moving statistics by its inputs' moments on ``crops``.

    Layer by layer, in order, so each layer sees inputs normalised by the already updated ones.
    """
    from ._data import to_model_input
    from ._keras import keras

    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)
              and (layer.name == "embedding_bn" or not head_only)]
    for layer in layers:
        probe = keras.Model(model.input, layer.input)
        total, total_sq, count = 0.0, 0.0, 0
        for start in range(0, len(crops), batch_size):
            x = np.asarray(probe(to_model_input(crops[start:start + batch_size], metadata.preprocess), training=False),
                           np.float64)
            x = x.reshape(-1, x.shape[-1])
            total = total + x.sum(axis=0)
            total_sq = total_sq + np.square(x).sum(axis=0)
            count += x.shape[0]
        mean = np.asarray(total / count)  # per channel (total becomes an array with the first batch)
        var = np.maximum(total_sq / count - np.square(mean), 0.0)
        layer.moving_mean.assign(mean.astype(np.float32))
        layer.moving_variance.assign(var.astype(np.float32))
    return len(layers)


def _imprinted_centres(embeddings: np.ndarray, labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Unit-length mean embedding of each identity, (dim, num_classes): the margin head's starting weights."""
    centres = np.stack([embeddings[labels == c].mean(axis=0) for c in range(num_classes)], axis=1)
    return (centres / np.maximum(np.linalg.norm(centres, axis=0, keepdims=True), 1e-12)).astype(np.float32)


def _index_batches(labels: np.ndarray, batch_size: int, seed: int):
    """Endless batches of indices: a fresh permutation per pass (a batch may span two passes)."""
    rng = np.random.default_rng(seed)
    buffer = np.zeros(0, np.int64)
    while True:
        while len(buffer) < batch_size:
            buffer = np.concatenate([buffer, rng.permutation(len(labels))])
        yield buffer[:batch_size]
        buffer = buffer[batch_size:]


def _fine_tune(model, metadata: ModelMetadata, crops: np.ndarray, labels: np.ndarray, config: AdaptConfig
               ) -> dict[str, Any]:
    """Adapt ``model`` in place on ``crops``/``labels`` (0..n-1); return what happened (for the card)."""
    from ._data import Augment, augment_batch, to_model_input
    from ._heads import classification_head
    from ._keras import keras, tf

    labels = np.asarray(labels, np.int32)
    num_classes = int(labels.max()) + 1
    if num_classes < 2:
        raise ValueError(f"adaptation needs at least 2 people (a margin head separates identities); got {num_classes}")
    keras.utils.set_random_seed(config.seed)
    record: dict[str, Any] = {"identities": num_classes, "images": int(len(labels))}
    if config.bn_stats != "source":
        record["batchnorm_layers_reestimated"] = _reestimate_batchnorm(model, crops, metadata,
                                                                       head_only=config.bn_stats == "head")
    # The anchors and the imprinted centres come from the starting model (after AdaBN, if any).
    anchors = _embed(model, crops, metadata)
    record["trainable_layers"] = _set_trainable(model, metadata, config.unfreeze)

    head = classification_head(config.head, num_classes, scale=config.scale, margin=config.margin)
    head.build((None, anchors.shape[1]))
    head.kernel.assign(_imprinted_centres(anchors, labels, num_classes))
    variables = model.trainable_variables + head.trainable_variables
    schedule = keras.optimizers.schedules.CosineDecay(config.lr, config.steps, alpha=0.01)
    optimizer = keras.optimizers.Adam(learning_rate=schedule)
    augment = Augment.from_dict(config.augment) if config.augment is not None else None
    preprocess = metadata.preprocess
    crops_t, labels_t, anchors_t = tf.constant(crops), tf.constant(labels), tf.constant(anchors)
    weight = tf.constant(float(config.anchor_weight))

    @tf.function(reduce_retracing=True)
    def step(indices):
        images = tf.gather(crops_t, indices)
        x = augment_batch(images, augment) if augment is not None else tf.cast(images, tf.float32)
        x = to_model_input(x, preprocess)
        y = tf.gather(labels_t, indices)
        anchor = tf.gather(anchors_t, indices)
        with tf.GradientTape() as tape:
            # Inference mode throughout: batch-norm keeps its (source or target) statistics, which
            # a few small batches would only make noisy; dropout stays off. Gamma/beta still train.
            emb = model(x, training=False)
            logits = head([emb, y])
            ce = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits))
            drift = tf.reduce_mean(1.0 - tf.reduce_sum(emb * anchor, axis=1))
            loss = ce + weight * drift
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss, ce, drift

    history = []
    every = max(1, config.steps // 10)
    batches = _index_batches(labels, config.batch_size, config.seed)
    for i in range(config.steps):
        loss, ce, drift = step(tf.constant(next(batches)))
        if (i + 1) % every == 0 or i == 0 or i + 1 == config.steps:
            history.append({"step": i + 1, "loss": float(loss), "cross_entropy": float(ce), "drift": float(drift)})
    for layer in model.layers:  # leave the model as `edgeface train` leaves it: every layer trainable
        layer.trainable = True
    final = _embed(model, crops, metadata)
    record["history"] = history
    record["mean_cosine_to_start"] = float(np.mean(np.sum(final * anchors, axis=1)))
    logger.info("adapted on %d images of %d people in %d steps: loss %.4f → %.4f, mean cosine to the start %.3f",
                len(labels), num_classes, config.steps, history[0]["loss"], history[-1]["loss"],
                record["mean_cosine_to_start"])
    return record


# --------------------------------------------------------------------------- adapt

def _config(config: AdaptConfig | Mapping[str, Any] | None, overrides: Mapping[str, Any]) -> AdaptConfig:
    if config is None:
        config = AdaptConfig()
    elif isinstance(config, Mapping):
        config = AdaptConfig.from_dict(config)
    if overrides:
        config = AdaptConfig.from_dict({**config.to_dict(), **overrides})
    config.validate()
    return config


def adapt(model_path: str | Path, data_dir: str | Path, out: str | Path = "runs/adapt",
          config: AdaptConfig | Mapping[str, Any] | None = None, *,
          calibrate_far: float | Sequence[float] | None = None,
          calibration_data: str | Path | None = None, calibration_fraction: float = 0.25,
          **overrides: Any) -> AdaptResult:
    """Adapt ``model_path`` (a ``model.keras`` from ``edgeface train``) to the people in ``data_dir``.

    ``data_dir`` holds one sub-folder of images per person (grayscale images become three
    channels). Writes ``out/model.keras`` (metadata inside: the source's preprocessing;
    ``extra`` records the source's sha256 and the settings) and ``out/adaptation_card.json``.
    ``overrides`` replace fields of ``config``.

    Thresholds: the source's no longer hold. With ``calibrate_far`` (one FAR or several) the
    adapted model is calibrated on the different-person pairs of target people it was *not*
    adapted on: ``calibration_data`` (a folder of other target people), else a seeded
    ``calibration_fraction`` of ``data_dir``'s people (at least 2) held back from adaptation.
    Without it the model carries no threshold, and the card says so (``note``).
    """
    from ._data import NO_FACE_REASON
    from ._modelio import save_model

    config = _config(config, overrides)
    fars = _calibration_fars(calibrate_far)
    started = time.monotonic()
    source = _load_source(model_path)
    dataset, crops, no_face = _decode(data_dir, source.metadata, config)
    if dataset.num_classes < 2:
        raise ValueError(f"{data_dir} holds {dataset.num_classes} person; adaptation needs at least 2 people "
                         "(one sub-folder of images per person)")
    calibration_set: tuple[Any, np.ndarray] | None = None  # (held-out FaceDataset, its crops)
    if fars and calibration_data is not None:
        calibration_set = _decode(calibration_data, source.metadata, config)[:2]
        shared = sorted(set(calibration_set[0].identities) & set(dataset.identities))
        if shared:
            raise ValueError(f"calibration_data shares people with data_dir ({', '.join(shared[:5])}); calibrate on "
                             "target people the model is not adapted on")
    elif fars:
        dataset, crops, calibration_set = _hold_back(dataset, crops, calibration_fraction, config.seed)
    model = source.model  # adapted in place: nothing else uses it
    record = _fine_tune(model, source.metadata, crops, dataset.labels, config)
    thresholds: dict[float, float] = {}
    calibration: dict[str, Any] | None = None
    if fars and calibration_set is not None:  # calibration_set is set whenever fars is
        thresholds, calibration = _calibrate_adapted(model, source.metadata, *calibration_set, fars,
                                                     "calibration_data" if calibration_data is not None
                                                     else f"{len(calibration_set[0].identities)} people of the "
                                                          "data held back from adaptation")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = {k: v for k, v in config.to_dict().items() if k not in ("max_unreadable", "detector", "no_face")}
    source_record = {"path": str(source.path), "sha256": source.sha256, "name": source.metadata.name}
    metadata = dataclasses.replace(
        source.metadata, thresholds=thresholds, fingerprint="", name=f"{source.metadata.name or 'model'}-adapted",
        extra={**dict(source.metadata.extra or {}), "adaptation_card": CARD_NAME,
               "adapted_from": source_record, "adaptation": settings})
    model_path_out = save_model(model, out_dir / MODEL_NAME, metadata)
    card = {
        "format": "edgeface-adaptation-card/1",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "source": {**source_record, "metadata": source.metadata.to_dict()},
        "data": {**dataset.describe(), "identity_names": dataset.identities,
                 "unreadable_files": [{"path": p, "reason": r} for p, r in dataset.skipped
                                      if r != NO_FACE_REASON][:100],
                 "no_face": no_face},
        "settings": settings,
        "result": record,
        "thresholds": {str(far): value for far, value in thresholds.items()},
        "calibration": calibration,
        "note": NO_THRESHOLD_NOTE if not thresholds else (
            "thresholds calibrated on different-person pairs of target people the model was not adapted on "
            "(see calibration)"),
        "wall_time_seconds": round(time.monotonic() - started, 1),
    }
    card_path = atomic_write_text(out_dir / CARD_NAME, json.dumps(card, indent=1, default=_json_default))
    return AdaptResult(out_dir, model_path_out, card_path, card)


def _calibration_fars(value: float | Sequence[float] | None) -> list[float]:
    if value is None:
        return []
    values = [value] if isinstance(value, (int, float)) else list(value)
    fars = [float(far) for far in values]
    bad = [far for far in fars if not 0.0 < far < 1.0]
    if bad:
        raise ValueError(f"calibrate_far must be false-accept rates in (0, 1) such as 1e-3, got {bad}")
    return sorted(set(fars))


def _hold_back(dataset, crops: np.ndarray, fraction: float, seed: int):
    """Split off a seeded ``fraction`` of the people (at least 2) for calibration.

    Returns ``(rest, rest crops, (held, held crops))``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"calibration_fraction must be in (0, 1), got {fraction!r}")
    n = dataset.num_classes
    held = min(max(2, int(round(fraction * n))), n - 2)
    if held < 2:
        raise ValueError(f"{dataset.root} holds {n} people: calibrating the adapted model needs 2 of them held back "
                         "and 2 to adapt on; add people, or pass calibration_data (--calibration-data)")
    order = np.random.default_rng([seed, 13]).permutation(n)
    held_names = sorted(dataset.identities[i] for i in order[:held])
    rows = np.isin(np.array(dataset.identities)[dataset.labels], held_names)
    rest = dataset.select(np.flatnonzero(~rows))
    held_set = dataset.select(np.flatnonzero(rows))
    return rest, crops[~rows], (held_set, crops[rows])


def _calibrate_adapted(model, metadata: ModelMetadata, held, held_crops: np.ndarray, fars: Sequence[float],
                       where: str) -> tuple[dict[float, float], dict[str, Any]]:
    """Thresholds of the adapted model at ``fars`` on every different-person pair of ``held``."""
    from edgeface_runtime import cross_person_scores
    from edgeface_runtime.metrics import calibrate_threshold

    if held.num_classes < 2:
        raise ValueError(f"calibrating the adapted model needs 2+ people in the calibration set, "
                         f"got {held.num_classes}")
    labels = [held.identities[i] for i in held.labels]
    impostors, sampled = cross_person_scores(_embed(model, held_crops, metadata), labels)
    n = int(impostors.size)
    thresholds = {far: float(calibrate_threshold(impostors, far)) for far in fars}
    weak = [far for far in fars if far < 3.0 / n]
    record = {"people": held.num_classes, "images": len(held), "identity_names": list(held.identities),
              "source": where, "impostor_pairs": n, "sampled": sampled, "min_supported_far": 3.0 / n,
              "thresholds": [{"far": far, "threshold": t} for far, t in thresholds.items()]}
    if weak:
        record["warning"] = (f"only {n} impostor pairs back FAR {', '.join(f'{f:g}' for f in weak)}: at least "
                             f"{int(np.ceil(3.0 / min(weak)))} are needed (rule of three); calibrate on more people")
        logger.warning("adapted model: %s", record["warning"])
    return thresholds, record


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, (Path, tuple)):
        return str(value) if isinstance(value, Path) else list(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


# --------------------------------------------------------------------------- k-shot evaluation

def _check_shots(shots: Sequence[int]) -> list[int]:
    values = []
    for k in shots:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"shots must be positive integers (images per adaptation person), got {list(shots)!r}")
        values.append(int(k))
    if not values:
        raise ValueError("give at least one k (e.g. shots=(1, 3, 5))")
    return sorted(set(values))


def check_kshot_dataset(dataset, shots: Sequence[int]) -> None:
    """Raise ValueError unless ``dataset`` supports a k-shot evaluation with every k in ``shots``."""
    shots = _check_shots(shots)
    if dataset.num_classes < MIN_KSHOT_IDENTITIES:
        raise ValueError(f"{dataset.root} holds {dataset.num_classes} people; a k-shot evaluation needs at least "
                         f"{MIN_KSHOT_IDENTITIES} (at least 2 to adapt on and 2 held out for verification pairs)")
    counts = dataset.counts()
    fewest = int(np.argmin(counts))
    if max(shots) > counts[fewest]:
        raise ValueError(f"k={max(shots)} images per person, but {dataset.identities[fewest]!r} has only "
                         f"{int(counts[fewest])} (the fewest in {dataset.root}); choose k <= {int(counts[fewest])} or "
                         "leave that person out")
    if int(np.count_nonzero(counts >= 2)) < 2:
        raise ValueError("the held-out people need two images each for same-person pairs; fewer than 2 people have 2+")


def kshot_split(dataset, seed: int, held_out_fraction: float = 0.5) -> tuple[list[str], list[str]]:
    """Seeded, identity-disjoint ``(adaptation people, held-out people)``: at least 2 of each.

    Only people with 2+ images can be held out (they must form same-person pairs).
    """
    if not 0.0 < held_out_fraction < 1.0:
        raise ValueError(f"held_out_fraction must be in (0, 1), got {held_out_fraction!r}")
    if dataset.num_classes < MIN_KSHOT_IDENTITIES:
        raise ValueError(f"a k-shot split needs at least {MIN_KSHOT_IDENTITIES} people, got {dataset.num_classes}")
    counts = dataset.counts()
    order = np.random.default_rng([seed, 7]).permutation(dataset.num_classes)
    eligible = [int(i) for i in order if counts[i] >= 2]
    n_held = int(round(held_out_fraction * dataset.num_classes))
    n_held = min(max(2, n_held), dataset.num_classes - 2, len(eligible))
    held = set(eligible[:n_held])
    adapt_names = [name for i, name in enumerate(dataset.identities) if i not in held]
    held_names = [name for i, name in enumerate(dataset.identities) if i in held]
    return adapt_names, held_names


def kshot_indices(dataset, people: Sequence[str], k: int, seed: int) -> np.ndarray:
    """Indices of ``k`` images per person of ``people`` (seeded; the k=1 images are among the k=3 ones)."""
    index = {name: i for i, name in enumerate(dataset.identities)}
    chosen = []
    for name in people:
        members = np.flatnonzero(dataset.labels == index[name])
        if len(members) < k:
            raise ValueError(f"k={k} images per person, but {name!r} has only {len(members)}")
        rng = np.random.default_rng([seed, 11, index[name]])
        chosen.extend(members[rng.permutation(len(members))[:k]].tolist())
    return np.array(sorted(chosen), np.int64)


def _held_out_pairs(held, n_pairs: int, seed: int) -> tuple[list, dict[str, Any]]:
    """Balanced, seeded pairs of the held-out people (identity-disjoint folds where possible)."""
    from edgeface_runtime.metrics import FoldsSharePeopleWarning, generate_pairs

    counts = held.counts()
    same_available = int(sum(c * (c - 1) // 2 for c in counts))
    folds = int(max(2, min(10, held.num_classes // 4)))
    half = max(folds, min(n_pairs // 2, same_available // 2))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", FoldsSharePeopleWarning)
        pairs = generate_pairs(held.by_identity(), 2 * half, seed, folds=folds)
    shared = any(issubclass(w.category, FoldsSharePeopleWarning) for w in caught)
    for other in caught:  # anything else is not ours to swallow
        if not issubclass(other.category, FoldsSharePeopleWarning):
            warnings.warn_explicit(other.message, other.category, other.filename, other.lineno)
    return pairs, {"pairs": len(pairs), "folds": folds, "folds_share_people": shared}


def _verification(model, crops: np.ndarray, paths: Sequence[str], pairs: Sequence[Any], metadata: ModelMetadata
                  ) -> dict[str, Any]:
    from edgeface_runtime.metrics import verification_report

    from ._evaluate import pair_scores

    _, scores, labels, folds = pair_scores(pairs, paths, _embed(model, crops, metadata))
    # A one-fold pairs file (--test-pairs) gets 10 folds cut from it for the threshold choice.
    cut = max(2, min(10, len(scores) // 2))
    report = verification_report(scores, labels, folds=folds if len(np.unique(folds)) > 1 else cut, fars=(1e-2,))
    return {"accuracy": report["accuracy"]["mean"], "accuracy_std_over_folds": report["accuracy"]["std"],
            "auc": report["auc"], "eer": report["eer"]["eer"], "tar_at_far_1e-2": report["tar_at_far"][0]["tar"]}


def kshot_evaluation(model_path: str | Path, data_dir: str | Path, shots: Sequence[int] = (1, 3, 5),
                     seeds: Sequence[int] = (0, 1, 2), config: AdaptConfig | Mapping[str, Any] | None = None, *,
                     held_out_fraction: float = 0.5, n_pairs: int = 600, test_data: str | Path | None = None,
                     test_pairs: str | Path | None = None, **overrides: Any) -> dict[str, Any]:
    """Verification on held-out target people before vs after k-shot adaptation, per k and seed.

    For each seed: split the people (:func:`kshot_split`), draw balanced pairs of the held-out
    people (``edgeface_runtime.metrics.generate_pairs``, seeded), score the source model on
    them, then for each k adapt a fresh copy of the source on k images per adaptation person
    (:func:`kshot_indices`) and score it on the same pairs. Accuracy is k-fold (threshold
    chosen on the other folds). ``summary`` gives mean ± std over seeds. Each seed sets the
    split, the pairs, the k images and the adaptation's own randomness (``config.seed`` is not used).

    With ``test_data`` (a folder of *other* target people, one sub-folder each) every person of
    ``data_dir`` is adapted on and the scores come from ``test_data`` instead: pairs drawn from
    it per seed, or the pairs of ``test_pairs`` (an LFW-format pairs file over ``test_data``'s
    images, its folds as they are). People in both folders are refused.
    """
    config = _config(config, overrides)
    shots = _check_shots(shots)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ValueError("give at least one seed")
    started = time.monotonic()
    source = _load_source(model_path)
    dataset, crops, no_face = _decode(data_dir, source.metadata, config)
    test = _test_set(test_data, test_pairs, dataset, shots, source.metadata, config)
    if test is None:
        check_kshot_dataset(dataset, shots)
    runs = []
    for seed in seeds:
        if test is None:
            adapt_people, held_people = kshot_split(dataset, seed, held_out_fraction)
            held = dataset.subset(held_people)
            held_rows = np.flatnonzero(np.isin(np.array(dataset.identities)[dataset.labels], held_people))
            held_crops, held_paths = crops[held_rows], [dataset.paths[i] for i in held_rows]
            pairs, pair_info = _held_out_pairs(held, n_pairs, seed)
        else:
            adapt_people, held_people = list(dataset.identities), list(test["dataset"].identities)
            held_crops, held_paths = test["crops"], test["dataset"].paths
            pairs, pair_info = test["pairs"] or _held_out_pairs(test["dataset"], n_pairs, seed)
        before = _verification(source.model, held_crops, held_paths, pairs, source.metadata)
        for k in shots:
            chosen = kshot_indices(dataset, adapt_people, k, seed)
            subset = dataset.select(chosen)
            model = _fresh_copy(source)
            record = _fine_tune(model, source.metadata, crops[chosen], subset.labels,
                                dataclasses.replace(config, seed=seed))
            after = _verification(model, held_crops, held_paths, pairs, source.metadata)
            runs.append({"seed": seed, "k": k, "adaptation_people": adapt_people, "held_out_people": held_people,
                         "adaptation_images": [dataset.paths[i] for i in chosen], **pair_info,
                         "before": before, "after": after,
                         "mean_cosine_to_start": record["mean_cosine_to_start"]})
            logger.info("seed %d, k=%d: held-out accuracy %.4f → %.4f", seed, k, before["accuracy"],
                        after["accuracy"])
    return {
        "format": "edgeface-kshot/1",
        "model": str(source.path), "model_sha256": source.sha256, "data": str(dataset.root),
        "dataset": dataset.describe(), "no_face": no_face,
        "test": None if test is None else test["describe"], "test_no_face": None if test is None else test["no_face"],
        "shots": shots, "seeds": seeds, "held_out_fraction": held_out_fraction,
        "settings": {k: v for k, v in config.to_dict().items() if k not in ("max_unreadable", "detector", "no_face")},
        "summary": _summarise(runs, shots), "runs": runs,
        "wall_time_seconds": round(time.monotonic() - started, 1),
    }


def _test_set(test_data, test_pairs, dataset, shots: Sequence[int], metadata: ModelMetadata,
              config: AdaptConfig) -> dict[str, Any] | None:
    """The separate test people of a k-shot evaluation (None: split ``dataset`` instead)."""
    if test_data is None:
        if test_pairs is not None:
            raise ValueError("test_pairs (--test-pairs) needs test_data (--test-data): the folder its images are in")
        return None
    shots = _check_shots(shots)
    if dataset.num_classes < 2:
        raise ValueError(f"{dataset.root} holds {dataset.num_classes} person; adaptation needs at least 2")
    counts = dataset.counts()
    if max(shots) > counts.min():
        name = dataset.identities[int(np.argmin(counts))]
        raise ValueError(f"k={max(shots)} images per person, but {name!r} has only {int(counts.min())} (the fewest in "
                         f"{dataset.root}); choose k <= {int(counts.min())}")
    test, test_crops, no_face = _decode(test_data, metadata, config)
    shared = sorted(set(test.identities) & set(dataset.identities))
    if shared:
        raise ValueError(f"test_data shares {len(shared)} people with the adaptation data ({', '.join(shared[:5])}); "
                         "score adaptation on people it never saw")
    pairs = None
    if test_pairs is not None:
        from edgeface_runtime.metrics import read_pairs

        from ._evaluate import pair_scores

        listed = read_pairs(test_pairs, image_root=test.root)
        usable, _, labels, folds = pair_scores(listed, test.paths, np.zeros((len(test), 1), np.float32))
        if not labels.any() or labels.all():
            raise ValueError(f"{test_pairs}: the pairs whose images were read ({len(usable)} of {len(listed)}) need "
                             "both same-person and different-person pairs")
        pairs = (usable, {"pairs": len(usable), "pairs_file": str(test_pairs), "pairs_listed": len(listed),
                          "folds": int(len(np.unique(folds))), "folds_share_people": None})
    elif test.num_classes < 2 or int(np.count_nonzero(test.counts() >= 2)) < 2:
        raise ValueError(f"{test_data}: test pairs need at least 2 people with 2+ images each")
    return {"dataset": test, "crops": test_crops, "no_face": no_face, "pairs": pairs,
            "describe": {**test.describe(), "pairs_file": str(test_pairs) if test_pairs is not None else None}}


def _mean_std(values: Sequence[float]) -> dict[str, float]:
    array = np.asarray(values, np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": int(array.size)}


def _summarise(runs: Sequence[Mapping[str, Any]], shots: Sequence[int]) -> list[dict[str, Any]]:
    rows = []
    for k in shots:
        mine = [r for r in runs if r["k"] == k]
        row: dict[str, Any] = {"k": k}
        for metric in ("accuracy", "auc", "eer"):
            row[metric] = {"before": _mean_std([r["before"][metric] for r in mine]),
                           "after": _mean_std([r["after"][metric] for r in mine]),
                           "change": _mean_std([r["after"][metric] - r["before"][metric] for r in mine])}
        rows.append(row)
    return rows


def kshot_markdown(report: Mapping[str, Any]) -> str:
    """The k-shot report as a Markdown table (percentages, mean ± std over seeds)."""
    pct = lambda s: f"{100 * s['mean']:.1f} ± {100 * s['std']:.1f}"  # noqa: E731
    signed = lambda s: f"{100 * s['mean']:+.1f} ± {100 * s['std']:.1f}"  # noqa: E731
    first = report["runs"][0] if report.get("runs") else {}
    lines = [
        f"k-shot adaptation of `{Path(report['model']).name}` on `{report['data']}`: "
        f"{len(first.get('adaptation_people', []))} adaptation / {len(first.get('held_out_people', []))} held-out "
        f"people{' (separate test data: ' + str(report['test']['root']) + ')' if report.get('test') else ''}, "
        f"{first.get('pairs', '?')} held-out pairs, {len(report['seeds'])} seed(s) "
        f"(mean ± std over seeds; accuracy with the threshold chosen on the other folds).",
        "",
        "| shots | accuracy before | accuracy after | change (points) | AUC before | AUC after | EER before "
        "| EER after |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in report["summary"]:
        acc, auc, eer = row["accuracy"], row["auc"], row["eer"]
        lines.append(f"| {row['k']} | {pct(acc['before'])} | {pct(acc['after'])} | {signed(acc['change'])} | "
                     f"{auc['before']['mean']:.3f} | {auc['after']['mean']:.3f} | {pct(eer['before'])} | "
                     f"{pct(eer['after'])} |")
    for what, summary in (("data", report.get("no_face")), ("test data", report.get("test_no_face"))):
        if summary:
            lines += ["", f"No face detected in {summary['no_face']} of {summary['images']} {what} images: "
                          f"{summary['meaning']}."]
    return "\n".join(lines) + "\n"


def write_kshot_report(report: Mapping[str, Any], out: str | Path) -> tuple[Path, Path]:
    """Write ``kshot.json`` and ``kshot.md`` into ``out``."""
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path = atomic_write_text(out_dir / KSHOT_JSON, json.dumps(report, indent=1, default=_json_default))
    md_path = atomic_write_text(out_dir / KSHOT_MARKDOWN, kshot_markdown(report))
    return json_path, md_path
