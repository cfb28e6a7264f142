"""Command-line interfaces: ``train``, ``sample``, ``evaluate`` and the applications
``paint2image``, ``harmonize``, ``edit``, ``sr``, ``animate``.

Reach them as ``python -m singan_tf <command>`` or the ``singan-tf <command>``
script (``train``, ``sample`` and ``evaluate`` also as ``python -m singan_tf.train`` etc.).
The CLIs only parse arguments into a ``TrainConfig`` / call the library;
user mistakes end with one line on stderr and exit code 2. Each command checks
its options and input files before it loads TensorFlow (``_load_tensorflow``),
so a mistake is answered at once.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from singan_tf import preflight
from singan_tf.config import OPTION_NAMES, option_name
from singan_tf.errors import ConfigError, InputError, NonFiniteLossError
from singan_tf.preflight import (
    ArgumentParser,
    check_animation_path,
    check_injection_scale,
    check_start_scale,
    check_walk,
    import_tensorflow,
    manifest_path,
    read_config,
    read_manifest,
    trained_manifest,
    trained_scales,
)

log = logging.getLogger("singan_tf")

EXIT_USAGE = 2
EXIT_TRAINING_FAILED = 1
EXIT_INTERRUPTED = 130


def _trains_deterministic_run(args: argparse.Namespace) -> bool:
    """Whether the command trains more of a run made with --deterministic: ``train --resume``,
    or ``harmonize`` / ``edit`` with ``--fine-tune``."""
    if getattr(args, "resume", False):
        run = args.out
    elif getattr(args, "fine_tune", 0) and getattr(args, "run_dir", None):
        run = args.run_dir
    else:
        return False
    try:
        return preflight.read_config(run).deterministic
    except (ConfigError, InputError):
        return False  # the command's own checks report the run


def _prepare_tensorflow(args: argparse.Namespace) -> None:
    # Must run before TensorFlow is imported; the user's settings win.
    if getattr(args, "deterministic", False) or _trains_deterministic_run(args):
        # oneDNN's multi-threaded kernels differ run to run in the last bits (and GAN
        # training amplifies that); TensorFlow's own CPU kernels with op determinism do not.
        os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    if hasattr(args, "jit"):  # a command that trains: XLA's programs of earlier runs are reused
        from singan_tf.runtime import enable_xla_cache

        enable_xla_cache(quiet=not args.verbose)


def _load_tensorflow(args: argparse.Namespace) -> None:
    """Load TensorFlow (quietly unless --verbose): call once the command's own checks passed."""
    import_tensorflow(args.verbose)


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
    add_config_arguments(p)
    p.add_argument("--num-samples", type=int, default=8, help="samples written after training")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    """The options that set ``TrainConfig`` fields (``CONFIG_OPTIONS``)."""
    p.add_argument(
        "--preset",
        choices=["paper", "quick", "fast"],
        help="paper: the paper's settings (default); fast: the paper's pyramid with 32-channel nets, "
        "1000 iterations at the coarsest scale falling 0.8x per scale, G_{n-1} trained along with G_n "
        "(--concurrent 2) and the machine's fastest precision (README.md: its measured times); "
        "quick: small and fast (minutes on a CPU)",
    )
    p.add_argument("--max-size", type=int, help="longer side of the finest scale (paper: 250)")
    p.add_argument("--min-size", type=int, help="shorter side of the coarsest scale (paper: 25)")
    p.add_argument("--scale-factor", type=float, help="initial per-scale factor (paper: 0.75)")
    p.add_argument("--iters", type=int, help="iterations per scale (paper: 2000), or at the coarsest")
    p.add_argument(
        "--iters-decay",
        type=float,
        help="scale n trains iters * decay**n iterations (paper: 1, the same at every scale)",
    )
    p.add_argument(
        "--concurrent",
        type=int,
        choices=[1, 2],
        help="scales trained at once (paper: 1, fast preset: 2); 2 trains G_{n-1} along with G_n "
        "through scale n's losses, as ConSinGAN does",
    )
    p.add_argument(
        "--concurrent-lr",
        type=float,
        help="with --concurrent 2: G_{n-1}'s learning rate as a fraction of G_n's (default 0.1)",
    )
    p.add_argument("--alpha", type=float, help="reconstruction loss weight (paper: 10)")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument(
        "--jit",
        choices=["auto", "on", "off"],
        help="XLA compilation of the training step (auto: timed per scale where XLA can use the cores)",
    )
    p.add_argument(
        "--precision",
        choices=["float32", "mixed_bfloat16", "mixed_float16", "auto"],
        help="compute precision (default float32, the paper's; bfloat16 for CPUs with bfloat16 dot "
        "products and Ampere+ GPUs, float16 with loss scaling for GPUs; auto: timed here per scale, "
        "the fastest kept)",
    )
    p.add_argument("--deterministic", action="store_true", help="TF op determinism (reproducible on CPU)")
    p.add_argument("--checkpoint-every", type=int, help="iterations between mid-scale checkpoints (100)")
    p.add_argument(
        "--cpu-threads",
        default="auto",
        metavar="auto|tf|INTRA,INTER",
        help="CPU thread pools (speed only). auto: timed here, one thread per op with one op per core "
        "at a time, or TensorFlow's own pools; tf: TensorFlow's pools; INTRA,INTER: threads per op, "
        "ops at a time",
    )


# Config field -> argparse attribute -> option name, for every train option that sets a field.
CONFIG_OPTIONS = [(field, option[2:].replace("-", "_"), option) for field, option in OPTION_NAMES.items()]


def explicit_overrides(args: argparse.Namespace) -> dict:
    """Config fields the user set on the command line (a flag left off sets nothing)."""
    values = {field: getattr(args, attr) for field, attr, _ in CONFIG_OPTIONS}
    return {field: v for field, v in values.items() if v is not None and v is not False}


def config_from_args(args: argparse.Namespace):
    from singan_tf.config import TrainConfig

    return TrainConfig.from_preset(args.preset or "paper", **explicit_overrides(args))


def resumed_config(args: argparse.Namespace, stored):
    """The stored config; options given now must agree with it, except runtime ones."""
    from singan_tf.config import PRESETS

    given = {**(PRESETS[args.preset] if args.preset else {}), **explicit_overrides(args)}
    return preflight.resumed_config(stored, given)


def _configure_threads(args: argparse.Namespace, config, geometry) -> None:
    """The CPU thread pools for training (measured for ``auto``): before TensorFlow runs its first op."""
    from singan_tf.tune import configure_threads

    configure_threads(args.cpu_threads, config, geometry)


def new_geometry(config, image, name: str):
    """The pyramid geometry of a new run on ``image``; says so if the image gets downscaled."""
    from singan_tf.pyramid import geometry_for

    geometry = geometry_for(config, image.shape[:2])
    if geometry.working_size != geometry.input_size:
        (h, w), (h0, w0) = geometry.working_size, geometry.input_size
        log.info("%s: %dx%d resized to %dx%d (max size %d)", name, w0, h0, w, h, config.max_size)
    return geometry


def train_with_feedback(config, image, run, geometry, resume: bool, progress: bool):
    """Check memory, then ``train_pyramid`` with progress bars and TensorBoard logging."""
    from singan_tf.callbacks import ProgressBar, TensorBoardLogger
    from singan_tf.training import train_pyramid

    scales = range(geometry.num_scales)
    channels = [config.channels(n) for n in scales]
    callbacks = [TensorBoardLogger(run.logs, run.samples, config.seed)]
    if progress:
        iters = [config.scale_iters(n) for n in scales]
        callbacks.insert(0, ProgressBar(list(geometry.sizes), channels, iters))
    return train_pyramid(config, image, run, callbacks, resume=resume)


@_guarded
def run_train(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    if args.num_samples < 1:
        raise ConfigError("--num-samples must be >= 1")
    from singan_tf.images import bundled_image, load_image
    from singan_tf.runtime import check_thread_setting

    check_thread_setting(args.cpu_threads)
    out = Path(args.out)
    manifest = preflight.check_training_target(out, args.resume)
    existing = manifest is not None
    if existing:
        done, total = len(manifest["scales"]), len(manifest["geometry"]["sizes"])
    path = Path(args.image) if args.image else (None if existing else bundled_image())
    image = load_image(path) if path else None  # a resumed run trains on the image it stored
    from singan_tf.pyramid import PyramidGeometry

    if existing:
        geometry = PyramidGeometry.from_dict(manifest["geometry"])
        config = resumed_config(args, read_config(out))
    else:
        geometry = new_geometry(config, image, path.name)
    _load_tensorflow(args)
    from singan_tf.images import contact_sheet, save_image
    from singan_tf.rundir import RunDir
    from singan_tf.runtime import check_memory

    run = RunDir(out)
    if existing:
        log.info("resuming %s: %d of %d scales finished", run.path, done, total)
    else:
        first, last = config.scale_iters(0), config.scale_iters(geometry.num_scales - 1)
        log.info(
            "training %d scales on %s (%s preset, %s iterations per scale) into %s",
            geometry.num_scales,
            path.name,
            config.preset,
            first if first == last else f"{first} down to {last}",
            run.path,
        )
    check_memory(config, geometry)
    _configure_threads(args, config, geometry)
    result = train_with_feedback(config, image, run, geometry, args.resume, not args.no_progress)
    samples = result.pyramid.sample(args.num_samples, seed=config.seed)
    for i, s in enumerate(samples):
        save_image(s, run.samples / f"sample_{i:03d}.png")
    save_image(contact_sheet(list(samples)), run.samples / "samples.png")
    log.info("done in %.1f min: %s (samples in %s)", result.seconds / 60, run.path, run.samples)
    return 0


# -- train-many ------------------------------------------------------------
def add_train_many_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", "-o", required=True, help="batch folder: one run directory per image")
    add_config_arguments(p)
    p.add_argument("--engine", choices=["local", "ray"], default="local", help="where the runs train")
    p.add_argument("--address", help="Ray cluster address to join (default: start a local one)")
    p.add_argument(
        "--workers",
        type=int,
        help="runs side by side (local; default: one per core, each pinned to its core), or the share "
        "of the cores each Ray task declares (cores / workers)",
    )
    p.add_argument(
        "--evaluate",
        type=int,
        nargs="?",
        const=50,
        default=0,
        metavar="N",
        help="score each finished run on N samples (default 50): SWD, band-pass SWD, diversity",
    )
    p.add_argument("--no-progress", action="store_true", help="one line per finished run instead of a bar")


@_guarded
def run_train_many(args: argparse.Namespace) -> int:
    from singan_tf import batch

    config_from_args(args)  # the options' values, checked once for every run
    if args.cpu_threads != "auto":
        raise ConfigError("train-many sizes each run's threads; leave --cpu-threads out")
    if args.engine == "local" and args.address:
        raise ConfigError("--address joins a Ray cluster; add --engine ray")
    overrides = explicit_overrides(args)
    train_args = batch.train_arguments(args.preset, **overrides)
    summary = batch.train_many(
        args.images,
        args.out,
        train_args,
        engine=args.engine,
        workers=args.workers,
        address=args.address,
        evaluate=args.evaluate,
        progress=not args.no_progress,
    )
    print(batch.table(summary))
    log.info("summary: %s", Path(args.out) / batch.SUMMARY_FILE)
    return batch.exit_code(summary)


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


def _check_sample_size(args: argparse.Namespace) -> None:
    if args.scale_h <= 0 or args.scale_v <= 0:
        raise ConfigError("--scale-h and --scale-v must be > 0")


@_guarded
def run_sample(args: argparse.Namespace) -> int:
    if args.num < 1 or args.batch_size < 1:
        raise ConfigError("--num and --batch-size must be >= 1")
    _check_sample_size(args)
    check_start_scale(args.start_scale, trained_scales(args.run_dir))
    _load_tensorflow(args)
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
    from singan_tf import evaluation

    evaluation.check_evaluation(args.run_dir, args.num, args.start_scale, None, args.inception_weights)
    _load_tensorflow(args)
    report = evaluation.evaluate(
        args.run_dir, args.num, args.seed, args.start_scale, inception_weights=args.inception_weights
    )
    out = args.out or evaluation.default_report_path(args.run_dir, args.start_scale, args.seed)
    from singan_tf.rundir import RunDir

    evaluation.write_report(report, out, logs=RunDir(args.run_dir).logs)
    results = evaluation.scalars(report)
    width = max(map(len, results))
    print(f"{'metric':<{width}}  value   ({args.num} samples, start scale {args.start_scale})")
    for name, value in results.items():
        print(f"{name:<{width}}  {value:.4f}")
    log.info("wrote %s", out)
    return 0


# -- applications (paper section 4) ---------------------------------------------
def _wrote(paths: Sequence[Path], what: str) -> None:
    log.info("wrote %s: %s", what, ", ".join(str(p) for p in paths))


def _add_injection_arguments(p: argparse.ArgumentParser, flag: str, what: str, blend: bool) -> None:
    p.add_argument("run_dir", help="a run directory written by train")
    p.add_argument(flag, dest="image", required=True, help=f"{what} (any size)")
    if blend:
        p.add_argument(
            "--mask",
            help="white where the image may change (default: where it differs from the training image)",
        )
    p.add_argument(
        "--inject-scale",
        type=int,
        required=True,
        help="K in 1..N: the image, downscaled to scale K-1's size, is fed to scales K..N",
    )
    if blend:
        p.add_argument(
            "--fine-tune",
            type=int,
            default=0,
            metavar="ITERS",
            help="first train scales K..N ITERS iterations on the image (in memory; the run stays unchanged)",
        )
    p.add_argument("--seed", type=int, default=0, help="noise of scales K..N")
    p.add_argument("--noise-scale", type=float, default=1.0, help="multiplies that noise (0: none)")
    p.add_argument("--out", "-o", required=True, help="output image (.png)")


def add_paint2image_arguments(p: argparse.ArgumentParser) -> None:
    _add_injection_arguments(p, "--paint", "a paint or clipart", blend=False)


def add_harmonize_arguments(p: argparse.ArgumentParser) -> None:
    _add_injection_arguments(p, "--naive", "the training image with an object pasted in", blend=True)


def add_edit_arguments(p: argparse.ArgumentParser) -> None:
    _add_injection_arguments(p, "--edited", "the training image with regions copied or moved", blend=True)


def _check_injection_options(args: argparse.Namespace) -> None:
    if args.noise_scale < 0:
        raise ConfigError("--noise-scale must be >= 0")
    if getattr(args, "fine_tune", 0) < 0:
        raise ConfigError("--fine-tune must be >= 0")


@_guarded
def run_paint2image(args: argparse.Namespace) -> int:
    _check_injection_options(args)
    from singan_tf.images import load_image, save_image

    paint = load_image(args.image)
    check_injection_scale(args.inject_scale, trained_scales(args.run_dir))
    _load_tensorflow(args)
    from singan_tf.applications import paint2image
    from singan_tf.rundir import load_pyramid

    image = paint2image(load_pyramid(args.run_dir), paint, args.inject_scale, args.seed, args.noise_scale)
    _wrote([save_image(image, args.out)], f"{image.shape[1]}x{image.shape[0]} image")
    return 0


def _run_blend(args: argparse.Namespace, task: str) -> int:
    """harmonize / edit: inject, run scales K..N, blend; writes OUT, OUT_unblended, OUT_mask."""
    _check_injection_options(args)
    from singan_tf.images import load_image, load_mask, save_image

    image = load_image(args.image)
    mask = load_mask(args.mask) if args.mask else None
    check_injection_scale(args.inject_scale, trained_scales(args.run_dir))
    _load_tensorflow(args)
    import numpy as np

    from singan_tf import applications
    from singan_tf.rundir import RunDir, load_nets, load_pyramid

    run = RunDir(args.run_dir)
    pyramid = load_pyramid(run.path)
    critics = load_nets(run, pyramid.config, pyramid.num_scales, critics=True) if args.fine_tune else None
    result = getattr(applications, task)(
        pyramid,
        image,
        args.inject_scale,
        mask,
        training_image=run.read_image(),
        fine_tune_iters=args.fine_tune,
        critics=critics,
        seed=args.seed,
        noise_scale=args.noise_scale,
    )
    out = Path(args.out)
    written = [
        save_image(result.image, out),
        save_image(result.generated, out.with_name(f"{out.stem}_unblended{out.suffix}")),
        save_image(
            np.repeat(result.mask * 2.0 - 1.0, 3, axis=-1), out.with_name(f"{out.stem}_mask{out.suffix}")
        ),
    ]
    _wrote(written, f"{result.image.shape[1]}x{result.image.shape[0]} {task} result, unblended, mask")
    return 0


@_guarded
def run_harmonize(args: argparse.Namespace) -> int:
    return _run_blend(args, "harmonize")


@_guarded
def run_edit(args: argparse.Namespace) -> int:
    return _run_blend(args, "edit")


def add_sr_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "source",
        help="the low-resolution image (trains an SR pyramid into --out first), "
        "or a run directory trained by sr (then only upsamples)",
    )
    p.add_argument("--factor", "-f", type=float, required=True, help="upscaling factor F > 1")
    p.add_argument(
        "--out",
        "-o",
        help="with an image: the run directory to train into (required; an existing SR run there is "
        "resumed or reused); with a run directory: the output image (default RUN/sr_x<F>.png)",
    )
    add_config_arguments(p)
    p.add_argument("--noise-scale", type=float, default=1.0, help="multiplies the upsampling steps' noise")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _train_sr(args: argparse.Namespace):
    """Train (or resume, or reuse) the SR pyramid of ``args.source`` in ``args.out``."""
    if not args.out:
        raise ConfigError("--out RUN_DIR is required to train on an image")
    if args.scale_factor is not None:
        raise ConfigError("sr derives the scale factor from --factor; leave --scale-factor out")
    base = config_from_args(args)
    from singan_tf.images import load_image
    from singan_tf.pyramid import SR_ALPHA, PyramidGeometry, sr_config

    image = load_image(args.source)
    config = sr_config(base, args.factor, SR_ALPHA if args.alpha is None else args.alpha)
    out = Path(args.out)
    existing = manifest_path(out).is_file()
    complete = False
    if existing:
        manifest = read_manifest(out)
        geometry = PyramidGeometry.from_dict(manifest["geometry"])
        complete = len(manifest["scales"]) == geometry.num_scales
        if complete:
            log.info("%s already holds this SR run; only upsampling", out)
    else:
        geometry = new_geometry(config, image, Path(args.source).name)
        log.info(
            "training an SR pyramid (%d scales, alpha %g, scale factor %.4f, effective %.4f) into %s",
            geometry.num_scales,
            config.alpha,
            config.scale_factor,
            geometry.scale_factor,
            out,
        )
    _load_tensorflow(args)
    from singan_tf.rundir import RunDir

    run = RunDir(out)
    if not complete:  # training's thread pools; upsampling alone keeps TensorFlow's
        from singan_tf.runtime import check_memory

        check_memory(config, geometry)
        _configure_threads(args, config, geometry)
    if complete:  # checked against the image and settings, loaded; no new logs
        from singan_tf.training import train_pyramid

        result = train_pyramid(config, image, run, resume=True)
    else:
        result = train_with_feedback(config, image, run, geometry, existing, not args.no_progress)
    return result.pyramid, run.read_image(), run.path / f"sr_x{args.factor:g}.png"


@_guarded
def run_sr(args: argparse.Namespace) -> int:
    if args.noise_scale < 0:
        raise ConfigError("--noise-scale must be >= 0")
    from singan_tf.pyramid import SR_ALPHA, sr_steps

    k, r = sr_steps(args.factor)
    source = Path(args.source)
    if source.is_dir():
        given = sorted(option_name(f) for f in explicit_overrides(args) if f != "seed")
        if given or args.preset:
            raise ConfigError(
                f"{source} is a trained run; training options ({', '.join(given) or '--preset'}) do not apply"
            )
        trained_manifest(source)
        _load_tensorflow(args)
        from singan_tf.rundir import RunDir, load_pyramid

        pyramid = load_pyramid(source)
        image = RunDir(source).read_image()
        out = Path(args.out) if args.out else source / f"sr_x{args.factor:g}.png"
        config = pyramid.config
        if config.alpha != SR_ALPHA or abs(config.scale_factor - r) > 1e-6:
            log.info(
                "%s was trained with alpha %g and scale factor %.4f, not the SR settings for x%g "
                "(alpha %g, %.4f); upsampling anyway",
                source,
                config.alpha,
                config.scale_factor,
                args.factor,
                SR_ALPHA,
                r,
            )
    else:
        pyramid, image, out = _train_sr(args)
    from singan_tf.applications import super_resolve
    from singan_tf.images import save_image

    result = super_resolve(pyramid, image, args.factor, args.seed or 0, args.noise_scale)
    (h, w), (h2, w2) = image.shape[:2], result.shape[:2]
    _wrote([save_image(result, out)], f"{w}x{h} -> {w2}x{h2} (x{args.factor:g} in {k} steps of {1 / r:.4f})")
    return 0


def add_animate_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("run_dir", help="a run directory written by train")
    p.add_argument("--frames", "-t", type=int, default=48, help="number of frames")
    p.add_argument(
        "--start-scale",
        type=int,
        required=True,
        help="K in 1..N+1: the noise of scales below K moves, finer scales keep fixed noise",
    )
    p.add_argument("--alpha", type=float, default=0.1, help="pull toward the reconstruction noise per frame")
    p.add_argument("--beta", type=float, default=0.9, help="momentum of the walk (higher: smoother)")
    p.add_argument("--scale-h", type=float, default=1.0, help="width multiplier (any size)")
    p.add_argument("--scale-v", type=float, default=1.0, help="height multiplier")
    p.add_argument("--fps", type=float, default=10.0, help="frames per second")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", "-o", required=True, help="anim.gif, or anim.mp4 (needs imageio-ffmpeg)")


@_guarded
def run_animate(args: argparse.Namespace) -> int:
    if args.fps <= 0:
        raise ConfigError("--fps must be > 0")
    _check_sample_size(args)
    check_animation_path(args.out)
    check_walk(args.frames, args.start_scale, trained_scales(args.run_dir), args.alpha, args.beta)
    _load_tensorflow(args)
    from singan_tf.applications import animate
    from singan_tf.images import write_animation
    from singan_tf.rundir import load_pyramid

    walk = {
        "alpha": args.alpha,
        "beta": args.beta,
        "seed": args.seed,
        "scale_h": args.scale_h,
        "scale_v": args.scale_v,
    }
    frames = animate(load_pyramid(args.run_dir), args.frames, args.start_scale, **walk)
    info = {"run": str(args.run_dir), "start_scale": args.start_scale, **walk}
    written = write_animation(frames, args.out, args.fps, info)
    _wrote(written, f"{len(frames)} frames of {frames.shape[2]}x{frames.shape[1]} at {args.fps:g} fps")
    return 0


def add_tune_arguments(p: argparse.ArgumentParser) -> None:
    from singan_tf.tune import add_arguments

    add_arguments(p)


@_guarded
def run_tune(args: argparse.Namespace) -> int:
    from singan_tf.tune import run

    return run(args)


COMMANDS: dict[str, tuple[str, Callable, Callable]] = {
    "train": ("train a pyramid on one image", add_train_arguments, run_train),
    "train-many": (
        "train one pyramid per image of a folder or list, locally or on a Ray cluster; resumable",
        add_train_many_arguments,
        run_train_many,
    ),
    "sample": ("draw samples from a trained run directory", add_sample_arguments, run_sample),
    "tune": (
        "time the training step for every precision / thread / XLA choice, and show what auto picks",
        add_tune_arguments,
        run_tune,
    ),
    "evaluate": (
        "score a trained run: patch SWD, diversity, reconstruction RMSE, SIFID",
        add_evaluate_arguments,
        run_evaluate,
    ),
    "paint2image": (
        "turn a paint or clipart into an image of the run's kind (inject at a coarse scale)",
        add_paint2image_arguments,
        run_paint2image,
    ),
    "harmonize": (
        "harmonize an object pasted onto the training image (inject, blend with a mask)",
        add_harmonize_arguments,
        run_harmonize,
    ),
    "edit": (
        "blend a copy-paste edit of the training image (inject, blend with a mask)",
        add_edit_arguments,
        run_edit,
    ),
    "sr": ("super-resolution: train an SR pyramid on an image, then upsample it", add_sr_arguments, run_sr),
    "animate": (
        "a short animation (GIF/MP4) from a random walk in the coarse noise",
        add_animate_arguments,
        run_animate,
    ),
}


def _add_command(parser: argparse.ArgumentParser, name: str) -> None:
    _, add_args, func = COMMANDS[name]
    add_args(parser)
    parser.add_argument(
        "--verbose", "-v", action="store_true", help="debug logging, and TensorFlow's own log lines"
    )
    parser.set_defaults(func=func)


def _parse_and_run(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    args = parser.parse_args(argv)
    _prepare_tensorflow(args)
    _setup_logging(args.verbose)
    return args.func(args)


def command_main(name: str, argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m singan_tf.<name>``."""
    parser = ArgumentParser(prog=f"python -m singan_tf.{name}", description=COMMANDS[name][0])
    _add_command(parser, name)
    return _parse_and_run(parser, argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``singan-tf`` / ``python -m singan_tf``."""
    from singan_tf import __version__

    parser = ArgumentParser(prog="singan-tf", description="SinGAN in TensorFlow / Keras")
    parser.add_argument("--version", action="version", version=f"singan-tf {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (help_text, _, _) in COMMANDS.items():
        _add_command(sub.add_parser(name, help=help_text, description=help_text), name)
    return _parse_and_run(parser, argv)
