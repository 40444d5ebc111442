import gzip
import json
import pathlib
import re
import struct

import numpy as np
import pytest

from lab import ConfigError, DataError, load_config, load_dataset, run_experiment
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
    with pytest.raises(DataError, match="n.csv, line 3, column 'a': the cell is empty"):
        load_dataset(cfg)


# Files as an editor shows them: the header is line 1, blank lines are counted, a
# quoted cell may span lines (the record's line is the one it starts on), "#" lines
# are records like any other (no comments in CSV), CRLF is one line break.
CSV_ERRORS = [
    ("a,b,y\n1,2,0\n\n3,1\n", "line 4: 2 cells, but the header has 3 (a, b, y); 1 missing."),
    ("a,b,y\n1,2,0,9\n", "line 2: 4 cells, but the header has 3 (a, b, y); 1 extra."),
    ("a,b,y\n1,2,0\n3,,1\n", "line 3, column 'b': the cell is empty."),
    ("a,b,y\r\n1,2,0\r\n3, ,1\r\n", "line 3, column 'b': the cell is empty."),
    ("a,b,y\n1,abc,0\n", "line 2, column 'b': 'abc' is not a number."),
    ("a,b,y\n1,2,0\nnan,2,1\n", "line 3, column 'a': 'nan' is not a finite number."),
    ("a,y,b\n1,0,2\n3,,4\n", "line 3, column 'y': the cell is empty."),
    ("a,b,y\n1,2,0\n\n\n5,6,inf\n", "line 5, column 'y': 'inf' is not a finite number."),
    ("a,b,y\n# a note\n1,2,0\n", "line 2: 1 cell, but the header has 3 (a, b, y); 2 missing."),
    ('a,b,y\n1,2,"big\ncat"\n3,x,dog\n', "line 4, column 'b': 'x' is not a number."),
    ("\n\na,b,y\n1,2,0\n1,2\n", "line 5: 2 cells, but the header has 3 (a, b, y); 1 missing."),
]


@pytest.mark.parametrize(("text", "message"), CSV_ERRORS)
def test_csv_errors_name_the_editor_line_and_column(tmp_path, text, message):
    path = tmp_path / "d.csv"
    path.write_bytes(text.encode())
    with pytest.raises(DataError) as err:
        load_csv(path, "y")
    assert str(err.value) == f"{path}, {message}"
    # The same error comes out of load_dataset, before any training.
    with pytest.raises(DataError, match=re.escape(message)):
        load_dataset(DataConfig(name="csv", path=str(path), target="y"))


def test_csv_byte_order_mark_and_duplicate_target(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_text("y,a\n0,1\n1,2\n", encoding="utf-8-sig")  # as Excel saves it
    _, y, _ = load_csv(path, "y")
    np.testing.assert_array_equal(y, [0, 1])
    _csv(path, [["y", "a", "y"], [0, 1, 0]])
    with pytest.raises(DataError, match="2 columns are named 'y'"):
        load_csv(path, "y")


def _names_csv(tmp_path):
    """Feature ``i`` is the row number, so each example's label can be looked up."""
    names = ["dog", "cat", "bird", "cat", "dog", "cat"] * 10
    rows = [["i", "label", "z"]] + [[i, n, i % 7] for i, n in enumerate(names)]
    return _csv(tmp_path / "pets.csv", rows), names


def test_string_labels_are_numbered_in_sorted_order(tmp_path):
    path, names = _names_csv(tmp_path)
    _, y, task = load_csv(path, "label")
    assert task == "classification" and y.tolist() == names
    d = load_dataset(DataConfig(name="csv", path=str(path), target="label"))
    assert d.label_names == ["bird", "cat", "dog"] and d.num_classes == 3
    for x, labels in ((d.x_train, d.y_train), (d.x_test, d.y_test)):
        rows = np.rint(x[:, 0] * d.x_std[0] + d.x_mean[0]).astype(int)
        assert [d.label_names[c] for c in labels] == [names[r] for r in rows]
    # Held out by number (0 = "bird"); the kept classes are renumbered 0..k-1.
    held = load_dataset(
        DataConfig(
            name="csv", path=str(path), target="label", ood="held_out_classes", ood_classes=[0]
        )
    )
    assert held.label_names == ["cat", "dog"] and len(held.x_ood) == names.count("bird")
    with pytest.raises(DataError, match="class names .*data.task=regression needs numbers"):
        load_dataset(DataConfig(name="csv", path=str(path), target="label", task="regression"))
    numeric = _csv(tmp_path / "n.csv", [["a", "y"], *[[i, i % 2] for i in range(10)]])
    assert load_dataset(DataConfig(name="csv", path=str(numeric), target="y")).label_names is None


def test_label_names_saved_with_the_results(tmp_path):
    path, _ = _names_csv(tmp_path)
    overrides = [
        "data.name=csv", f"data.path={path}", "data.target=label", "model.hidden=[8]",
        "train.epochs=1", "train.batch_size=16", "seeds=[0]", "plots=false", "progress=false",
        "methods.classic.enabled=false", "methods.inverted.enabled=false",
        "methods.rdrop.enabled=false", "methods.mc.enabled=false", f"output_dir={tmp_path / 'run'}",
    ]  # fmt: skip
    out = run_experiment(load_config(None, overrides))
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["label_names"] == out["label_names"] == ["bird", "cat", "dog"]


COMPARE_DIGITS = pathlib.Path(__file__).parents[2] / "configs" / "compare_digits.yaml"


def test_ood_errors_name_a_setting_that_works(tmp_path):
    path = _csv(
        tmp_path / "three.csv", [["a", "b", "y"], *[[i, i * i % 5, i % 3] for i in range(30)]]
    )
    csv = ["data.name=csv", f"data.path={path}", "data.target=y"]

    def data(*extra):
        return load_dataset(load_config(COMPARE_DIGITS, [*csv, *extra]).data)

    # compare_digits.yaml holds out digits 8 and 9; this file's classes are 0, 1, 2.
    with pytest.raises(DataError) as err:
        data()
    assert str(err.value) == (
        "data.ood_classes=[8,9] names [8,9], which are not classes of this data; the classes"
        " are 0, 1, 2: hold out some classes, e.g. data.ood_classes=[2], or use data.ood=noise"
        " (random inputs as the OOD set)."
    )
    assert data("data.ood=noise").x_ood is not None  # both suggestions work
    assert data("data.ood_classes=[2]").num_classes == 2
    with pytest.raises(DataError, match=r"leaves 1 of 3 classes .* data.ood_classes=\[0\]"):
        data("data.ood_classes=[0,1]")  # a part of the asked classes that works
    two = _csv(tmp_path / "two.csv", [["a", "y"], *[[i, i % 2] for i in range(20)]])
    with pytest.raises(DataError, match=r"classes are 0, 1: use data.ood=noise") as err:
        data(f"data.path={two}", "data.ood_classes=[1]")
    assert "data.ood_classes=[" not in str(err.value).split(";")[1]  # none would leave 2
    with pytest.raises(
        DataError, match="shuffles the features, but the data has 1; use data.ood=noise"
    ):
        load_dataset(DataConfig(name="toy", ood="permuted"))
    with pytest.raises(ConfigError, match="data.ood_classes.*or use data.ood=noise"):
        load_config(None, ["data.ood=held_out_classes"])


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
    with pytest.raises(DataError, match="task is regression; use data.ood=noise"):
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
