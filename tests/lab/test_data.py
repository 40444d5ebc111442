import gzip
import struct

import numpy as np
import pytest

from lab import DataError, load_dataset
from lab.config import DataConfig
from lab.data import load_csv, load_idx, load_mnist1d, load_npz, read_idx


def _csv(path, rows):
    path.write_text("\n".join(",".join(map(str, r)) for r in rows) + "\n")
    return path


def test_csv_target_by_name(tmp_path):
    path = _csv(tmp_path / "d.csv", [["a", "label", "b"], [1, 0, 2], [3, 1, 4], [5, 0, 6]])
    x, y, task = load_csv(path, "label")
    np.testing.assert_array_equal(x, [[1, 2], [3, 4], [5, 6]])
    np.testing.assert_array_equal(y, [0, 1, 0])
    assert task == "classification"
    _, _, task = load_csv(_csv(tmp_path / "r.csv", [["a", "t"], [1, 0.5], [2, 1.5]]), "t")
    assert task == "regression"


def test_csv_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_csv(tmp_path / "missing.csv", "y")
    path = _csv(tmp_path / "d.csv", [["a", "b"], [1, 2]])
    with pytest.raises(DataError, match="no column named 'y'"):
        load_csv(path, "y")
    nan = _csv(tmp_path / "n.csv", [["a", "y"], [1, 0], ["", 1], [2, 0], [3, 1]])
    cfg = DataConfig(name="csv", path=str(nan), target="y")
    with pytest.raises(DataError, match="NaN"):
        load_dataset(cfg)


def test_npz(tmp_path):
    path = tmp_path / "d.npz"
    x = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    np.savez(path, images=x, labels=np.array([0, 1, 2, 0, 1, 2]))
    xs, ys, task = load_npz(path, "images", "labels")
    assert xs.shape == (6, 4) and task == "classification"
    np.testing.assert_array_equal(xs[1], [4, 5, 6, 7])
    with pytest.raises(DataError, match="no array 'x'"):
        load_npz(path)


def _idx(path, arr, code):
    header = bytes([0, 0, code, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape)
    data = header + arr.astype(arr.dtype.newbyteorder(">")).tobytes()
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def test_idx_pair(tmp_path):
    images = np.arange(5 * 3 * 3, dtype=np.uint8).reshape(5, 3, 3)
    labels = np.array([1, 0, 1, 0, 1], np.uint8)
    ip = _idx(tmp_path / "images-idx3-ubyte.gz", images, 0x08)
    lp = _idx(tmp_path / "labels-idx1-ubyte", labels, 0x08)
    np.testing.assert_array_equal(read_idx(ip), images)
    x, y, task = load_idx(ip, lp)
    assert x.shape == (5, 9) and task == "classification"
    np.testing.assert_array_equal(y, labels)
    floats = np.linspace(0, 1, 4).astype(np.float32)
    np.testing.assert_array_equal(read_idx(_idx(tmp_path / "f.idx", floats, 0x0D)), floats)
    bad = tmp_path / "bad.idx"
    bad.write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(DataError, match="magic"):
        read_idx(bad)
    short = _idx(tmp_path / "short.idx", labels[:3], 0x08)
    with pytest.raises(DataError, match="has 5 items"):
        load_idx(ip, short)


def test_split_is_seeded_and_standardized_on_train():
    cfg = DataConfig(name="digits", split_seed=3, max_examples=400)
    a, b = load_dataset(cfg), load_dataset(cfg)
    np.testing.assert_array_equal(a.x_test, b.x_test)
    c = load_dataset(DataConfig(name="digits", split_seed=4, max_examples=400))
    assert not np.array_equal(a.x_test, c.x_test)
    assert len(a.x_test) == 120 and len(a.x_train) == 280  # 0.3 of 400
    varying = a.x_train.std(0) > 0
    np.testing.assert_allclose(a.x_train.mean(0), 0, atol=1e-5)
    np.testing.assert_allclose(a.x_train.std(0)[varying], 1, rtol=1e-4)
    # Test statistics are not used: its mean is not exactly 0.
    assert np.abs(a.x_test.mean(0)).max() > 1e-3


def test_held_out_classes_and_noise_ood():
    cfg = DataConfig(name="digits", ood="held_out_classes", ood_classes=[8, 9])
    d = load_dataset(cfg)
    assert d.num_classes == 8
    assert set(np.unique(d.y_train)) == set(range(8))
    assert len(d.x_ood) == 174 + 180  # digits has 174 eights and 180 nines
    noise = load_dataset(DataConfig(name="breast_cancer", ood="noise", ood_size=50))
    assert noise.x_ood.shape == (50, 30) and noise.num_classes == 2
    with pytest.raises(DataError, match="classification"):
        load_dataset(DataConfig(name="diabetes", ood="held_out_classes", ood_classes=[1]))


def test_toy_has_a_gap_and_regression_targets_standardized():
    d = load_dataset(DataConfig(name="toy", val_fraction=0.2, test_fraction=0.2))
    x = np.concatenate([d.x_train, d.x_val, d.x_test])[:, 0] * d.x_std[0] + d.x_mean[0]
    assert np.all(np.abs(x) >= 1) and np.all(np.abs(x) <= 4)
    assert d.task == "regression" and d.num_classes == 1
    np.testing.assert_allclose(d.y_train.mean(), 0, atol=1e-5)
    np.testing.assert_allclose(d.y_train.std(), 1, rtol=1e-4)
    assert len(d.x_val) == 48


def test_mnist1d_is_generated_offline():
    # make_dataset with the package's default args: 4000 + 1000 sequences of 40.
    x, y, task = load_mnist1d()
    assert x.shape == (5000, 40) and y.shape == (5000,) and task == "classification"
    assert set(np.unique(y)) == set(range(10))
