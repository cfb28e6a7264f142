"""Injection: an image fed to the pyramid as out_{K-1} and run through scales K..N.

``paint2image`` (paper Fig. 8), ``harmonize`` (Fig. 10) and ``edit``
(Fig. 11); the last two blend the result back into their input with a mask
and may first ``fine_tune`` scales K..N on it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from singan_tf.errors import ConfigError, InputError
from singan_tf.models import PatchCritic, ScaleGenerator, build_generator
from singan_tf.pyramid import Size, downscale, noise_sizes, upsample
from singan_tf.runtime import (
    Choice,
    dtype_policy,
    enable_determinism,
    resolve_precision,
    training_graph_options,
)
from singan_tf.sampling import Pyramid
from singan_tf.training import ScaleTrainer, StepCache

log = logging.getLogger(__name__)


# -- fitting an input image to a run -----------------------------------------
def resize(image: np.ndarray, size: Size) -> np.ndarray:
    """[H, W, C] resized to ``size`` (antialiased bicubic, as the training pyramid), clipped."""
    if tuple(image.shape[:2]) == tuple(size):
        return np.asarray(image, np.float32)
    return tf.clip_by_value(downscale(image, size), -1.0, 1.0).numpy()


def fit_to_pyramid(pyramid: Pyramid, image: np.ndarray, name: str = "input") -> tuple[np.ndarray, float]:
    """The image at the pyramid's output size, and the width factor that keeps its aspect.

    The output has the finest scale's height. An image of the training
    aspect (to within a pixel) gets the finest scale's width; another
    aspect is kept, and the whole pyramid runs ``scale_h`` times as wide
    (the nets are fully convolutional) - said in one log line.

    Returns:
        ([H, W', 3] image, scale_h).
    """
    h, w = image.shape[:2]
    run_h, run_w = pyramid.sizes[-1]
    scale_h = 1.0
    if abs(w * run_h / h - run_w) > 1.0:
        scale_h = (w / h) / (run_w / run_h)
    size = noise_sizes(pyramid.sizes, scale_h)[-1]
    if scale_h != 1.0:
        log.info(
            "%s: aspect %.2f (%dx%d) differs from the run's %.2f (%dx%d); resized to %dx%d, keeping its "
            "aspect (the pyramid runs %.2fx as wide)",
            name,
            w / h,
            w,
            h,
            run_w / run_h,
            run_w,
            run_h,
            size[1],
            size[0],
            scale_h,
        )
    elif (h, w) != size:
        log.info("%s: %dx%d resized to the run's %dx%d", name, w, h, size[1], size[0])
    return resize(image, size), scale_h


# -- paint-to-image ----------------------------------------------------------
def paint2image(
    pyramid: Pyramid, paint: np.ndarray, scale: int, seed: int = 0, noise_scale: float = 1.0
) -> np.ndarray:
    """Turn a paint into an image: inject it at ``scale`` (paper section 4, Fig. 8).

    Args:
        pyramid: a trained pyramid.
        paint: [H, W, 3] in [-1, 1], any size (see ``fit_to_pyramid``).
        scale: K in 1..N; the paint, downscaled to scale K-1's size, replaces
            out_{K-1}. Coarse K keeps only the paint's layout and colours.
        seed: noise of scales K..N.
        noise_scale: multiplies that noise (0: only the learned detail).

    Returns:
        [H, W', 3] float32 at the finest scale's height.
    """
    pyramid.check_injection_scale(scale)
    fitted, scale_h = fit_to_pyramid(pyramid, paint, "paint")
    return pyramid.inject(fitted, scale, seed, noise_scale, scale_h=scale_h)[0]


# -- harmonization and editing -----------------------------------------------
MASK_THRESHOLD = 0.15  # per-channel difference (in [-1, 1] units) that marks a changed pixel


@dataclasses.dataclass(frozen=True)
class MaskShape:
    """How a mask is grown and softened, in fractions of the image's shorter side."""

    dilate: float  # a derived mask grows by this much around the changed pixels
    feather: float  # width of the soft edge inside the mask


HARMONIZE_MASK = MaskShape(dilate=0.03, feather=0.03)
EDIT_MASK = MaskShape(dilate=0.06, feather=0.05)  # edits leave seams wider than a pasted object's


def _radius(size: Size, fraction: float) -> int:
    return max(1, round(min(size) * fraction))


def _max_filter(mask: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1
    return tf.nn.max_pool2d(mask[None], k, 1, "SAME")[0].numpy()


def _box_blur(mask: np.ndarray, radius: int) -> np.ndarray:
    k = 2 * radius + 1  # SAME average pooling averages over the in-image pixels only
    return tf.nn.avg_pool2d(mask[None], k, 1, "SAME")[0].numpy()


def derive_mask(image: np.ndarray, reference: np.ndarray, dilate: int) -> np.ndarray:
    """Where ``image`` differs from ``reference`` (same size): [H, W, 1] of 0/1.

    A pixel counts as changed when its largest per-channel difference,
    averaged over its 3x3 neighbourhood, is above ``MASK_THRESHOLD`` (so lone
    compression-noise pixels do not count); the region is then dilated by
    ``dilate`` pixels to cover the seam.
    """
    diff = np.max(np.abs(image - reference), axis=-1, keepdims=True)
    changed = (_box_blur(diff, 1) > MASK_THRESHOLD).astype(np.float32)
    if not changed.any():
        raise InputError("the input does not differ from the training image; give a --mask")
    return _max_filter(changed, dilate)


def feather(mask: np.ndarray, radius: int) -> np.ndarray:
    """Soften a mask inward: ``mask * blur(mask)``, so it stays exactly 0 where it was 0."""
    return mask * _box_blur(mask, radius)


@dataclasses.dataclass(frozen=True)
class Blended:
    """Result of ``harmonize`` / ``edit``; every array at the output size.

    Attributes:
        image: [H, W, 3] ``mask * generated + (1 - mask) * input``.
        generated: [H, W, 3] the pyramid's output before blending.
        mask: [H, W, 1] blending weights (1: generated, 0: the input's pixel).
        input: [H, W, 3] the naive / edited image at the output size.
    """

    image: np.ndarray
    generated: np.ndarray
    mask: np.ndarray
    input: np.ndarray


def fine_tune(
    pyramid: Pyramid,
    image: np.ndarray,
    scale: int,
    iters: int,
    critics: Sequence[PatchCritic],
    scale_h: float = 1.0,
) -> Pyramid:
    """A copy of ``pyramid`` whose scales ``scale``..N trained ``iters`` more iterations on ``image``.

    Later work (Hinz et al., "Improved techniques for training single-image
    GANs", 2021) fine-tunes on the naive image for better harmonization.
    Each scale n is trained as in training (adversarial + reconstruction,
    same optimizer settings) with ``image`` as x_n and ``up(image_{n-1})`` as
    its reconstruction input, so G_n learns to map the injected image's
    coarser scale to the image. Works on copies: the given pyramid, the
    critics and the run directory stay untouched.

    Args:
        image: [H, W, 3] at the output size (see ``fit_to_pyramid``).
        critics: the run's trained critics D_0..D_N
            (``rundir.load_nets(run, config, n, critics=True)``).
        scale_h: width factor of ``image`` relative to the training size.
    """
    pyramid.check_injection_scale(scale)
    if iters < 1:
        raise ConfigError("fine-tuning needs >= 1 iteration")
    config = pyramid.config.replace(iters=iters, iters_decay=1.0)
    # A run trained with --deterministic fine-tunes as it trained: float32, op determinism.
    precision = "float32" if config.deterministic else resolve_precision(config.precision)
    if config.deterministic:
        enable_determinism()
    sizes = noise_sizes(pyramid.sizes, scale_h)
    reals = [tf.constant(resize(image, size)[None]) for size in sizes]
    generators: list[ScaleGenerator] = list(pyramid.generators)
    tuned = dataclasses.replace(pyramid, generators=generators)  # its scales below n: fine-tuned
    steps = StepCache(config)  # scales of one width share a traced training step
    with training_graph_options():
        for n in range(scale, pyramid.num_scales):
            step = steps.get(config.channels(n), Choice(precision, xla=False))
            step.set_weights(generators[n].get_weights(), critics[n].get_weights())
            step.reset()
            prev = upsample(reals[n - 1], sizes[n])
            coarser = tuned.coarser(n)
            trainer = ScaleTrainer(step, coarser, reals[n], (prev, prev), pyramid.noise_amps[n], scale_h)
            last = trainer.run(0, iters)
            g = build_generator(
                config.channels(n), config.num_layers, config.kernel_size, dtype=dtype_policy(precision)
            )
            g.set_weights(step.generator.get_weights())
            g.trainable = False
            generators[n] = g
            log.info(
                "fine-tuned scale %d for %d iterations (reconstruction RMSE %.4f)", n, iters, last["rec_rmse"]
            )
    return tuned


def inject_and_blend(
    pyramid: Pyramid,
    image: np.ndarray,
    scale: int,
    shape: MaskShape,
    mask: np.ndarray | None = None,
    training_image: np.ndarray | None = None,
    fine_tune_iters: int = 0,
    critics: Sequence[PatchCritic] | None = None,
    seed: int = 0,
    noise_scale: float = 1.0,
    name: str = "input",
) -> Blended:
    """Inject ``image`` at ``scale``, run scales K..N, blend with a mask (``harmonize``, ``edit``).

    A given mask is resized to the output size if needed and used as is,
    only feathered inward: where it is 0, the result is exactly the input's
    pixel. Without a mask, one is derived from the difference to
    ``training_image`` and dilated (``shape``).
    """
    pyramid.check_injection_scale(scale)
    if fine_tune_iters and critics is None:
        raise ConfigError("fine-tuning needs the run's critics")
    fitted, scale_h = fit_to_pyramid(pyramid, image, name)
    size = fitted.shape[:2]
    if mask is not None:
        if mask.shape[:2] != image.shape[:2]:
            log.info(
                "mask: %dx%d resized to the %s's %dx%d",
                mask.shape[1],
                mask.shape[0],
                name,
                *image.shape[1::-1],
            )
        mask = tf.clip_by_value(tf.image.resize(mask, size, "bilinear"), 0.0, 1.0).numpy()
        if not mask.any():
            raise InputError("the mask is empty (all black); white marks the region to change")
    elif training_image is None:
        raise ConfigError("without a mask, the training image is needed to derive one")
    elif scale_h != 1.0:
        raise InputError(f"the {name}'s aspect differs from the training image's; give a --mask")
    else:
        mask = derive_mask(fitted, resize(training_image, size), _radius(size, shape.dilate))
        log.info(
            "mask: derived from the difference to the training image (%.1f%% of the pixels)",
            100 * mask.mean(),
        )
    if fine_tune_iters:
        pyramid = fine_tune(pyramid, fitted, scale, fine_tune_iters, critics, scale_h)
    generated = pyramid.inject(fitted, scale, seed, noise_scale, scale_h=scale_h)[0]
    weights = feather(mask, _radius(size, shape.feather))
    blended = weights * generated + (1.0 - weights) * fitted
    return Blended(image=blended, generated=generated, mask=weights, input=fitted)


def harmonize(
    pyramid: Pyramid, naive: np.ndarray, scale: int, mask: np.ndarray | None = None, **kwargs
) -> Blended:
    """Harmonize an object pasted onto the training image (paper Fig. 10).

    Args:
        naive: [H, W, 3] the training image with the pasted object.
        scale: K, a mid scale: the object's layout is kept, its colours and
            texture are redrawn from the training image's patches.
        mask: [H, W, 1] in [0, 1] (1 = the object), or None to derive it from
            ``training_image=``.
        **kwargs: ``training_image``, ``fine_tune_iters``, ``critics``,
            ``seed``, ``noise_scale`` (see ``inject_and_blend``).
    """
    return inject_and_blend(pyramid, naive, scale, HARMONIZE_MASK, mask, name="naive image", **kwargs)


def edit(
    pyramid: Pyramid, edited: np.ndarray, scale: int, mask: np.ndarray | None = None, **kwargs
) -> Blended:
    """Blend a copy-paste edit of the training image into it (paper Fig. 11); as ``harmonize``,
    with a wider derived mask and soft edge."""
    return inject_and_blend(pyramid, edited, scale, EDIT_MASK, mask, name="edited image", **kwargs)
