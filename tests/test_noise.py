"""The corruptions of the denoising autoencoders, on both backends."""
import numpy as np
import pytest

from scratchae.noise import NOISES, gaussian, make_noise, masking, salt_and_pepper

from conftest import to_np, to_xp


def _clean(dtype=np.float32):
    return np.random.default_rng(0).uniform(size=(64, 1, 28, 28)).astype(dtype)


@pytest.mark.parametrize("name", list(NOISES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_noise_stays_in_the_unit_interval_keeps_dtype_and_backend(backend, name, dtype):
    clean = to_xp(_clean(dtype))
    noisy = make_noise(name, 0.3)(clean, np.random.default_rng(1))
    assert type(noisy) is type(clean) and noisy.dtype == dtype and noisy.shape == clean.shape
    values = to_np(noisy)
    assert values.min() >= 0 and values.max() <= 1
    assert not np.array_equal(values, to_np(clean))


@pytest.mark.parametrize("name", list(NOISES))
def test_the_same_seed_gives_the_same_noise_on_every_backend(backend, name):
    """The random numbers are drawn on the host, so NumPy and CuPy see one stream."""
    noisy = make_noise(name, 0.3)(to_xp(_clean()), np.random.default_rng(1))
    expected = make_noise(name, 0.3)(_clean(), np.random.default_rng(1))
    np.testing.assert_array_equal(to_np(noisy), expected)


def test_gaussian_is_the_tutorials_formula(backend):
    clean = _clean()
    z = np.random.default_rng(2).standard_normal(clean.shape, dtype=np.float32)
    expected = np.clip(clean + np.float32(0.5) * z, 0, 1)
    np.testing.assert_array_equal(to_np(gaussian(to_xp(clean), 0.5, np.random.default_rng(2))),
                                  expected)


def test_salt_and_pepper_and_masking_hit_the_asked_fraction(backend):
    clean = np.full((64, 1, 28, 28), 0.5, dtype=np.float32)
    sp = to_np(salt_and_pepper(to_xp(clean), 0.2, np.random.default_rng(3)))
    assert np.mean(sp == 0) == pytest.approx(0.1, abs=0.01)  # pepper
    assert np.mean(sp == 1) == pytest.approx(0.1, abs=0.01)  # salt
    assert np.mean(sp == 0.5) == pytest.approx(0.8, abs=0.01)
    mask = to_np(masking(to_xp(clean), 0.25, np.random.default_rng(4)))
    assert np.mean(mask == 0) == pytest.approx(0.25, abs=0.01)
