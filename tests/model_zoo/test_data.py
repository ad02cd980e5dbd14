import numpy as np
import pytest
import torch

from model_zoo.data import load_dataset


def test_digits_scaling_shapes_and_split():
    d = load_dataset("digits", test_fraction=0.2, seed=0)
    assert d.x_train.shape[1:] == (1, 8, 8) and d.x_train.dtype == torch.float32
    assert float(d.x_train.min()) == 0.0 and float(d.x_train.max()) == 1.0
    assert len(d.train_index) + len(d.test_index) == 1797
    assert len(d.test_index) == round(1797 * 0.2)
    assert not set(d.train_index) & set(d.test_index)
    flat = load_dataset("digits", flatten=True)
    assert flat.x_train.shape[1:] == (64,)
    torch.testing.assert_close(flat.x_train, d.x_train.reshape(-1, 64))


def test_split_is_seeded():
    a, b, c = (load_dataset("digits", seed=s) for s in (0, 0, 1))
    np.testing.assert_array_equal(a.test_index, b.test_index)
    assert not np.array_equal(a.test_index, c.test_index)
    desc = a.describe()
    assert desc["test_index"] == [int(i) for i in a.test_index] and desc["n_train"] == len(a.train_index)


def test_mnist1d_offline_and_leaves_numpy_state_alone():
    np.random.seed(123)
    before = np.random.random()
    np.random.seed(123)
    d = load_dataset("mnist1d", num_samples=400)
    assert np.random.random() == before  # the generator's global reseeding was undone
    assert d.x_train.shape[1:] == (1, 40) and d.num_outputs == 10
    assert len(d.train_index) + len(d.test_index) == 400
    again = load_dataset("mnist1d", num_samples=400)
    torch.testing.assert_close(d.x_test, again.x_test)


def test_synthetic_regression():
    d = load_dataset("synthetic", num_samples=100, in_features=4, out_features=2)
    assert d.task == "regression" and d.y_train.shape[1] == 2 and d.x_train.shape[1] == 4


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'"):
        load_dataset("cifar")


@pytest.mark.parametrize("frac", [0.0, 1.0, -0.1])
def test_bad_test_fraction(frac):
    with pytest.raises(ValueError, match="test_fraction must lie in"):
        load_dataset("digits", test_fraction=frac)


def test_digits_takes_no_options():
    with pytest.raises(ValueError, match="takes no options"):
        load_dataset("digits", num_samples=10)
