"""``python -m singan_tf <command>``."""

import sys

from singan_tf.cli import main

sys.exit(main())
