"""Shared fixtures: real images and one small pyramid trained once per session."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest

from singan_tf.images import bundled_image, load_image

# Small enough to train in about a minute on 2 CPU cores, big enough for
# three scales (25x37, 33x49, 43x64) with the paper's formulas.
TINY_ARGS = ["--preset", "quick", "--max-size", "64", "--iters", "150", "--seed", "3", "--num-samples", "4"]


@pytest.fixture(scope="session")
def rocket() -> np.ndarray:
    """The bundled training image (SpaceX, public domain), [427, 640, 3] in [-1, 1]."""
    return load_image(bundled_image("rocket.jpg"))


@pytest.fixture(scope="session")
def hubble() -> np.ndarray:
    return load_image(bundled_image("hubble_deep_field.jpg"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> str:
    """A run directory trained end to end through the CLI on the bundled image."""
    from singan_tf.cli import command_main

    out = tmp_path_factory.mktemp("runs") / "rocket"
    code = command_main("train", [*TINY_ARGS, "--out", str(out), "--no-progress"])
    assert code == 0
    return str(out)


@pytest.fixture(scope="session")
def pyramid(trained_run):
    from singan_tf.rundir import load_pyramid

    return load_pyramid(trained_run)
