"""The shared checks (validation), the device parser and the indexed-dataset base."""

import math

import numpy as np
import pytest

from insmix_fast.data.base import IndexedDataset, resolve_index
from insmix_fast.devices import Device, parse_device, torch_device
from insmix_fast.errors import ConfigError, InputError, InputTypeError
from insmix_fast.validation import (check_bool, check_choice, check_index, check_indices, check_int, check_number,
                                    check_pair)


def test_check_int_accepts_numpy_and_rejects_bool_float_and_range():
    assert check_int("n", np.int16(3), 0, 5) == 3 and type(check_int("n", np.int16(3))) is int
    for bad in (True, 2.0, "2", None):
        with pytest.raises(ConfigError, match="n must be an integer"):
            check_int("n", bad, 0, 5)
    with pytest.raises(ConfigError, match=r"n must be an integer in \[0, 5\], got 6"):
        check_int("n", 6, 0, 5)
    with pytest.raises(InputError, match="≥ 1"):
        check_int("batch", 0, 1, error=InputError)


def test_check_number_and_pair():
    assert check_number("p", 1, 0, 1) == 1.0
    with pytest.raises(ConfigError, match=r"p = 0.0 is out of range \(0, 1\]"):
        check_number("p", 0.0, 0, 1, lo_open=True)
    for bad in (math.nan, math.inf, True, "x"):
        with pytest.raises(ConfigError, match="p"):
            check_number("p", bad, 0, 1)
    with pytest.raises(InputTypeError, match="p must be a number"):  # wrong type vs. bad value
        check_number("p", "0.5", 0, 1, error=InputError, type_error=InputTypeError)
    with pytest.raises(InputError, match="out of range") as e:
        check_number("p", 2, 0, 1, error=InputError, type_error=InputTypeError)
    assert not isinstance(e.value, InputTypeError)
    assert check_pair("r", (0.5, 2), 0, 10) == (0.5, 2.0)
    for bad in ((2, 1), (0, 11), "ab", 3, (0, math.nan), (1, 2, 3)):
        with pytest.raises(ConfigError, match="r"):
            check_pair("r", bad, 0, 10)


def test_check_bool_choice():
    assert check_bool("flag", np.bool_(True)) is True
    for bad in (1, 0, "yes", None):
        with pytest.raises(ConfigError, match="flag must be True or False"):
            check_bool("flag", bad)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    with pytest.raises(ConfigError, match="mode must be one of 'a', 'b'; got 'c'"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ConfigError):
        check_choice("mode", True, (1, 2))


def test_check_indices_and_index():
    assert check_indices(None, 3).tolist() == [0, 1, 2]
    assert check_indices(np.array([5, 2**32 - 1], np.uint64), 2).dtype == np.int64
    for bad in ([1], [0.0, 1.0], [True, False], [-1, 0], [0, 2**32]):
        with pytest.raises(InputError, match="indices"):
            check_indices(np.array(bad), 2)
    assert check_index(np.uint32(7)) == 7
    with pytest.raises(InputError, match=r"sample index must be an integer in \[0, 4294967295\]"):
        check_index(-1)


def test_parse_device():
    assert parse_device("cpu") == Device("cpu", None)
    assert parse_device(" CUDA:1 ") == Device("cuda", 1) and str(Device("cuda", 1)) == "cuda:1"
    assert parse_device("cuda") == Device("cuda", None)
    torch = pytest.importorskip("torch")
    assert parse_device(torch.device("cuda", 2)) == Device("cuda", 2)
    for bad in ("gpu", "cuda:x", 0, None, "auto", torch.device("meta")):
        with pytest.raises(ConfigError, match="device must be 'cpu', 'cuda' or 'cuda:N'"):
            parse_device(bad)
    assert parse_device("auto", allow_auto=True).kind in ("cpu", "cuda")
    with pytest.raises(InputError, match="bank device"):
        parse_device("tpu", name="bank device", error=InputError)
    assert torch_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU is available"):
            torch_device("cuda:0")


class _Squares(IndexedDataset):
    def __len__(self):
        return 4

    def read(self, k):
        return k * k


def test_indexed_dataset():
    ds = _Squares()
    assert ds[1] == 1 and ds[-1] == 9 and ds[np.int64(2)] == 4 and ds[1:3] == [1, 4] and list(ds) == [0, 1, 4, 9]
    assert not ds.typed
    with pytest.raises(IndexError, match="_Squares index 4 out of range for length 4"):
        ds[4]
    with pytest.raises(IndexError):
        ds[-5]
    for bad in (True, 1.0, "0", None):
        with pytest.raises(InputTypeError, match="indices must be integers or slices"):
            ds[bad]
    assert resolve_index(-1, 3) == 2
