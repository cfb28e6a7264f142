import numpy as np
import pytest
import tensorflow as tf

from singan_tf.losses import GP_EPSILON, gradient_penalty, noise_amplitude, reconstruction_loss


def linear_critic(weights):
    """D(x) = sum_c w[h, w, c] * x[h, w, c] per pixel: its input gradient is w."""
    w = tf.constant(weights, tf.float32)
    return lambda x: tf.reduce_sum(x * w, axis=-1, keepdims=True)


def test_gp_zero_for_unit_norm_per_pixel():
    w = np.broadcast_to(np.array([0.6, 0.8, 0.0], np.float32), (8, 8, 3))
    real, fake = tf.random.normal((1, 8, 8, 3)), tf.random.normal((1, 8, 8, 3))
    gp = gradient_penalty(linear_critic(w), real, fake, tf.constant(0.3))
    assert float(gp) == pytest.approx(0.0, abs=1e-6)


def test_gp_value_is_per_pixel_not_global():
    # Half the pixels have gradient norm 2, half 0: per-pixel GP = mean(1, 1) = 1.
    # A global norm over the whole image would give (sqrt(4 * 32) - 1)^2 ~ 106.
    w = np.zeros((8, 8, 3), np.float32)
    w[:4, :, 0] = 2.0
    real, fake = tf.random.normal((1, 8, 8, 3)), tf.random.normal((1, 8, 8, 3))
    gp = gradient_penalty(linear_critic(w), real, fake, tf.constant(0.5))
    assert float(gp) == pytest.approx(1.0, abs=1e-5)


def test_gp_gradient_matches_hand_derivation():
    # D(x) = sum(k * x[..., 0]); per-pixel norm |k|; GP = (|k| - 1)^2, dGP/dk = 2(|k| - 1) sign(k).
    k = tf.Variable(2.5)
    real, fake = tf.random.normal((1, 4, 4, 3)), tf.random.normal((1, 4, 4, 3))
    with tf.GradientTape() as tape:
        gp = gradient_penalty(lambda x: k * x[..., :1], real, fake, tf.constant(0.7))
    assert float(gp) == pytest.approx(1.5**2, rel=1e-5)
    assert float(tape.gradient(gp, k)) == pytest.approx(2 * 1.5, rel=1e-5)


def test_gp_gradient_finite_when_critic_is_flat():
    k = tf.Variable(0.0)
    real = tf.random.normal((1, 4, 4, 3))
    with tf.GradientTape() as tape:
        gp = gradient_penalty(lambda x: k * x[..., :1], real, real, tf.constant(0.5))
    grad = tape.gradient(gp, k)
    assert np.isfinite(float(grad))
    assert float(gp) == pytest.approx((np.sqrt(GP_EPSILON) - 1) ** 2)


def test_gp_interpolates_between_real_and_fake():
    seen = []

    def critic(x):
        seen.append(x)
        return tf.reduce_sum(x, axis=-1, keepdims=True)

    real, fake = tf.ones((1, 2, 2, 3)), tf.zeros((1, 2, 2, 3))
    gradient_penalty(critic, real, fake, tf.constant(0.25))
    np.testing.assert_allclose(seen[0].numpy(), 0.25)


def test_reconstruction_loss_is_mse():
    a = tf.constant([[1.0, 2.0], [3.0, 4.0]])
    b = tf.constant([[1.0, 0.0], [3.0, 2.0]])
    assert float(reconstruction_loss(a, b)) == pytest.approx((4 + 4) / 4)


def test_noise_amplitude_is_tenth_of_rmse():
    real = tf.fill((1, 10, 10, 3), 0.5)
    prev = tf.fill((1, 10, 10, 3), 0.1)
    assert noise_amplitude(real, prev) == pytest.approx(0.1 * 0.4, rel=1e-6)
    assert noise_amplitude(real, prev, factor=0.2) == pytest.approx(0.2 * 0.4, rel=1e-6)
