"""One training run with ``TrainConfig`` overrides, in the process the benchmarks time.

The benchmarks that weigh quality against training time start this module
as a child process (``bench.rundirs.train_command``), so that the wall time
and peak RSS they measure are the run's own::

    python -m bench.train_run '{"preset": "fast", "max_size": 64, "seed": 0}' IMAGE OUT

OVERRIDES_JSON is a JSON object of ``TrainConfig`` fields; ``preset`` (default
``paper``) names the preset they override and ``cpu_threads`` (default
``auto``) is applied as ``singan_tf.train --cpu-threads`` does. OUT is the new
run directory; with ``stop_after_scale`` K, training stops once scale K is
written (``bench coarse-screen``), and a later call on the same OUT resumes it.
"""

from __future__ import annotations

import argparse
import contextlib
import json


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("overrides", metavar="OVERRIDES_JSON", help="TrainConfig overrides, a JSON object")
    parser.add_argument("image", metavar="IMAGE", help="the training image")
    parser.add_argument("out", metavar="OUT", help="the run directory to write")
    args = parser.parse_args(argv)
    from singan_tf.preflight import import_tensorflow

    import_tensorflow()  # without its start-up lines, as `python -m bench` loads it
    from singan_tf.config import TrainConfig
    from singan_tf.images import load_image
    from singan_tf.pyramid import geometry_for
    from singan_tf.rundir import RunDir
    from singan_tf.training import train_pyramid
    from singan_tf.tune import configure_threads

    overrides, image = json.loads(args.overrides), load_image(args.image)
    threads = overrides.pop("cpu_threads", "auto")
    stop = overrides.pop("stop_after_scale", None)
    config = TrainConfig.from_preset(overrides.pop("preset", "paper"), **overrides)
    configure_threads(threads, config, geometry_for(config, image.shape[:2]))  # as singan_tf.train
    callbacks = [] if stop is None else [_StopAfter(int(stop))]
    with contextlib.suppress(_Stopped):
        train_pyramid(config, image, args.out, callbacks=callbacks, resume=RunDir(args.out).exists())


class _Stopped(Exception):
    pass


class _StopAfter:
    """Ends training once scale ``last`` is written (the run directory then resumes from there)."""

    def __init__(self, last: int):
        self.last = last

    def on_scale_begin(self, scale: int, info: dict) -> None:
        pass

    def on_iterations(self, scale: int, iteration: int, metrics: dict | None) -> None:
        pass

    def on_scale_end(self, scale: int, info: dict, pyramid) -> None:
        if scale >= self.last:
            raise _Stopped


if __name__ == "__main__":
    main()
