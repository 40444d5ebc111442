"""Readers of users' data files: CSV (a header row), NPZ arrays, MNIST-style IDX pairs.

Each returns raw ``(x [n, features], y [n], task)``; :mod:`lab.data` splits them. Errors
are :class:`DataError`, raised before any training; a CSV error names the line as an
editor shows it and the column.
"""

from __future__ import annotations

import csv
import gzip
import math
import pathlib
import struct

import numpy as np


class DataError(ValueError):
    """A data file is missing or malformed, or the data contains NaNs."""


def _csv_records(path: pathlib.Path) -> list[tuple[int, list[str]]]:
    """``(line, cells)`` of each non-blank record of a CSV file.

    ``line`` is 1-based, as an editor shows it: the line the record starts on (a quoted
    cell may span lines). Blank lines are skipped but counted; there are no comment
    lines (a ``#`` line is a record like any other).

    Raises:
      DataError: the file is not UTF-8 text or not valid CSV.
    """
    records = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.reader(f)
            start = 1
            for cells in reader:
                if len(cells) > 1 or (cells and cells[0].strip()):
                    records.append((start, cells))
                start = reader.line_num + 1
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text ({err}).") from err
    except csv.Error as err:
        raise DataError(f"{path}, line {start}: not valid CSV ({err}).") from err
    return records


def _bad_cell(path: pathlib.Path, line: int, column: str, cell: str) -> DataError:
    """The error for a cell that is empty or not a finite number."""
    text = cell.strip()
    why = f"{text!r} is not a number"
    if not text:
        why = "the cell is empty"
    elif _number(text) is not None:
        why = f"{text!r} is not a finite number"
    return DataError(f"{path}, line {line}, column {column!r}: {why}.")


def _number(text: str) -> float | None:
    """``float(text)``, or ``None`` when the text is not a number."""
    try:
        return float(text)
    except ValueError:
        return None


def _feature_row(path: pathlib.Path, line: int, names: list[str], cells: list[str]) -> list[float]:
    """One row's feature cells as finite numbers, else the first bad cell is named."""
    row = []
    for name, cell in zip(names, cells, strict=True):
        value = _number(cell)
        if value is None or not math.isfinite(value):
            raise _bad_cell(path, line, name, cell)
        row.append(value)
    return row


def _csv_targets(path: pathlib.Path, column: str, lines: list[int], cells: list[str]) -> np.ndarray:
    """Target cells as float numbers, or as strings (class names) when any is not a number.

    Raises:
      DataError: an empty cell, or a non-finite number among numbers.
    """
    for line, cell in zip(lines, cells, strict=True):
        if not cell:
            raise _bad_cell(path, line, column, cell)
    try:
        y = np.array([float(c) for c in cells])
    except ValueError:
        return np.array(cells)  # names: load_dataset maps them to 0..k-1, sorted
    bad = np.flatnonzero(~np.isfinite(y))
    if bad.size:
        raise _bad_cell(path, lines[bad[0]], column, cells[bad[0]])
    return y


def load_csv(path: str | pathlib.Path, target: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Reads a CSV with a header row; ``target`` names the label column.

    Every other column is a numeric feature. The task is classification when every
    target is an integer, else regression. Targets that are not all numbers are class
    names (e.g. ``cat``, ``dog``): the task is classification, ``y`` holds the names
    as strings, and :func:`load_dataset` maps them to ``0 .. k-1`` in sorted order
    (``Dataset.label_names``). Blank lines are skipped; errors give the line as an
    editor shows it (the header is usually line 1) and the column's name.

    Returns:
      ``x [n, features]`` (float64), ``y [n]`` (float64, or str for names), the task.

    Raises:
      DataError: missing file or column; a row whose cell count differs from the
        header's; an empty or non-numeric feature cell; an empty target cell.
    """
    path = _existing(path)
    records = _csv_records(path)
    if not records:
        raise DataError(f"{path}: the file is empty.")
    header = [h.strip() for h in records[0][1]]
    if target not in header:
        raise DataError(f"{path}: no column named {target!r}; columns are {header}.")
    if header.count(target) > 1:
        raise DataError(f"{path}: {header.count(target)} columns are named {target!r}.")
    col = header.index(target)
    names = header[:col] + header[col + 1 :]
    x = np.empty((len(records) - 1, len(names)))
    lines, labels = [], []
    for i, (line, cells) in enumerate(records[1:]):
        if len(cells) != len(header):
            n, m = len(cells), len(header)
            raise DataError(
                f"{path}, line {line}: {n} cell{'s' * (n != 1)}, but the header has {m} "
                f"({', '.join(header)}); {abs(n - m)} {'missing' if n < m else 'extra'}."
            )
        x[i] = _feature_row(path, line, names, cells[:col] + cells[col + 1 :])
        lines.append(line)
        labels.append(cells[col].strip())
    y = _csv_targets(path, target, lines, labels)
    if y.dtype.kind == "U":
        return x, y, "classification"
    task = "classification" if np.all(y == np.round(y)) else "regression"
    return x, y, task


def load_npz(path: str | pathlib.Path, x_key: str = "x", y_key: str = "y"):
    """Reads inputs and targets from a ``.npz`` file (arrays ``x_key`` and ``y_key``).

    Images are flattened to ``[n, features]``. Integer targets mean classification.

    Raises:
      DataError: missing file or key.
    """
    path = _existing(path)
    with np.load(path) as data:
        for key in (x_key, y_key):
            if key not in data:
                raise DataError(f"{path}: no array {key!r}; arrays are {sorted(data.files)}.")
        x, y = data[x_key], data[y_key]
    task = "classification" if np.issubdtype(y.dtype, np.integer) else "regression"
    return x.reshape(len(x), -1), y, task


_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | pathlib.Path) -> np.ndarray:
    """Reads one IDX file (the MNIST format), gzipped or not.

    Raises:
      DataError: missing file or a bad header.
    """
    path = _existing(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise DataError(f"{path}: not an IDX file (bad magic number).")
    ndim = raw[3]
    shape = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(np.prod(shape)) * dtype.itemsize:
        raise DataError(f"{path}: header says shape {shape} but the data size differs.")
    return np.frombuffer(body, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))


def load_idx(images: str | pathlib.Path, labels: str | pathlib.Path):
    """Reads an MNIST-style pair of IDX files: images ``[n, ...]`` and labels ``[n]``.

    Raises:
      DataError: missing files, bad headers, or counts that differ.
    """
    x, y = read_idx(images), read_idx(labels)
    if len(x) != len(y):
        raise DataError(f"{images} has {len(x)} items but {labels} has {len(y)}.")
    return x.reshape(len(x), -1).astype(np.float64), y.astype(np.int64), "classification"


def _existing(path: str | pathlib.Path) -> pathlib.Path:
    path = pathlib.Path(path)
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} does not exist.")
    return path
