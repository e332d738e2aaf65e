"""Weight clustering: ``apply_clustering`` wraps layers, ``strip_clustering`` unwraps them.

Each kernel is reduced to ``clusters`` shared values (k-means++ initialised centroids, refined
by fine-tuning), per tensor as tfmot does by default: per-channel clustering (Conv2D only)
agreed better on the test model but compressed worse and lost a pruned model's zeros. After
pruning, ``preserve_sparsity=True`` keeps the zeros out of the clusters (tfmot's
sparsity-preserving clustering). Layers are wrapped one by one through
``clone_model``, as for pruning, so the L2Normalize output layer is left as it is;
``cluster_weights`` would also mutate the model passed in, which callers avoid by passing a copy.
"""

from __future__ import annotations

import logging
from typing import Any

logger = logging.getLogger(__name__)


def _clusterable(layer: Any) -> bool:
    from edgeface.keras import keras

    # tfmot 0.8.1's clustering registry lists no weights of DepthwiseConv2D (a Conv subclass):
    # wrapping one would only add a wrapper that clusters nothing.
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return False
    return isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense))


def apply_clustering(model: Any, clusters: int, *, preserve_sparsity: bool = False) -> tuple[Any, list[Any]]:
    """``(model with its Conv2D/Dense kernels clustered, fine-tuning callbacks (none))``."""
    import tensorflow_model_optimization as tfmot
    from edgeface.keras import keras

    if int(clusters) < 2:
        raise ValueError(f"clusters must be at least 2, got {clusters!r}")
    cluster = tfmot.clustering.keras
    wrapped = []

    def wrap(layer):
        if _clusterable(layer):
            wrapped.append(layer.name)
            return cluster.cluster_weights(layer, number_of_clusters=int(clusters),
                                           cluster_centroids_init=cluster.CentroidInitialization.KMEANS_PLUS_PLUS,
                                           preserve_sparsity=preserve_sparsity)
        return layer

    clustered = keras.models.clone_model(model, clone_function=wrap)
    if not wrapped:
        raise ValueError("the model has no Conv2D or Dense layer to cluster")
    logger.info("clustering %d layers into %d clusters%s", len(wrapped), clusters,
                " (sparsity preserved)" if preserve_sparsity else "")
    return clustered, []


def strip_clustering(model: Any) -> Any:
    """The plain Keras model whose kernels hold only the cluster centroids."""
    import tensorflow_model_optimization as tfmot

    return tfmot.clustering.keras.strip_clustering(model)
