"""The orchestrator: source model → every requested variant → checked files + manifest.json.

Order of work: check every input first (a bad model, data or calibration folder fails before
anything is built), then build variant by variant. A variant that cannot be built or fails a
check is recorded as failed with the reason and the others go on; a variant that needs
fine-tuning data when none was given is recorded as skipped. Files are written into a
hidden staging folder and renamed into ``out_dir`` only after every variant is done,
``manifest.json`` last, so nothing half-written looks finished.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from edgeface.options import merged
from edgeface_runtime.metadata import ModelMetadata

from . import (_activations, _bias_correction, _clustering, _compact, _data, _finetune, _model, _pruning, _ptq, _qat,
               _validate)
from ._options import CompressionOptions, ConvertOptions
from ._manifest import MANIFEST_NAME, Manifest, VariantResult, tool_versions
from ._variants import (DEFAULT_PRUNE_BLOCK, IO_TYPES, MAX_AUC_DROP_FINETUNED, PRUNE_BLOCK_WITH_PAIRS, VARIANTS,
                        Target, Variant, get_target, parse_variants)

logger = logging.getLogger(__name__)

Progress = Callable[[str, str], None]  # (event: "start" | "ok" | "failed" | "skipped", variant name)


def _far_key(far: float) -> str:
    return f"{far:g}"


# Each compression step as its apply/strip pair: apply(model, options, steps before) ->
# (wrapped model, callbacks for the fine-tuning loop); strip(wrapped, steps before) -> model.
def _apply_pruning(model: Any, options: CompressionOptions, after: tuple[str, ...]) -> Any:
    return _pruning.apply_pruning(model, options.sparsity, options.steps, options.prune_block, options.layer_sparsity)


def _apply_clustering(model: Any, options: CompressionOptions, after: tuple[str, ...]) -> Any:
    return _clustering.apply_clustering(model, options.clusters, preserve_sparsity="prune" in after)


def _apply_qat(model: Any, options: CompressionOptions, after: tuple[str, ...]) -> Any:
    return _qat.apply_qat(model, after=after)


_STEP_PAIRS: dict[str, tuple[Callable[[Any, CompressionOptions, tuple[str, ...]], Any], Callable[..., Any]]] = {
    "prune": (_apply_pruning, lambda model, after: _pruning.strip_pruning(model)),
    "cluster": (_apply_clustering, lambda model, after: _clustering.strip_clustering(model)),
    "qat": (_apply_qat, lambda model, after: _qat.strip_qat(model, after=after)),
    "leaky": (lambda model, options, after: (_activations.replace_prelu(model), []), lambda model, after: model),
}


class _Built:
    """A Keras model after some compression steps, and how its fine-tuning went."""

    def __init__(self, model: Any, finetune: list[dict[str, Any]]):
        self.model = model
        self.finetune = finetune


class _Run:
    def __init__(self, *, source: Any, metadata: ModelMetadata, input_size: tuple[int, int], target: Target,
                 calibration: _data.CalibrationSet, pairs: _data.PairSet | None, data: _data.FineTuneData | None,
                 flat: Any, flat_error: str, options: ConvertOptions, prune_block: int, stack: contextlib.ExitStack,
                 staging: Path, rate_hint: float | None = None):
        self.source, self.metadata, self.input_size, self.target = source, metadata, input_size, target
        self.calibration, self.pairs, self.data = calibration, pairs, data
        self.flat, self.flat_error = flat, flat_error
        self.options, self.prune_block, self.rate_hint = options, prune_block, rate_hint
        self.fars, self.min_cosine = tuple(options.fars), options.min_cosine
        self.stack, self.staging = stack, staging
        self.reference = _validate.keras_embed(source, calibration.held_out)
        self.built: dict[tuple[str, ...], _Built | Exception] = {}
        self.exports: dict[int, str] = {}
        self.corrections: dict[int, tuple[Any, Any, dict[str, Any]]] = {}  # id(model) -> (model, corrected, summary)
        self.centres: np.ndarray | None = None
        self._source_auc: float | None = None

    def finetune_options(self, step: str) -> _finetune.FineTuneOptions:
        rate = self.options.learning_rate
        if rate is None and step in _finetune.GENTLE_STEPS:
            rate = self.rate_hint
        return _finetune.FineTuneOptions.for_step(step, self.options.finetune_steps, rate,
                                                  distill_weight=self.options.distill_weight,
                                                  task_weight=self.options.task_weight)

    def recorded_options(self, names: Sequence[str]) -> dict[str, Any]:
        """The values of the options ``names`` as the manifest records them for a variant."""
        values = {"target": self.target.name, "prune_block": self.prune_block}
        return {name: values.get(name, getattr(self.options, name)) for name in names}

    # -- compression steps -------------------------------------------------------------

    def compressed(self, steps: tuple[str, ...]) -> _Built:
        """The model after ``steps`` (each applied, fine-tuned, stripped), sharing common prefixes."""
        if not steps:
            return _Built(self.source, [])
        if steps not in self.built:
            try:
                self.built[steps] = self._compress(steps)
            except Exception as exc:  # a failed shared step fails its dependants without re-running
                self.built[steps] = exc
        built = self.built[steps]
        if isinstance(built, Exception):
            raise built
        return built

    def _compress(self, steps: tuple[str, ...]) -> _Built:
        before = self.compressed(steps[:-1]) if len(steps) > 1 else _Built(self.flat, [])
        step, after = steps[-1], steps[:-1]
        apply, strip = _STEP_PAIRS[step]
        finetune_options = self.finetune_options(step)
        data = self.data
        if data is None:  # convert() leaves out (skips) the fine-tuned variants when it has no data
            raise ValueError(f"{'+'.join(steps)} fine-tunes, and there is no fine-tuning data (pass data=)")
        compression = CompressionOptions(sparsity=self.options.sparsity, prune_block=self.prune_block,
                                          clusters=self.options.clusters, steps=finetune_options.steps,
                                          layer_sparsity=_pruning.parse_layer_sparsity(self.options.layer_sparsity))
        wrapped, callbacks = apply(_model.copy_model(before.model), compression, after)
        if self.centres is None and finetune_options.task_weight > 0:  # same data and teacher: imprint once
            self.centres = _finetune.class_centres(data, self.source, finetune_options.imprint_batches)
        stats = _finetune.finetune(wrapped, data, self.source, finetune_options, callbacks, centres=self.centres)
        return _Built(strip(wrapped, after), before.finetune + [{"step": step, **stats}])

    def corrected(self, model: Any) -> tuple[Any, dict[str, Any]]:
        """``model`` with int8 weight-rounding bias corrected on the representative crops (once per model)."""
        key = id(model)
        if key not in self.corrections:  # the entry keeps ``model`` alive, so its id is not reused
            corrected, summary = _bias_correction.bias_corrected(model, self.calibration.representative)
            self.corrections[key] = (model, corrected, summary)
        return self.corrections[key][1], self.corrections[key][2]

    def exported(self, model: Any) -> str:
        key = id(model)
        if key not in self.exports:
            self.exports[key] = self.stack.enter_context(_ptq.exported(model, self.input_size))
        return self.exports[key]

    # -- one variant ---------------------------------------------------------------------

    def build(self, variant: Variant) -> VariantResult:
        start = time.perf_counter()
        result = VariantResult(variant.name, variant.technique, options=self.recorded_options(variant.options))
        if variant.needs_data and self.data is None:
            result.status = "skipped"
            result.reason = ("task_weight > 0 needs labelled fine-tuning data for " + " + ".join(variant.steps) +
                             ": pass data=DIR (--data DIR, one sub-folder of face images per person)")
            return result
        if variant.steps and self.flat is None:
            result.status, result.reason = "failed", self.flat_error
            return result
        try:
            built = self.compressed(variant.steps)
        except _activations.NothingToReplace as exc:  # before any fine-tuning: the variant does not apply
            result.status, result.reason = "skipped", str(exc)
            return result
        result.finetune = built.finetune
        io = self.options.io if variant.quantization == "int8" else "float32"
        model = built.model
        # QAT models carry their own quantization ranges; every other full-int8 file rounds
        # weights the model never saw rounded, and the correction removes the mean error.
        if variant.quantization == "int8" and "qat" not in variant.steps and self.options.bias_correction:
            model, result.bias_correction = self.corrected(built.model)
        tflite = _ptq.convert(self.exported(model), variant.quantization,
                              representative=self.calibration.representative, io=io,
                              per_channel_dense=self.target.per_channel_dense,
                              quantization_aware="qat" in variant.steps)
        tflite = _compact.compact(tflite, keep_tensor_names=self.options.keep_tensor_names)
        self.check(variant, tflite, built.model, io, result)
        result.seconds = round(time.perf_counter() - start, 2)
        return result

    def check(self, variant: Variant, tflite: bytes, keras_model: Any, io: str, result: VariantResult) -> None:
        from edgeface_runtime import check_ops
        from edgeface_runtime.metadata import read_metadata, write_metadata

        result.ops = _validate.ops(tflite)
        result.sparsity = round(_validate.weight_sparsity(tflite), 4)
        result.parameters = int(self.source.count_params())
        check_ops(tflite, self.target.name)  # UnsupportedOpError names every missing op
        runner = _validate.engine(tflite, f"variant {variant.name}")
        result.io = _validate.io_types(runner)
        embeddings = _validate.embed(runner, self.calibration.held_out)
        result.fidelity = _validate.agreement(embeddings, _validate.keras_embed(keras_model, self.calibration.held_out))
        result.agreement = _validate.agreement(embeddings, self.reference)
        thresholds, origin = self.thresholds(runner, result)
        problems = []
        if io != "float32" and (result.io["input"], result.io["output"]) != (io, io):
            problems.append(f"{io} input/output requested but the converter wrote {result.io}")
        if result.fidelity["mean"] < self.min_cosine:
            problems.append(f"mean cosine {result.fidelity['mean']:.4f} to the Keras model it was converted from "
                            f"(min {result.fidelity['min']:.4f}) is below {self.min_cosine}")
        # Without compression steps the converted model is the source: one check covers both.
        if variant.steps:
            problems += source_problems(variant, result)
        if problems:
            result.status, result.reason = "failed", "; ".join(problems)
            return
        metadata = replace(self.metadata, thresholds=thresholds,
                           name=f"{self.metadata.name or 'edgeface'}-{variant.name}",
                           extra={**dict(self.metadata.extra), "variant": variant.name,
                                  "technique": variant.technique, "options": result.options,
                                  "thresholds_from": origin, "target": self.target.name})
        final = write_metadata(tflite, metadata)
        if read_metadata(final) is None:  # pragma: no cover - write_metadata's own contract
            raise RuntimeError("the metadata written could not be read back")
        result.bytes, result.gzip_bytes = len(final), _validate.gzip_size(final)
        result.file = variant.file_name
        (self.staging / variant.file_name).write_bytes(final)

    def source_pairs_auc(self) -> float:
        from edgeface_runtime.metrics import roc_auc

        pairs = self.pairs
        if pairs is None:  # called from thresholds(), which returns first without pairs
            raise ValueError("no calibration pairs: the source model's AUC is measured on them")
        if self._source_auc is None:
            scores = _pair_scores(_validate.keras_embed(self.source, pairs.crops), pairs)
            self._source_auc = float(roc_auc(scores, pairs.same))
        return self._source_auc

    def thresholds(self, runner: Any, result: VariantResult) -> tuple[dict[float, float], str]:
        from edgeface_runtime.metrics import calibrate_threshold, roc_auc

        if self.pairs is None:
            inherited = dict(self.metadata.thresholds)
            result.thresholds = {_far_key(k): v for k, v in inherited.items()}
            return inherited, "source model metadata (not recalibrated: no calibration pairs)" if inherited else "none"
        scores = _pair_scores(_validate.embed(runner, self.pairs.crops), self.pairs)
        same = self.pairs.same
        if same.any() and (~same).any():
            result.pairs_auc = {"variant": round(float(roc_auc(scores, same)), 5),
                                "source": round(self.source_pairs_auc(), 5)}
        out = {}
        for far in self.fars:
            threshold = float(calibrate_threshold(scores[~same], far))
            out[far] = threshold
            result.thresholds[_far_key(far)] = threshold  # exact: the value the device compares with
            if same.any():
                result.tar[_far_key(far)] = round(float(np.mean(scores[same] >= threshold)), 4)
        return out, f"calibrated with this variant on {self.pairs.source} ({int((~same).sum())} impostor pairs)"


def source_problems(variant: Variant, result: VariantResult) -> list[str]:
    """What a fine-tuned variant lost against the source model (the rule is in ``_variants``):
    its verification AUC when it was scored on calibration pairs, else its embedding agreement."""
    after = f"after {' + '.join(variant.steps)}; fine-tune longer (finetune_steps) or compress less"
    if result.pairs_auc is not None:
        drop = result.pairs_auc["source"] - result.pairs_auc["variant"]
        if drop > MAX_AUC_DROP_FINETUNED:
            return [f"ROC AUC {result.pairs_auc['variant']:.4f} on the calibration pairs is {drop:.4f} below the "
                    f"source model's {result.pairs_auc['source']:.4f} (at most {MAX_AUC_DROP_FINETUNED} may be lost) "
                    f"{after}"]
        return []
    if result.agreement is not None and result.agreement["mean"] < variant.min_source_cosine:
        return [f"mean cosine {result.agreement['mean']:.4f} to the source model (min {result.agreement['min']:.4f}) "
                f"is below {variant.min_source_cosine} {after}, or pass calibration pairs: a variant whose thresholds "
                f"are recalibrated is held to the source's verification AUC instead"]
    return []


def _pair_scores(embeddings: np.ndarray, pairs: _data.PairSet) -> np.ndarray:
    return np.sum(embeddings[pairs.index_a] * embeddings[pairs.index_b], axis=1)


# --------------------------------------------------------------------------- entry point


def convert(model_path: str | os.PathLike, out_dir: str | os.PathLike | None = None,
            variants: str | Iterable[str] | None = None, *, options: ConvertOptions | None = None,
            metadata: ModelMetadata | None = None, face_detector: Any = "auto", progress: Progress | None = None,
            **keywords: Any) -> Manifest:
    """Convert ``model_path`` into ``variants`` under ``out_dir`` and return the manifest written there.

    model_path: an edgeface ``model.keras`` (tf-keras, ending in L2Normalize, metadata inside;
        ``metadata=`` supplies it for a plain Keras file). Every input left None comes from the
        training card beside it (``use_card``; :func:`edgeface.data.training_data`): the faces it trained on.
    options: a :class:`ConvertOptions` (every option's default and one-line help live there); the
        keyword form ``convert(model, out, variants, sparsity=0.3, ...)`` is the same call: the
        positional ``out_dir``/``variants`` and every keyword set that option of ``options``.
    out_dir: default ``variants/`` beside the model.
    variants: ``"auto"`` (the post-training variants, plus pruned-int8 when fine-tuning data is at
        hand; the rest are listed as skipped, with why), ``"all"``, ``"int8,float16"`` or a list of
        names from ``VARIANTS``.
    calibration: folder of face crops (or a ``CalibrationSet``); default: up to
        ``max_calibration_images`` of the training images, cropped as training cropped them. 1 in 5
        is held out for the agreement check, the rest calibrate int8. ``face_detector``: "auto"
        (``detector``, a BlazeFace ``.tflite``, if given, else the detector the card names, else
        the runtime's), None skips the face check, or a FaceDetector.
    data: fine-tuning data for the pruned/clustered/QAT variants: a folder with one sub-folder per
        person, or a :class:`FineTuneData`; default: the training card's people. Fine-tuning
        distils the source model (no labels are read when ``task_weight`` is 0), on these images
        mixed with the calibration crops, or on the calibration crops alone when there is no data.
    calibration_pairs: LFW-format pairs file (images under ``pairs_root``, default beside it;
        ``pairs_folds``: only those folds): each variant's thresholds at ``fars`` are calibrated on
        its own impostor scores. Default: LFW folds 6-10 for a model the card says trained on LFW.
    target: the oldest interpreter every file must load on (``TARGETS``).
    sparsity, clusters: pruning target and clusters per layer. io: int8 variants' I/O type.
    layer_sparsity: per-layer pruning targets by layer-name pattern, overriding ``sparsity``
        (``{"sface_fc": 0.95}`` or ``["sface_fc=0.95"]``; 0 keeps a layer dense).
    prune_block: weights pruned together, consecutive input channels of one output channel (1:
        each on its own); whole runs of zeros compress better in the file (``_pruning``). Default:
        4 when thresholds are recalibrated on pairs, else 1 (``_variants.PRUNE_BLOCK_WITH_PAIRS``).
    finetune_steps, learning_rate, distill_weight, task_weight, batch_size: fine-tuning per compression
        step (steps and rate default per step: ``_finetune.STEP_DEFAULTS``, pruning 1000 at 1e-3, clustering
        and QAT 1500 at 1e-4, PReLU replacement 600 at 3e-4; a ``compression_learning_rate`` in the model's
        metadata, as models built on a face source have, replaces the rate of pruning, clustering and
        QAT); the loss is distill_weight × (1 − cosine to the source model's embedding) + task_weight ×
        a classification loss (default 0: the source model is the teacher).
    bias_correction: before a full-int8 conversion (not QAT), remove from each layer's bias the
        mean error that rounding its weights to int8 causes, measured on the calibration crops
        (``_bias_correction``); False converts the model as it is.
    keep_tensor_names: keep the names of intermediate tensors (for Netron and the like). Every file is
        compacted losslessly (``_compact``): identical quantization vectors are stored once and, unless
        this is set, only the input and output tensors keep their names.
    min_cosine: mean cosine every file must reach against the Keras model it was converted
        from (fine-tuned variants must also stay within the table's floor of the source model).
    seed: seeds Keras/TF/numpy for reproducible fine-tuning (None leaves the global state alone).
    progress: called with ("start" | "ok" | "failed" | "skipped", variant name).

    Raises ValueError (before building anything) for a bad model, options, calibration folder,
    pairs file or fine-tuning data, and when an input is neither given nor recorded (naming the
    flag to add). A variant that fails to build or to pass a check is recorded as failed in the
    manifest, not raised.
    """
    started = time.perf_counter()
    given = {"out": out_dir, "variants": variants}
    opts = merged(ConvertOptions, options, "convert", **{k: v for k, v in given.items() if v is not None}, **keywords)
    variants, calibration, data = opts.variants, opts.calibration, opts.data
    calibration_pairs, seed, task_weight = opts.calibration_pairs, opts.seed, opts.task_weight
    batch_size, max_images = opts.batch_size, opts.max_calibration_images
    auto = isinstance(variants, str) and variants == "auto"
    chosen = [] if auto else parse_variants(variants)
    target_spec = get_target(opts.target)
    if opts.io not in IO_TYPES:
        raise ValueError(f"io must be one of {', '.join(IO_TYPES)}, got {opts.io!r}")
    if not 0.0 < float(opts.sparsity) < 1.0:
        raise ValueError(f"sparsity must be a fraction between 0 and 1, got {opts.sparsity!r}")
    prune_block = None if opts.prune_block is None else _pruning.check_block(opts.prune_block)
    layer_sparsity = _pruning.parse_layer_sparsity(opts.layer_sparsity)
    if int(opts.clusters) < 2:
        raise ValueError(f"clusters must be at least 2, got {opts.clusters!r}")
    for far in opts.fars:
        if not 0.0 < float(far) < 1.0:
            raise ValueError(f"FAR values must be between 0 and 1, got {far!r}")
    for step in _finetune.STEP_DEFAULTS:  # validates them early
        _finetune.FineTuneOptions.for_step(step, opts.finetune_steps, opts.learning_rate,
                                           distill_weight=opts.distill_weight, task_weight=task_weight)
    out = Path(opts.out) if opts.out is not None else Path(model_path).parent / "variants"
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a file; give a folder for the .tflite files and manifest.json")
    if face_detector == "auto" and opts.detector is not None:
        face_detector = _detector_file(opts.detector)

    source, meta = _model.load_source(model_path, metadata)
    rate_hint = _metadata_learning_rate(meta) if opts.learning_rate is None else None
    if seed is not None:  # fine-tuning and k-means++ draw random numbers: same inputs, same files
        from edgeface.keras import keras

        keras.utils.set_random_seed(int(seed))
    input_size = _model.input_size(source, meta)
    inputs: dict[str, str] = {}
    recorded = None
    if opts.use_card and (calibration is None or data is None or calibration_pairs is None):
        try:
            recorded = _recorded(model_path)
        except ValueError as exc:  # the card's data moved: fatal only when it was to supply the calibration
            if calibration is None:
                raise
            logger.warning("not using the training card: %s", exc)
    if recorded is not None:
        for note in recorded.notes:
            logger.warning("%s", note)
    detector = _detector(face_detector, recorded.detector if recorded is not None else None)
    if isinstance(calibration, _data.CalibrationSet):
        calib, inputs["calibration"] = calibration, f"given ({calibration.source})"
    elif calibration is not None:
        calib = _data.load_calibration(calibration, meta.preprocess, max_images=max_images,
                                       face_detector=detector)
        inputs["calibration"] = f"--calibration {calibration}"
    elif recorded is not None:
        calib = _data.calibration_from_dataset(recorded.dataset, meta.preprocess, max_images=max_images,
                                               detector=detector)
        inputs["calibration"] = f"{calib.source} (training card {recorded.card})"
    else:
        raise ValueError(f"no calibration faces for {model_path}: there is no training card beside it to say what it "
                         "trained on; pass --calibration DIR (a few hundred face crops like the device will see)")
    pairs = None
    if calibration_pairs is not None:
        pairs = _data.load_pairs(calibration_pairs, meta.preprocess, image_root=opts.pairs_root, detector=detector,
                                 folds=opts.pairs_folds)
        inputs["pairs"] = f"--calibration-pairs {calibration_pairs}"
    elif recorded is not None and recorded.validation is not None:
        pairs = _data.generated_pairs(recorded.validation, meta.preprocess, detector=detector,
                                      seed=0 if seed is None else int(seed))
        inputs["pairs"] = f"{pairs.source} (training card {recorded.card})"
    elif recorded is not None and recorded.protocol is not None:
        protocol = recorded.protocol
        pairs = _data.load_pairs(protocol.pairs, meta.preprocess, image_root=protocol.images, detector=detector,
                                 folds=protocol.folds)
        inputs["pairs"] = protocol.describe()
    else:
        inputs["pairs"] = "none: thresholds are the source model's (pass --calibration-pairs to recalibrate)"

    labelled: _data.FineTuneData | None = None
    labelled_origin = ""
    if isinstance(data, _data.FineTuneData):
        labelled, labelled_origin = data, "given"
    elif data is not None:
        labelled_origin = f"--data {data}"
    elif recorded is not None:
        labelled_origin = f"the training people of {recorded.dataset.root} (training card {recorded.card})"
    unrequested: list[Variant] = []
    if auto:
        chosen = default_variants(has_data=bool(labelled_origin))
        unrequested = [v for v in VARIANTS.values() if v not in chosen]
    fine_tuned = [v.name for v in chosen if v.needs_data]
    if rate_hint is not None and any(set(v.steps) & set(_finetune.GENTLE_STEPS) for v in chosen):
        logger.info("fine-tuning %s at learning rate %g, the model's compression_learning_rate (its source: %s); "
                    "--learning-rate overrides it", "/".join(_finetune.GENTLE_STEPS), rate_hint,
                    meta.extra.get("backbone") or "not recorded")
    finetune_data = None
    if fine_tuned:
        if labelled is None and data is not None and not isinstance(data, _data.FineTuneData):  # a folder
            labelled = _data.folder_finetune_data(data, meta.preprocess, batch_size=batch_size, detector=detector)
        elif labelled is None and recorded is not None:
            labelled = _data.dataset_finetune_data(recorded.dataset, meta.preprocess, batch_size=batch_size,
                                                   detector=detector)
        if labelled is not None:
            _data.check_finetune_data(labelled, input_size)
        if float(task_weight) == 0.0:  # distillation reads no labels: the calibration crops join in
            finetune_data = _finetune.distillation_data(labelled, calib.representative, batch_size=batch_size,
                                                        seed=0 if seed is None else int(seed))
            inputs["fine-tuning"] = (f"{labelled_origin} mixed with the calibration crops" if labelled is not None
                                     else "the calibration crops (distillation needs no labels)")
        elif labelled is not None:
            finetune_data, inputs["fine-tuning"] = labelled, labelled_origin
        else:
            logger.warning("task_weight > 0 needs labelled fine-tuning data: skipping %s (pass data=DIR)",
                           ", ".join(fine_tuned))
    flat, flat_error = None, ""
    if fine_tuned and finetune_data is not None:
        try:
            flat = _model.fold_dense_batchnorm(_model.flatten(source))
        except ValueError as exc:
            flat_error = str(exc)
    if flat is not None and layer_sparsity and any("prune" in VARIANTS[n].steps for n in fine_tuned):
        _pruning.sparsity_plan(flat, opts.sparsity, layer_sparsity)  # a pattern naming no layer fails before any work

    out.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=out))
    if prune_block is None:  # runs of zeros when thresholds are recalibrated on pairs, else single weights
        prune_block = PRUNE_BLOCK_WITH_PAIRS if pairs is not None else DEFAULT_PRUNE_BLOCK
    # The values as checked above, so the manifest records numbers, not whatever type was passed.
    resolved = replace(opts, sparsity=float(opts.sparsity), layer_sparsity=layer_sparsity, clusters=int(opts.clusters),
                       target=target_spec.name,
                       finetune_steps=None if opts.finetune_steps is None else int(opts.finetune_steps),
                       learning_rate=None if opts.learning_rate is None else float(opts.learning_rate),
                       distill_weight=float(opts.distill_weight), task_weight=float(task_weight),
                       bias_correction=bool(opts.bias_correction), keep_tensor_names=bool(opts.keep_tensor_names))
    results: list[VariantResult] = []
    try:
        with contextlib.ExitStack() as stack:
            run = _Run(source=source, metadata=meta, input_size=input_size, target=target_spec, calibration=calib,
                       pairs=pairs, data=finetune_data, flat=flat, flat_error=flat_error, options=resolved,
                       prune_block=prune_block, stack=stack, staging=staging, rate_hint=rate_hint)
            for variant in unrequested:
                results.append(VariantResult(variant.name, variant.technique, status="skipped",
                                             reason=_not_by_default(variant)))
            for variant in chosen:
                if progress:
                    progress("start", variant.name)
                result = _build_one(run, variant)
                _log(result)
                results.append(result)
                if progress:
                    progress(result.status, variant.name)
        order = list(VARIANTS)
        results.sort(key=lambda r: order.index(r.name) if r.name in order else len(order))
        manifest = Manifest(
            out_dir=str(out), source=_describe_source(model_path, source, meta), target=target_spec.name,
            variants=results, calibration=calib.describe(), pairs=pairs.describe() if pairs else None,
            finetune_data=None if finetune_data is None else {**finetune_data.describe,
                                                              "num_classes": int(finetune_data.num_classes)},
            inputs=inputs,
            tools=tool_versions(), created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
            seconds=round(time.perf_counter() - started, 2))
        _publish(out, staging, results, manifest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


def _build_one(run: _Run, variant: Variant) -> VariantResult:
    start = time.perf_counter()
    try:
        return run.build(variant)
    except Exception as exc:  # noqa: BLE001 - one variant's failure is recorded, the others go on
        logger.debug("variant %s failed", variant.name, exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return VariantResult(variant.name, variant.technique, status="failed",
                             reason=f"{type(exc).__name__}: {reason}", seconds=round(time.perf_counter() - start, 2))


def _log(result: VariantResult) -> None:
    if result.status == "ok":
        agreement = result.agreement or {}  # measured for every file that is ok
        logger.info("%s: %d bytes (gzip %d), cosine mean %.4f min %.4f", result.name, result.bytes,
                    result.gzip_bytes, agreement.get("mean", float("nan")), agreement.get("min", float("nan")))
    else:
        log = logger.info if result.status == "skipped" else logger.warning
        log("%s %s: %s", result.name, result.status, result.reason)


def _publish(out: Path, staging: Path, results: list[VariantResult], manifest: Manifest) -> None:
    from edgeface_runtime.metadata import atomic_write

    for result in results:
        file = out / f"{result.name}.tflite"
        if result.status == "ok":
            os.replace(staging / result.file, out / result.file)  # type: ignore[operator]
        elif file.exists():  # an earlier run's file would otherwise pass for this run's
            file.unlink()
    atomic_write(out / MANIFEST_NAME, manifest.to_json().encode("utf-8"))


def _describe_source(path: Any, model: Any, metadata: ModelMetadata) -> dict[str, Any]:
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return {"path": str(path), "sha256": digest, "name": metadata.name or model.name,
            "parameters": int(model.count_params()), "embedding_size": metadata.embedding_size,
            "preprocess": metadata.preprocess.to_dict(), "nested": _model.is_nested(model)}


# The variants "auto" builds: the post-training ones (seconds each) and, with fine-tuning data at hand,
# pruned-int8 (its zeros are what shrinks the gzip) and pruned-dynamic, which reuses the same pruned model
# (seconds more) and is the fast one where activations lack int8 kernels (SFace's PReLU). The other
# fine-tuned recipes take minutes each.
AUTO_VARIANTS = ("float32", "float16", "dynamic", "int8")
AUTO_WITH_DATA = ("pruned-int8", "pruned-dynamic")


def default_variants(has_data: bool) -> list[Variant]:
    names = AUTO_VARIANTS + (AUTO_WITH_DATA if has_data else ())
    return [v for v in VARIANTS.values() if v.name in names]


def _not_by_default(variant: Variant) -> str:
    if variant.name in AUTO_WITH_DATA:
        return ("not built by default without fine-tuning data (none given, no training card): pass --data DIR or "
                "--variants all (it then fine-tunes on the calibration crops)")
    return (f"not in the default set: {' + '.join(variant.steps)} fine-tunes for minutes; build it with "
            f"--variants {variant.name} or --variants all")


def _metadata_learning_rate(meta: ModelMetadata) -> float | None:
    """The fine-tuning rate the model's metadata asks for (``edgeface train`` writes its backbone's), if any."""
    value = (meta.extra or {}).get("compression_learning_rate")
    if value is None:
        return None
    try:
        rate = float(value)
    except (TypeError, ValueError):
        rate = float("nan")
    if not rate > 0:
        raise ValueError(f"the model's metadata has compression_learning_rate={value!r}, not a positive number; "
                         "pass --learning-rate to choose one")
    return rate


def _recorded(model_path: Any) -> Any:
    from edgeface.data import training_data

    return training_data(model_path)


def _detector_file(path: str | os.PathLike) -> Any:
    from edgeface_runtime import FaceDetector

    return FaceDetector.from_path(path)


def _detector(choice: Any, recorded: Path | None = None) -> Any:
    """``"auto"``: ``recorded`` (the card's detector) if given, else the runtime's default BlazeFace
    (bundled; never downloads); None/False: no face check; else a FaceDetector, used as is."""
    if choice is None or choice is False:
        return None
    if choice != "auto":
        return choice
    from edgeface_runtime import FaceDetector, ModelError, resolve_detector_path

    try:
        return FaceDetector.from_path(recorded if recorded is not None else resolve_detector_path())
    except (ModelError, OSError) as exc:
        logger.info("no face detector cached, calibration images are not checked for faces (%s)", exc)
        return None
