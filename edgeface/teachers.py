"""Teachers for distillation: models whose embeddings a student learns to reproduce.

>>> from edgeface.teachers import load_teacher, teacher_embeddings
>>> teacher = load_teacher("dlib", box="blazeface", detector="face_detection_short_range.tflite")
>>> found = teacher_embeddings(teacher, "faces/", ["alice/1.jpg", "bob/1.jpg"])  # cached on disk
>>> found.vectors.shape
(2, 128)

Specs: ``"dlib"`` (needs ``pip install 'edgeface[teachers]'``), a ``.keras`` or ``.tflite``
embedding model with edgeface metadata, an ``.npz`` of precomputed embeddings (image path
relative to the data folder → vector), or ``KIND:PATH``. ``register_teacher`` adds kinds.
Training uses them through ``TrainConfig(teacher=...)`` / ``edgeface train --teacher``.
"""

from __future__ import annotations

from ._distill import distill_targets
from ._teachers import (
    TEACHERS,
    DlibTeacher,
    KerasTeacher,
    NpzTeacher,
    Teacher,
    TeacherEmbeddings,
    TFLiteTeacher,
    default_teacher_cache,
    load_teacher,
    register_teacher,
    teacher_embeddings,
)

__all__ = [
    "TEACHERS",
    "DlibTeacher",
    "KerasTeacher",
    "NpzTeacher",
    "TFLiteTeacher",
    "Teacher",
    "TeacherEmbeddings",
    "default_teacher_cache",
    "distill_targets",
    "load_teacher",
    "register_teacher",
    "teacher_embeddings",
]
