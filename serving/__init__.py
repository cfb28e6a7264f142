"""TensorFlow-free serving of exported singan-tf models.

This package never imports TensorFlow, Keras or singan_tf (checked by
import-linter and a test). It is its own distribution, ``singan-serving``
(``serving/pyproject.toml``: numpy, onnxruntime, Pillow, FastAPI, uvicorn),
so it installs where TensorFlow does not belong: ``pip install ./serving``
from a clone, or ``pip install 'singan-tf[serving]'`` beside training.
"""

__version__ = "0.1.0"  # released with singan-tf of the same version (its extra pins it)

from serving.client import Client, ClientError
from serving.sampler import Sampler, SamplerError

__all__ = ["Client", "ClientError", "Sampler", "SamplerError"]
