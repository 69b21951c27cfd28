"""Each rule converges to its known result (numpy `eigh` as the reference).

Data: zero-mean Gaussian, d=8, spectrum [5, 3, 2, 1, .5, .3, .2, .1], random rotation,
20k samples, eta_t = 0.01 / (1 + t / 2000). Learning runs on the native engine that
serves models.
"""

import keras
import numpy as np
import pytest

from service.model import Hebbian, HebbianStack, StackConfig
from tests.unit.reference import gaussian_data


def stack(units: int, input_dim: int = 8, **settings) -> HebbianStack:
    """A one-layer model served by the native engine."""
    return HebbianStack(StackConfig(input_dim, ({"units": units, **settings},)))


def kernel(model: HebbianStack) -> np.ndarray:
    return model.layer_states()[0].kernel


def learn(model: HebbianStack, samples: np.ndarray) -> np.ndarray:
    """Feed every sample to `model` through its engine; returns W (units, input_dim)."""
    model.engine.process(samples)
    return kernel(model).T


@pytest.fixture(scope="module")
def data():
    return gaussian_data()


def abs_cos(a, b):
    return abs(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))


def test_oja_single_unit_finds_first_principal_component_with_unit_norm(data):
    samples, vectors, _ = data
    (w,) = learn(stack(1, rule="oja", learning_rate=0.01, decay_steps=2000, seed=1), samples)
    assert abs_cos(w, vectors[:, 0]) > 0.99
    assert abs(np.linalg.norm(w) - 1) < 0.02


def test_sanger_rows_are_the_principal_components_in_order_and_orthonormal(data):
    samples, vectors, _ = data
    W = learn(stack(3, rule="sanger", learning_rate=0.01, decay_steps=2000, seed=2), samples)
    cosines = [abs_cos(W[i], vectors[:, i]) for i in range(3)]
    assert min(cosines) > 0.99, cosines
    assert np.max(np.abs(W @ W.T - np.eye(3))) < 0.05


def test_oja_subspace_spans_the_top_three_principal_subspace(data):
    samples, vectors, _ = data
    W = learn(stack(3, rule="oja_subspace", learning_rate=0.01, decay_steps=2000, seed=3),
              samples)
    P_w = W.T @ np.linalg.inv(W @ W.T) @ W
    P_3 = vectors[:, :3] @ vectors[:, :3].T
    assert np.linalg.norm(P_w - P_3) < 0.1


def test_foldiak_lateral_decorrelates_the_outputs_and_stays_hollow(data):
    samples, _, _ = data
    # A fixed random feed-forward map gives strongly correlated outputs; only the
    # anti-Hebbian lateral weights learn.
    model = stack(4, rule="oja", learning_rate=0.0, lateral="anti_hebbian",
                  lateral_learning_rate=0.01, decay_steps=2000, seed=4)
    engine = model.engine
    before = engine.process(samples[:2000], learn=False).activations
    engine.process(samples)
    after = engine.process(samples[:5000], learn=False).activations
    off = ~np.eye(4, dtype=bool)
    assert np.max(np.abs(np.corrcoef(before, rowvar=False)[off])) > 0.3
    assert np.max(np.abs(np.corrcoef(after, rowvar=False)[off])) < 0.1
    assert np.all(np.diag(model.layer_states()[0].lateral) == 0.0)


@pytest.mark.parametrize("k", [2, 3])
def test_bcm_units_become_selective_to_one_pattern_with_response_k(k):
    rng = np.random.default_rng(10 + k)
    patterns = np.eye(k, 8, dtype=np.float32) + 0.05 * rng.random((k, 8)).astype(np.float32)
    samples = patterns[rng.integers(k, size=30_000)]
    model = stack(3, rule="bcm", learning_rate=0.005, bcm_threshold_rate=0.05, seed=k)
    learn(model, samples)
    responses = model.engine.process(patterns, learn=False).activations  # (k, units)
    for unit in range(3):
        r = np.sort(responses[:, unit])[::-1]
        assert abs(r[0] - k) < 0.2 * k, responses
        assert np.all(np.abs(r[1:]) < 0.2 * k), responses


def test_hebb_with_normalisation_keeps_the_norm_after_every_update(data):
    samples, vectors, _ = data
    model = stack(2, rule="hebb", learning_rate=0.01, decay_steps=2000, norm_target=2.0, seed=5)
    for start in range(0, 2000, 1):
        model.engine.process(samples[start : start + 1])
        norms = np.linalg.norm(kernel(model), axis=0)
        assert np.all(np.abs(norms - 2.0) < 1e-6), (start, norms)
    model.engine.process(samples[2000:])
    assert abs_cos(kernel(model)[:, 0], vectors[:, 0]) > 0.99


def test_per_sample_and_batch_mean_oja_agree(data):
    samples, vectors, _ = data
    per_sample = stack(1, rule="oja", learning_rate=0.01, decay_steps=2000, seed=6)
    # One mean update per 64 samples: 64x fewer updates, so a larger (still stable) rate.
    batch_mean = Hebbian(1, rule="oja", learning_rate=0.1, decay_steps=2000, seed=6,
                         granularity="batch_mean")
    model = keras.Sequential([keras.Input((8,)), batch_mean])
    for start in range(0, len(samples), 64):
        model(samples[start : start + 64])
    (w_sample,) = learn(per_sample, samples)
    w_batch = batch_mean.kernel.numpy()[:, 0]
    assert abs_cos(w_sample, w_batch) > 0.99
    assert abs_cos(w_batch, vectors[:, 0]) > 0.99
