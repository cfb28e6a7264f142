"""Command-line interfaces: ``train`` and ``sample``.

Reach them as ``python -m singan_tf.train``, ``python -m singan_tf.sample``,
``python -m singan_tf <command>`` or the ``singan-tf <command>`` script.
The CLIs only parse arguments into a ``TrainConfig`` / call the library;
user mistakes end with one line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from singan_tf.errors import ConfigError, InputError, NonFiniteLossError

log = logging.getLogger("singan_tf")

EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 1
EXIT_INTERRUPTED = 130


def _quiet_tensorflow() -> None:
    # Must run before TensorFlow is imported; the user's setting wins.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _setup_logging(verbose: bool = False) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(levelname)s: %(message)s" if verbose else "%(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("singan_tf").setLevel(logging.DEBUG if verbose else logging.INFO)


def _fail(message: str, code: int = EXIT_USAGE) -> int:
    print(f"singan-tf: error: {message}", file=sys.stderr)
    return code


def _guarded(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Turn the library's user-facing errors into one line and an exit code."""

    def wrapper(args: argparse.Namespace) -> int:
        try:
            return run(args)
        except (InputError, ConfigError) as err:
            return _fail(str(err))
        except OSError as err:  # a file vanished or cannot be written: say which
            return _fail(f"{err.filename or ''}: {err.strerror or err}".lstrip(": "))
        except NonFiniteLossError as err:
            return _fail(f"{err}; finished scales are kept in the run directory", EXIT_TRAINING_FAILED)
        except KeyboardInterrupt:
            return _fail("interrupted; finished scales are kept in the run directory", EXIT_INTERRUPTED)

    return wrapper


# -- train -----------------------------------------------------------------
def add_train_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", nargs="?", help="training image (default: the bundled rocket.jpg)")
    p.add_argument("--out", "-o", required=True, help="run directory to create (or resume)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out where it stopped")
    p.add_argument(
        "--preset",
        choices=["paper", "quick"],
        help="paper: the paper's settings (default); quick: small and fast (minutes on a CPU)",
    )
    p.add_argument("--max-size", type=int, help="longer side of the finest scale (paper: 250)")
    p.add_argument("--min-size", type=int, help="shorter side of the coarsest scale (paper: 25)")
    p.add_argument("--scale-factor", type=float, help="initial per-scale factor (paper: 0.75)")
    p.add_argument("--iters", type=int, help="iterations per scale (paper: 2000)")
    p.add_argument("--alpha", type=float, help="reconstruction loss weight (paper: 10)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--jit", choices=["auto", "on", "off"], help="XLA compilation of the training step")
    p.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16"],
        help="compute precision (default float32)",
    )
    p.add_argument("--deterministic", action="store_true", help="TF op determinism (reproducible on CPU)")
    p.add_argument("--checkpoint-every", type=int, help="iterations between mid-scale checkpoints (100)")
    p.add_argument("--num-samples", type=int, default=8, help="samples written after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# Config field -> argparse attribute -> option name, for every train option that sets a field.
CONFIG_OPTIONS = [
    ("max_size", "max_size", "--max-size"),
    ("min_size", "min_size", "--min-size"),
    ("scale_factor", "scale_factor", "--scale-factor"),
    ("iters", "iters", "--iters"),
    ("alpha", "alpha", "--alpha"),
    ("seed", "seed", "--seed"),
    ("jit_compile", "jit", "--jit"),
    ("precision", "precision", "--precision"),
    ("checkpoint_every", "checkpoint_every", "--checkpoint-every"),
    ("deterministic", "deterministic", "--deterministic"),
]
OPTION_NAMES = {field: option for field, _, option in CONFIG_OPTIONS}


def explicit_overrides(args: argparse.Namespace) -> dict:
    """Config fields the user set on the command line (a flag left off sets nothing)."""
    values = {field: getattr(args, attr) for field, attr, _ in CONFIG_OPTIONS}
    return {field: v for field, v in values.items() if v is not None and v is not False}


def config_from_args(args: argparse.Namespace):
    from singan_tf.config import TrainConfig

    return TrainConfig.from_preset(args.preset or "paper", **explicit_overrides(args))


def resumed_config(args: argparse.Namespace, stored):
    """The stored config; options given now must agree with it, except runtime ones."""
    from singan_tf.config import PRESETS, RUNTIME_FIELDS

    given = {**(PRESETS[args.preset] if args.preset else {}), **explicit_overrides(args)}
    for name, value in given.items():
        if name not in RUNTIME_FIELDS and getattr(stored, name) != value:
            raise ConfigError(
                f"{OPTION_NAMES.get(name, name)} {value} differs from the run's {getattr(stored, name)}; "
                "a resumed run keeps its settings"
            )
    return stored.replace(**{k: v for k, v in given.items() if k in RUNTIME_FIELDS})


@_guarded
def run_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)  # validate options before loading TensorFlow
    from singan_tf.callbacks import ProgressBar, TensorBoardLogger
    from singan_tf.images import bundled_image, contact_sheet, load_image, save_image
    from singan_tf.pyramid import PyramidGeometry, geometry_for
    from singan_tf.rundir import RunDir
    from singan_tf.training import check_memory, train_pyramid

    run = RunDir(args.out)
    image = None
    if run.exists():
        manifest = run.read_manifest()
        done, total = len(manifest["scales"]), len(manifest["geometry"]["sizes"])
        if not args.resume:
            raise InputError(
                f"{run.path} already holds a run ({done} of {total} scales finished); "
                "add --resume to continue it, or choose another --out"
            )
        if done == total:
            raise InputError(f"{run.path} is complete ({total} scales); nothing to resume")
        config = resumed_config(args, run.read_config())
        geometry = PyramidGeometry.from_dict(manifest["geometry"])
        if args.image:
            image = load_image(args.image)
        log.info("resuming %s: %d of %d scales finished", run.path, done, total)
    else:
        if args.resume:
            raise InputError(f"{run.path}: no run to resume")
        path = Path(args.image) if args.image else bundled_image()
        image = load_image(path)
        geometry = geometry_for(config, image.shape[:2])
        if geometry.working_size != geometry.input_size:
            (h, w), (h0, w0) = geometry.working_size, geometry.input_size
            log.info("%s: %dx%d resized to %dx%d (max size %d)", path.name, w0, h0, w, h, config.max_size)
        log.info(
            "training %d scales on %s (%s preset, %d iterations per scale) into %s",
            geometry.num_scales,
            path.name,
            config.preset,
            config.iters,
            run.path,
        )
    check_memory(config, geometry)
    channels = [config.channels(n) for n in range(geometry.num_scales)]
    callbacks = [TensorBoardLogger(run.logs, run.samples, config.seed)]
    if not args.no_progress:
        callbacks.insert(0, ProgressBar(list(geometry.sizes), channels))
    result = train_pyramid(config, image, run, callbacks, resume=args.resume)
    samples = result.pyramid.sample(args.num_samples, seed=config.seed)
    for i, s in enumerate(samples):
        save_image(s, run.samples / f"sample_{i:03d}.png")
    save_image(contact_sheet(list(samples)), run.samples / "samples.png")
    log.info("done in %.1f min: %s (samples in %s)", result.seconds / 60, run.path, run.samples)
    return 0


# -- sample ----------------------------------------------------------------
def add_sample_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by train")
    p.add_argument("--num", "-n", type=int, default=16, help="number of samples")
    p.add_argument("--scale-h", type=float, default=1.0, help="width multiplier (any aspect)")
    p.add_argument("--scale-v", type=float, default=1.0, help="height multiplier")
    p.add_argument(
        "--start-scale",
        type=int,
        default=0,
        help="scales below this follow the reconstruction (keep the global layout)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--out", "-o", help="output folder (default RUN_DIR/samples/<settings>)")


@_guarded
def run_sample(args: argparse.Namespace) -> int:
    if args.num < 1 or args.batch_size < 1:
        raise ConfigError("--num and --batch-size must be >= 1")
    if args.scale_h <= 0 or args.scale_v <= 0:
        raise ConfigError("--scale-h and --scale-v must be > 0")
    from singan_tf.images import contact_sheet, save_image
    from singan_tf.rundir import load_pyramid

    pyramid = load_pyramid(args.run_dir)
    out = (
        Path(args.out)
        if args.out
        else (
            Path(args.run_dir)
            / "samples"
            / f"h{args.scale_h:g}_v{args.scale_v:g}_start{args.start_scale}_seed{args.seed}"
        )
    )
    samples = pyramid.sample(
        args.num, args.seed, args.scale_h, args.scale_v, args.start_scale, args.batch_size
    )
    for i, s in enumerate(samples):
        save_image(s, out / f"sample_{i:03d}.png")
    save_image(contact_sheet(list(samples)), out / "contact_sheet.png")
    h, w = samples.shape[1:3]
    log.info("wrote %d samples of %dx%d to %s", len(samples), w, h, out)
    return 0


# -- evaluate --------------------------------------------------------------
def add_evaluate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by train")
    p.add_argument("--num", "-n", type=int, default=50, help="number of samples to score")
    p.add_argument("--start-scale", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--inception-weights", help="Keras InceptionV3 (no top) ImageNet weights file, for SIFID")
    p.add_argument("--out", "-o", help="metrics JSON (default RUN_DIR/eval/metrics_start<K>_seed<S>.json)")


@_guarded
def run_evaluate(args: argparse.Namespace) -> int:
    if args.num < 2:
        raise ConfigError("--num must be >= 2 (diversity compares samples)")
    import json

    import numpy as np
    import tensorflow as tf

    from singan_tf import metrics
    from singan_tf.images import atomic_write_bytes
    from singan_tf.rundir import RunDir, load_pyramid

    run = RunDir(args.run_dir)
    pyramid = load_pyramid(run.path)
    image = run.read_image()
    samples = pyramid.sample(args.num, args.seed, start_scale=args.start_scale)
    results = {
        "patch_swd": metrics.patch_swd(samples, image, seed=args.seed),
        "diversity": metrics.diversity(samples, image),
        "reconstruction_rmse": metrics.reconstruction_rmse(pyramid.reconstruct(), image),
    }
    if args.inception_weights:
        scores = metrics.sifid(samples, image, metrics.inception_features(args.inception_weights))
        results["sifid_mean"] = float(np.mean(scores))
        results["sifid_std"] = float(np.std(scores))
    report = {
        "run": str(run.path),
        "num": args.num,
        "start_scale": args.start_scale,
        "seed": args.seed,
        **results,
    }
    out = (
        Path(args.out)
        if args.out
        else run.path / "eval" / f"metrics_start{args.start_scale}_seed{args.seed}.json"
    )
    atomic_write_bytes(out, (json.dumps(report, indent=2) + "\n").encode())
    with tf.summary.create_file_writer(str(run.logs)).as_default(step=args.start_scale):
        for name, value in results.items():
            tf.summary.scalar(f"eval/{name}", value)
    width = max(map(len, results))
    print(f"{'metric':<{width}}  value   ({args.num} samples, start scale {args.start_scale})")
    for name, value in results.items():
        print(f"{name:<{width}}  {value:.4f}")
    log.info("wrote %s", out)
    return 0


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a pyramid on one image", add_train_arguments, run_train),
    "sample": ("draw samples from a trained run directory", add_sample_arguments, run_sample),
    "evaluate": (
        "score a trained run: patch SWD, diversity, reconstruction RMSE, SIFID",
        add_evaluate_arguments,
        run_evaluate,
    ),
}


def _parse_and_run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    _quiet_tensorflow()
    _setup_logging(getattr(args, "verbose", False))
    return args.func(args)


def command_main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m singan_tf.<name>``."""
    help_text, add_args, func = COMMANDS[name]
    parser = argparse.ArgumentParser(prog=f"python -m singan_tf.{name}", description=help_text)
    add_args(parser)
    parser.add_argument("--verbose", "-v", action="store_true")
    parser.set_defaults(func=func)
    return _parse_and_run(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``singan-tf`` / ``python -m singan_tf``."""
    from singan_tf import __version__

    parser = argparse.ArgumentParser(prog="singan-tf", description="SinGAN in TensorFlow / Keras")
    parser.add_argument("--version", action="version", version=f"singan-tf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, add_args, func) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_args(p)
        p.add_argument("--verbose", "-v", action="store_true")
        p.set_defaults(func=func)
    return _parse_and_run(parser, argv)
