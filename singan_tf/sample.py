"""``python -m singan_tf.sample RUN_DIR``: draw samples of any size from a trained pyramid."""

import sys

from singan_tf.cli import command_main

if __name__ == "__main__":
    sys.exit(command_main("sample"))
