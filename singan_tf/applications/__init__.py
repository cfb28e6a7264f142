"""The paper's five applications (Shaham et al. 2019, section 4; docs/design.md §7).

All of them reuse a trained pyramid; only super-resolution trains one of
its own (with the SR settings). One module per family:

* ``injection``: an image injected at scale K runs through scales K..N.
  ``paint2image`` turns a paint/clipart into an image with the training
  image's patches; ``harmonize`` / ``edit`` inject a naive paste / an edited
  copy of the training image and blend the result back with a mask (given,
  or derived from the difference to the training image), optionally after
  ``fine_tune`` of scales K..N on that image.
* ``sr``: ``train_sr`` trains with reconstruction weight 100 and
  ``r = F^(-1/k)`` close to 2^(-1/3); ``super_resolve`` then k times
  upsamples by 1/r and passes the result through the finest generator.
* ``animation``: ``walk_noise`` / ``animate``, a momentum random walk in the
  noise of the scales below K, pulled toward the reconstruction noise.

Every function takes and returns float32 images in [-1, 1] ([H, W, 3]);
files are read and written by the CLI and ``singan_tf.images``
(``write_animation`` encodes GIF/MP4).
"""

from singan_tf.applications.animation import animate, walk_noise
from singan_tf.applications.injection import (
    EDIT_MASK,
    HARMONIZE_MASK,
    MASK_THRESHOLD,
    Blended,
    MaskShape,
    derive_mask,
    edit,
    feather,
    fine_tune,
    fit_to_pyramid,
    harmonize,
    inject_and_blend,
    paint2image,
    resize,
)
from singan_tf.applications.sr import super_resolve, train_sr

__all__ = [
    "EDIT_MASK",
    "HARMONIZE_MASK",
    "MASK_THRESHOLD",
    "Blended",
    "MaskShape",
    "animate",
    "derive_mask",
    "edit",
    "feather",
    "fine_tune",
    "fit_to_pyramid",
    "harmonize",
    "inject_and_blend",
    "paint2image",
    "resize",
    "super_resolve",
    "train_sr",
    "walk_noise",
]
