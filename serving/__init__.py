"""TensorFlow-free serving of exported singan-tf models.

This package never imports TensorFlow, Keras or singan_tf (checked by
import-linter and a test): it runs where only numpy and onnxruntime are
installed (``pip install 'singan-tf[serving]'``).
"""

from serving.client import Client, ClientError
from serving.sampler import Sampler, SamplerError

__all__ = ["Client", "ClientError", "Sampler", "SamplerError"]
