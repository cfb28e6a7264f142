"""``python -m singan_tf.train [IMAGE] --out RUN_DIR``: train a SinGAN pyramid."""

import sys

from singan_tf.cli import command_main

if __name__ == "__main__":
    sys.exit(command_main("train"))
