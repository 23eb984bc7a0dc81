"""The autodiff facts the models rely on, and the stable softplus with its hand-written gradient."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from export.models import naive_softplus, stable_softplus


def f(w1, w2):
    return 3 * w1**2 + 2 * w1 * w2


def test_tape_gradient_matches_analytic_and_finite_differences():
    w1, w2 = tf.Variable(5.0), tf.Variable(3.0)
    with tf.GradientTape() as tape:
        z = f(w1, w2)
    g1, g2 = tape.gradient(z, [w1, w2])
    assert (float(g1), float(g2)) == (36.0, 10.0)
    eps = 1e-3  # central differences in float64: error O(eps^2)
    fd1 = (f(5.0 + eps, 3.0) - f(5.0 - eps, 3.0)) / (2 * eps)
    fd2 = (f(5.0, 3.0 + eps) - f(5.0, 3.0 - eps)) / (2 * eps)
    assert abs(fd1 - 36.0) < 1e-4 and abs(fd2 - 10.0) < 1e-4


def test_stop_gradient_blocks_a_term():
    w1, w2 = tf.Variable(5.0), tf.Variable(3.0)
    with tf.GradientTape() as tape:
        z = 3 * w1**2 + tf.stop_gradient(2 * w1 * w2)
    g1, g2 = tape.gradient(z, [w1, w2])
    assert float(g1) == 30.0
    assert g2 is None


def test_constants_need_watch():
    c1, c2 = tf.constant(5.0), tf.constant(3.0)
    with tf.GradientTape() as tape:
        z = f(c1, c2)
    assert tape.gradient(z, [c1, c2]) == [None, None]
    with tf.GradientTape() as tape:
        tape.watch(c1)
        tape.watch(c2)
        z = f(c1, c2)
    assert [float(g) for g in tape.gradient(z, [c1, c2])] == [36.0, 10.0]


def test_non_persistent_tape_refuses_second_gradient_call():
    w1, w2 = tf.Variable(5.0), tf.Variable(3.0)
    with tf.GradientTape() as tape:
        z = f(w1, w2)
    tape.gradient(z, w1)
    with pytest.raises(RuntimeError):
        tape.gradient(z, w2)
    with tf.GradientTape(persistent=True) as tape:
        z = f(w1, w2)
    assert float(tape.gradient(z, w1)) == 36.0
    assert float(tape.gradient(z, w2)) == 10.0
    del tape


def _grad(fn, z):
    z = tf.constant(z, dtype=tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(z)
        y = fn(z)
    return y, tape.gradient(y, z)


def test_naive_softplus_gradient_is_nan_at_100_and_ours_is_one():
    _, naive = _grad(naive_softplus, [100.0])
    assert np.isnan(naive.numpy()).all()
    y, ours = _grad(stable_softplus, [100.0])
    assert float(ours[0]) == 1.0
    assert float(y[0]) == 100.0


def test_stable_softplus_finite_and_exact_over_a_wide_range():
    z = np.concatenate([np.linspace(-1e4, 1e4, 20001), np.linspace(-100, 100, 20001), [0.0, 88.0, 89.0, 90.0]])
    z = z.astype(np.float32)
    y, g = _grad(stable_softplus, z)
    y, g = y.numpy(), g.numpy()
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(g))
    want_y = tf.nn.softplus(z).numpy()
    want_g = tf.sigmoid(z).numpy()
    # relative 1e-6; values that underflow to 0 in float32 are compared absolutely at the float32 floor
    np.testing.assert_allclose(y, want_y, rtol=1e-6, atol=1e-38)
    np.testing.assert_allclose(g, want_g, rtol=1e-6, atol=1e-38)


def test_textbook_forward_overflows_where_ours_does_not():
    assert np.isinf(naive_softplus(tf.constant(90.0)).numpy())
    assert float(stable_softplus(tf.constant(90.0))) == 90.0


def test_custom_gradient_is_used_inside_tf_function():
    @tf.function
    def grad_at(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            y = stable_softplus(z)
        return tape.gradient(y, z)

    g = grad_at(tf.constant([-1e4, -100.0, 0.0, 100.0, 1e4])).numpy()
    np.testing.assert_allclose(g, [0.0, tf.sigmoid(-100.0).numpy(), 0.5, 1.0, 1.0], rtol=1e-6, atol=1e-38)
