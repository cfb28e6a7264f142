"""Quality metrics without downloads (docs/design.md §12), plus SIFID.

Every metric is a small function of numpy images in [-1, 1], [N, H, W, 3]
or [H, W, 3]. ``METRICS`` registers each under a name with one calling
convention (``MetricInputs`` in, named floats out), which
``singan_tf.evaluation.evaluate`` runs on a run directory.

* ``patch_swd``: sliced Wasserstein distance between 7x7 patch
  distributions of samples and the training image, per level of a
  Gaussian pyramid (coarse levels: layout, fine levels: texture), averaged.
* ``bandpass_swd``: the same per band of a Laplacian pyramid (Karras et
  al. 2018): each band holds one octave of detail, so blur shows in the
  finest band, where a Gaussian level's low frequencies hide it.
* ``diversity``: mean per-pixel std across samples / the image's std.
* ``reconstruction_rmse``: RMSE of the finest-scale reconstruction.
* ``sifid``: single-image FID (the paper's), with Inception-V3 features
  right before the second max-pool (192 channels), from a weights file the
  user supplies (ImageNet weights cannot be downloaded here).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from singan_tf.errors import ConfigError, InputError


def _batch(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images, np.float32)
    return images[None] if images.ndim == 3 else images


def _blur_down(x: np.ndarray) -> np.ndarray:
    """One Gaussian-pyramid step: [1 4 6 4 1]/16 blur (reflect), then halve."""
    k = np.array([1, 4, 6, 4, 1], np.float32) / 16
    pad = np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    rows = sum(k[i] * pad[:, i : i + x.shape[1]] for i in range(5))
    cols = sum(k[i] * rows[:, :, i : i + x.shape[2]] for i in range(5))
    return cols[:, ::2, ::2]


def gaussian_pyramid(images: np.ndarray, levels: int) -> list[np.ndarray]:
    """Finest first; stops early when a level gets smaller than 16 pixels."""
    out = [_batch(images)]
    while len(out) < levels and min(out[-1].shape[1:3]) >= 32:
        out.append(_blur_down(out[-1]))
    return out


def _patches(images: np.ndarray, size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """``count`` random ``size`` x ``size`` patches, flattened: [count, size*size*3]."""
    windows = sliding_window_view(images, (size, size), axis=(1, 2))  # [N, h', w', 3, s, s]
    n, h, w = windows.shape[:3]
    idx = rng.integers(0, [n, h, w], size=(count, 3))
    return windows[idx[:, 0], idx[:, 1], idx[:, 2]].reshape(count, -1)


def sliced_wasserstein(a: np.ndarray, b: np.ndarray, projections: int, rng: np.random.Generator) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance (equal counts)."""
    dirs = rng.standard_normal((a.shape[1], projections)).astype(np.float32)
    dirs /= np.linalg.norm(dirs, axis=0, keepdims=True)
    pa, pb = np.sort(a @ dirs, axis=0), np.sort(b @ dirs, axis=0)
    return float(np.mean(np.abs(pa - pb)))


def patch_swd(samples: np.ndarray, image: np.ndarray, **options) -> float:
    """Patch sliced-Wasserstein distance (lower is better; 0 for identical images).

    The mean over Gaussian-pyramid levels of ``patch_swd_levels`` (same options).
    """
    return float(np.mean(patch_swd_levels(samples, image, **options)))


def patch_swd_levels(
    samples: np.ndarray,
    image: np.ndarray,
    patch: int = 7,
    levels: int = 3,
    patches_per_level: int = 4096,
    projections: int = 128,
    seed: int = 0,
) -> list[float]:
    """Patch SWD per Gaussian-pyramid level, finest first (texture ... layout).

    ``levels`` levels at most (fewer for small images); at each, the sliced
    Wasserstein distance between ``patches_per_level`` random ``patch`` x
    ``patch`` patches of the samples and of the image, over ``projections``
    random directions. Patches of both sets are normalised with the training
    image's per-level mean and std, so the distance is in units of the
    image's own contrast.
    """
    rng = np.random.default_rng(seed)
    ref_levels = gaussian_pyramid(image, levels)
    gen_levels = gaussian_pyramid(samples, len(ref_levels))
    dists = []
    for ref, gen in zip(ref_levels, gen_levels, strict=True):
        if min(ref.shape[1:3]) < patch or min(gen.shape[1:3]) < patch:
            break
        a = _patches(ref, patch, patches_per_level, rng)
        b = _patches(gen, patch, patches_per_level, rng)
        mean, std = a.mean(axis=0), a.std() + 1e-8
        dists.append(sliced_wasserstein((a - mean) / std, (b - mean) / std, projections, rng))
    return dists


def _blur_up(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Inverse of ``_blur_down``: zeros between the pixels, the same blur with 4x its gain, cropped."""
    k = np.array([1, 4, 6, 4, 1], np.float32) / 8  # /16 per axis, x2 per axis for the zeros
    up = np.zeros((x.shape[0], 2 * x.shape[1], 2 * x.shape[2], x.shape[3]), np.float32)
    up[:, ::2, ::2] = x
    pad = np.pad(up, ((0, 0), (2, 2), (2, 2), (0, 0)), mode="reflect")
    rows = sum(k[i] * pad[:, i : i + up.shape[1]] for i in range(5))
    cols = sum(k[i] * rows[:, :, i : i + up.shape[2]] for i in range(5))
    return cols[:, : size[0], : size[1]]


def laplacian_pyramid(images: np.ndarray, min_size: int = 16) -> list[np.ndarray]:
    """Band-pass levels, finest first: ``G_k - up(G_{k+1})``, then the low-pass residual.

    ``G`` is the Gaussian pyramid of ``_blur_down``, halved while the shorter
    side stays at least ``min_size`` (Karras et al. 2018 stop at 16 px). The
    bands sum back to the image: ``up`` of each coarser level plus its band.
    """
    gauss = [_batch(images)]
    while min(gauss[-1].shape[1:3]) // 2 >= min_size:
        gauss.append(_blur_down(gauss[-1]))
    bands = [
        fine - _blur_up(coarse, fine.shape[1:3]) for fine, coarse in zip(gauss[:-1], gauss[1:], strict=True)
    ]
    return bands + [gauss[-1]]


def _neighbourhoods(images: np.ndarray, size: int, count: int, seed: list[int]) -> np.ndarray:
    """``count`` random ``size`` x ``size`` neighbourhoods; the same positions for inputs of one shape."""
    return _patches(images, size, count, np.random.default_rng(seed))


def bandpass_swd(
    samples: np.ndarray,
    image: np.ndarray,
    patch: int = 7,
    patches_per_band: int = 4096,
    projections: int = 128,
    repeats: int = 4,
    seed: int = 0,
) -> list[float]:
    """Sliced Wasserstein distance per Laplacian-pyramid band, finest first (lower is better).

    As Karras et al. ("Progressive Growing of GANs", 2018, section 5): 7x7
    neighbourhoods of every band of the samples and of the image, the SWD
    between the two sets over ``repeats`` x ``projections`` random directions,
    one distance per band. A band holds one octave of detail, so a sample
    that lost its finest detail (blur) scores badly in the finest band even
    though its low frequencies, which dominate a Gaussian level's patches,
    still match. Unlike Karras et al., who normalise each set by its own
    per-channel mean and std, both sets are normalised by the image's: a
    band that lost its energy must not be scaled back up.
    """
    ref_bands = laplacian_pyramid(image)
    gen_bands = laplacian_pyramid(samples)[: len(ref_bands)]
    rng = np.random.default_rng([seed, 1])
    dists = []
    for band, (ref, gen) in enumerate(zip(ref_bands, gen_bands, strict=False)):
        if min(ref.shape[1:3]) < patch or min(gen.shape[1:3]) < patch:
            break
        a = _neighbourhoods(ref, patch, patches_per_band, [seed, band])
        b = _neighbourhoods(gen, patch, patches_per_band, [seed, band])
        channels = a.reshape(len(a), 3, -1)  # [count, 3, patch*patch]: windows are channel-major
        mean = channels.mean(axis=(0, 2)).repeat(patch * patch)
        std = channels.std(axis=(0, 2)).repeat(patch * patch) + 1e-8
        a, b = (a - mean) / std, (b - mean) / std
        dists.append(float(np.mean([sliced_wasserstein(a, b, projections, rng) for _ in range(repeats)])))
    return dists


def diversity(samples: np.ndarray, image: np.ndarray) -> float:
    """Mean per-pixel std across samples divided by the image's std (paper's measure)."""
    samples = _batch(samples)
    if len(samples) < 2:
        raise InputError("diversity needs at least 2 samples")
    return float(samples.std(axis=0).mean() / (np.asarray(image).std() + 1e-8))


def reconstruction_rmse(reconstruction: np.ndarray, image: np.ndarray) -> float:
    return float(np.sqrt(np.mean((_batch(reconstruction)[0] - np.asarray(image, np.float32)) ** 2)))


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """``|mu1 - mu2|^2 + tr(C1 + C2 - 2 (C1 C2)^(1/2))`` for Gaussians N(mu, C).

    ``tr((C1 C2)^(1/2))`` is the sum of the square roots of the eigenvalues of
    C1 C2, which are real and non-negative for covariance matrices (tiny
    negative/imaginary parts from round-off are dropped).
    """
    eig = np.linalg.eigvals(np.asarray(cov1, np.float64) @ np.asarray(cov2, np.float64))
    tr_covmean = float(np.sum(np.sqrt(np.clip(eig.real, 0.0, None))))
    diff = np.asarray(mu1, np.float64) - np.asarray(mu2, np.float64)
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * tr_covmean)


def feature_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance over all spatial positions of [N, H, W, C] features."""
    flat = features.reshape(-1, features.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), np.cov(flat, rowvar=False)


SIFID_LAYER_CHANNELS = 192


def check_inception_weights(weights: str | os.PathLike) -> None:
    """The weights file exists (``evaluate`` asks before TensorFlow loads)."""
    if not os.path.isfile(weights):
        raise InputError(f"{weights}: no such Inception-V3 weights file")


def inception_features(weights: str | os.PathLike | None):
    """Inception-V3 up to the layer before its second max-pool (192 channels).

    ``weights``: a Keras InceptionV3 weights file (``.weights.h5`` / ``.h5``,
    ImageNet, without top). ``None`` gives random weights: only for tests of
    the plumbing, never for reported numbers.
    """
    if weights is not None:
        check_inception_weights(weights)
    import keras

    net = keras.applications.InceptionV3(include_top=False, weights=None, input_shape=(None, None, 3))
    if weights is not None:
        try:
            net.load_weights(weights)
        except (ValueError, OSError) as err:
            raise InputError(f"{weights}: not Keras InceptionV3 (no top) weights ({err})") from None
    pools = [layer for layer in net.layers if isinstance(layer, keras.layers.MaxPooling2D)]
    feature_layer = net.get_layer(index=net.layers.index(pools[1]) - 1)
    model = keras.Model(net.input, feature_layer.output)
    if model.output_shape[-1] != SIFID_LAYER_CHANNELS:
        raise RuntimeError(f"unexpected Inception layer width {model.output_shape[-1]}")
    return model


def sifid(samples: np.ndarray, image: np.ndarray, features) -> list[float]:
    """SIFID of every sample against the image (lower is better)."""

    def stats(x):
        return feature_stats(np.asarray(features(_batch(x), training=False)))

    mu_r, cov_r = stats(image)
    return [frechet_distance(*stats(s), mu_r, cov_r) for s in _batch(samples)]


# -- the registry ----------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class MetricInputs:
    """What every registered metric is given (``singan_tf.evaluation.evaluate`` builds it).

    Attributes:
        samples: [N, H, W, 3] random samples of the run, in [-1, 1].
        image: [H, W, 3] the run's training image at its working size.
        reconstruction: [1, H, W, 3] the pyramid's reconstruction of ``image``.
        seed: seeds the metrics' own random draws (patches, projections).
        inception_weights: a Keras InceptionV3 weights file, for ``sifid``.
    """

    samples: np.ndarray
    image: np.ndarray
    reconstruction: np.ndarray
    seed: int = 0
    inception_weights: str | os.PathLike | None = None


# A metric maps the inputs to named results: floats (printed, logged to TensorBoard) and
# lists of floats (per level / band, finest first; written to the report only).
Metric = Callable[[MetricInputs], dict[str, float | list[float]]]
METRICS: dict[str, Metric] = {}


def register_metric(name: str) -> Callable[[Metric], Metric]:
    """Add a metric to ``METRICS`` under ``name`` (the name ``evaluate(metrics=...)`` takes)."""

    def add(fn: Metric) -> Metric:
        METRICS[name] = fn
        return fn

    return add


@register_metric("patch_swd")
def _patch_swd_metric(inputs: MetricInputs) -> dict[str, float | list[float]]:
    levels = patch_swd_levels(inputs.samples, inputs.image, seed=inputs.seed)
    return {"patch_swd": float(np.mean(levels)), "patch_swd_levels": levels}


@register_metric("bandpass_swd")
def _bandpass_swd_metric(inputs: MetricInputs) -> dict[str, float | list[float]]:
    bands = bandpass_swd(inputs.samples, inputs.image, seed=inputs.seed)
    per_band = {f"bandpass_swd_band{k}": v for k, v in enumerate(bands)}
    return {"bandpass_swd": float(np.mean(bands)), **per_band, "bandpass_swd_bands": bands}


@register_metric("diversity")
def _diversity_metric(inputs: MetricInputs) -> dict[str, float | list[float]]:
    return {"diversity": diversity(inputs.samples, inputs.image)}


@register_metric("reconstruction_rmse")
def _reconstruction_metric(inputs: MetricInputs) -> dict[str, float | list[float]]:
    return {"reconstruction_rmse": reconstruction_rmse(inputs.reconstruction, inputs.image)}


@register_metric("sifid")
def _sifid_metric(inputs: MetricInputs) -> dict[str, float | list[float]]:
    if inputs.inception_weights is None:
        raise ConfigError("SIFID needs Inception-V3 weights (--inception-weights)")
    scores = sifid(inputs.samples, inputs.image, inception_features(inputs.inception_weights))
    return {"sifid_mean": float(np.mean(scores)), "sifid_std": float(np.std(scores))}


# What ``evaluate`` computes unless told otherwise (plus ``sifid`` when weights are given).
DEFAULT_METRICS = ("patch_swd", "bandpass_swd", "diversity", "reconstruction_rmse")
