"""Imports TensorFlow for the host-side input pipeline: CPU only, quiet."""
import os

# Must be set before TensorFlow is first imported: its C++ start-up messages are noise here.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import tensorflow as tf  # noqa: E402

try:
    # TF must never claim an accelerator: JAX owns them, TF only reads and augments on the host.
    tf.config.set_visible_devices([], "GPU")
except RuntimeError:  # TF already initialised its devices (someone imported it first).
    pass

# Our map functions hold no Python control flow on tensors (tf.where / switch_case instead), so
# AutoGraph's source transformation is pure start-up cost (seconds per pipeline): skip it.
plain = tf.autograph.experimental.do_not_convert

__all__ = ["tf", "plain"]
