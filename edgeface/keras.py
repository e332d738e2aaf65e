"""The Keras every part of edgeface trains with: tf-keras (Keras 2) and TensorFlow, set up once.

tensorflow-model-optimization works only with Keras 2, and what ``tf.keras`` means otherwise
depends on import order (``TF_USE_LEGACY_KERAS``). Code that builds on edgeface's models (the
converters, an example, a notebook) imports Keras from here, so it gets the same Keras as the
models it loads::

    from edgeface.keras import keras, tf

Importing this module imports TensorFlow.
"""

from __future__ import annotations

from ._keras import is_keras3_file, keras, tf, tune_allocator_for_training

__all__ = ["is_keras3_file", "keras", "tf", "tune_allocator_for_training"]
