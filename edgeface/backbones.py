"""Backbones: pretrained feature extractors that edgeface puts a face-embedding head on.

>>> from edgeface.backbones import create_backbone, list_backbones
>>> list_backbones()[:3]
['efficientnet_b0', 'inception_v3', 'mobilenet_v1_025']
>>> features = create_backbone("mobilenet_v1_025", weights="/path/to/mobilenet_2_5_224_tf_no_top.h5")

Each backbone is built flat on its input tensor (no model nested in a model, so
quantization-aware training can see every layer) and takes float pixels preprocessed with
its entry's :class:`Preprocess` (``backbone_preprocess(name)``), which is what the device
applies before inference.
"""

from __future__ import annotations

import os
from typing import Any, Sequence

from edgeface_runtime.metadata import Preprocess

from ._backbones import (BackboneSpec, WeightsSource, build_backbone, get_backbone_spec, list_backbones,
                         register_backbone)

__all__ = [
    "BackboneSpec",
    "WeightsSource",
    "backbone_preprocess",
    "create_backbone",
    "get_backbone_spec",
    "list_backbones",
    "register_backbone",
]


def create_backbone(
    name: str,
    *,
    weights: str | os.PathLike | None = None,
    input_size: Sequence[int] = (112, 112),
    input_tensor: Any = None,
):
    """Build backbone ``name`` and return it as a Keras model ending in its last feature map.

    ``weights``: None (random initialisation), "imagenet" (Keras' own download) or the path
    of a Keras HDF5 weights file, checked to fit (a file for another backbone or width is a
    ``ValueError`` naming the backbone it seems to be for). With ``input_tensor`` the layers
    are built on that tensor, so ``keras.Model(input, head(backbone.output))`` stays flat.
    """
    return build_backbone(name, weights=weights, input_size=input_size, input_tensor=input_tensor).model


def backbone_preprocess(name: str, input_size: Sequence[int] | None = None) -> Preprocess:
    """The preprocessing backbone ``name`` expects, at ``input_size`` (default: its own)."""
    spec = get_backbone_spec(name)
    return spec.preprocess_for(input_size or spec.default_input_size)
