"""TensorFlow-free serving of exported singan-tf models (filled by the serving issue).

This package must never import TensorFlow, Keras or singan_tf.
"""
