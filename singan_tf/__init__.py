"""singan-tf: SinGAN (Shaham et al., ICCV 2019) in TensorFlow 2 / Keras 3.

Importing the package is light (no TensorFlow); the modules are:
``config``, ``images``, ``pyramid``, ``models``, ``losses``, ``training``,
``sampling``, ``rundir``, ``applications`` (the paper's five) and the CLIs
(``python -m singan_tf.train``, ``python -m singan_tf.sample``,
``python -m singan_tf <command>``).
"""

__version__ = "0.1.0"
