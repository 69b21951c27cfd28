"""The synthetic sensor has the covariance it claims, and `alignment` measures it."""

import numpy as np
import pytest

from service.synthetic import SyntheticSensor, alignment


def test_components_are_orthonormal_and_fixed_by_the_seed():
    sensor = SyntheticSensor(16, seed=3)

    np.testing.assert_allclose(sensor.components.T @ sensor.components, np.eye(16), atol=1e-12)
    np.testing.assert_array_equal(sensor.components, SyntheticSensor(16, seed=3).components)
    assert not np.allclose(sensor.components, SyntheticSensor(16, seed=4).components)


def test_sample_covariance_matches_the_known_covariance_and_components():
    sensor = SyntheticSensor(8, seed=1, noise=0.1)
    data = np.concatenate(list(sensor.batches(1000, 200_000)))

    assert data.shape == (200_000, 8) and data.dtype == np.float32
    np.testing.assert_allclose(np.cov(data, rowvar=False), sensor.covariance(), atol=0.05)
    values, vectors = np.linalg.eigh(np.cov(data, rowvar=False))
    top = vectors[:, ::-1][:, :3]
    assert alignment(top.T, sensor.components).cosines.min() > 0.999
    np.testing.assert_allclose(values[::-1], sensor.eigenvalues, rtol=0.05, atol=0.01)


def test_batches_respect_batch_size_and_count():
    sizes = [len(b) for b in SyntheticSensor(4).batches(64, 150)]
    assert sizes == [64, 64, 22]


def test_alignment_of_the_components_themselves_is_perfect_and_of_a_rotation_is_not():
    sensor = SyntheticSensor(6, seed=0)
    exact = alignment(-2 * sensor.components[:, :3].T, sensor.components)
    swapped = alignment(sensor.components[:, [1, 0]].T, sensor.components)

    np.testing.assert_allclose(exact.cosines, 1.0)
    np.testing.assert_allclose(exact.norms, 2.0)
    assert exact.subspace == pytest.approx(1.0)
    np.testing.assert_allclose(swapped.cosines, 0.0, atol=1e-12)
    assert swapped.subspace == pytest.approx(1.0)  # same subspace, other order


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="channels"):
        SyntheticSensor(0)
    with pytest.raises(ValueError, match="decay"):
        SyntheticSensor(4, decay=1.5)
