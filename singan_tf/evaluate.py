"""``python -m singan_tf.evaluate RUN_DIR``: patch SWD, diversity, reconstruction RMSE (+ SIFID)."""

import sys

from singan_tf.cli import command_main

if __name__ == "__main__":
    sys.exit(command_main("evaluate"))
