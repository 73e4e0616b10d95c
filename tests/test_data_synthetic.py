"""Tests of insmix_fast.data.synthetic.SyntheticNuclei."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from insmix_fast.data import SyntheticNuclei, find_label_problems
from insmix_fast.errors import InputError, InputTypeError
from insmix_fast.validation import check_sample


@pytest.fixture(scope="module")
def ds() -> SyntheticNuclei:
    return SyntheticNuclei(seed=11, size=128, length=6)


def _touching_pairs(lab: np.ndarray) -> int:
    """Number of pixel pairs (4-neighbours) that join two different nuclei."""
    n = 0
    for a, b in ((lab[1:, :], lab[:-1, :]), (lab[:, 1:], lab[:, :-1])):
        n += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    return n


def _touching_pairs8(lab: np.ndarray) -> int:
    n = _touching_pairs(lab)
    for a, b in ((lab[1:, 1:], lab[:-1, :-1]), (lab[1:, :-1], lab[:-1, 1:])):
        n += int(np.count_nonzero((a > 0) & (b > 0) & (a != b)))
    return n


def test_is_sequence_with_list_semantics(ds):
    assert isinstance(ds, Sequence)
    assert len(ds) == 6
    a = ds[-1]
    b = ds[5]
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    with pytest.raises(IndexError):
        ds[6]
    with pytest.raises(IndexError):
        ds[-7]
    with pytest.raises(TypeError):
        ds["0"]
    sl = ds[1:3]
    assert isinstance(sl, list) and len(sl) == 2
    np.testing.assert_array_equal(sl[0][1], ds[1][1])
    assert len(list(iter(SyntheticNuclei(length=2, size=32)))) == 2


def test_samples_are_valid_and_ids_contiguous(ds):
    for image, labels in ds:
        check_sample(image, labels)
        assert image.shape == (128, 128, 3) and image.dtype == np.uint8
        assert labels.dtype == np.int32
        assert find_label_problems(labels).ok
        k = int(labels.max())
        assert k >= 5
        assert np.array_equal(np.unique(labels), np.arange(k + 1))


def test_deterministic_from_seed_and_index_only():
    a = SyntheticNuclei(seed=5, size=96, length=10)
    b = SyntheticNuclei(seed=5, size=96, length=3)
    later = a[7]  # accessed before the others: order must not matter
    for i in range(3):
        np.testing.assert_array_equal(a[i][0], b[i][0])
        np.testing.assert_array_equal(a[i][1], b[i][1])
    np.testing.assert_array_equal(later[0], SyntheticNuclei(seed=5, size=96, length=10)[7][0])
    other = SyntheticNuclei(seed=6, size=96, length=3)
    assert not np.array_equal(a[0][1], other[0][1])
    assert not np.array_equal(a[0][1], a[1][1])


def test_rectangular_size_and_large_seed():
    d = SyntheticNuclei(seed=2**64 - 1, size=(64, 160), length=2)
    image, labels = d[0]
    assert image.shape == (64, 160, 3) and labels.shape == (64, 160)
    assert find_label_problems(labels).ok


def test_appearance_is_he_like(ds):
    for image, labels in ds:
        fg = labels > 0
        img = image.astype(np.float64)
        nuc, bg = img[fg].mean(0), img[~fg].mean(0)
        # nuclei are darker than the eosin background ...
        assert nuc.mean() < bg.mean() - 30
        # ... and purple-blue (hematoxylin): blue exceeds red inside nuclei, red exceeds green outside (pink)
        assert nuc[2] > nuc[0]
        assert bg[0] > bg[1] + 20
        # texture: nuclei and background are not flat
        assert img[fg].std(0).mean() > 5
        assert img[~fg].std(0).mean() > 3


def test_nucleus_sizes_follow_radius_range():
    d = SyntheticNuclei(seed=3, size=256, length=3, radius_range=(5.0, 9.0), min_area=12)
    for _, labels in d:
        areas = np.bincount(labels.ravel())[1:]
        # nuclei cut by the border or by a touching neighbour may be smaller; none may be larger
        r_eq = np.sqrt(areas / np.pi)
        assert r_eq.max() <= 9.0 * 1.45
        inner = r_eq[areas > 0]
        assert np.median(inner) > 4.0
        assert areas.min() >= 12


def test_touching_fraction_controls_shared_borders():
    touching = SyntheticNuclei(seed=4, size=160, length=3, touching=0.6, density=1.5)
    apart = SyntheticNuclei(seed=4, size=160, length=3, touching=0.0, density=1.5)
    assert sum(_touching_pairs(lab) for _, lab in touching) > 20
    assert sum(_touching_pairs8(lab) for _, lab in apart) == 0


def test_density_changes_count():
    lo = SyntheticNuclei(seed=9, size=192, length=4, density=0.4)
    hi = SyntheticNuclei(seed=9, size=192, length=4, density=1.6)
    n_lo = sum(int(lab.max()) for _, lab in lo)
    n_hi = sum(int(lab.max()) for _, lab in hi)
    assert n_hi > 1.8 * n_lo


def test_stain_varies_between_tiles_unless_disabled():
    d = SyntheticNuclei(seed=1, size=64, length=4, stain_jitter=0.08)
    s0, s1 = d.stain_of(0), d.stain_of(1)
    assert s0.matrix.shape == (2, 3)
    np.testing.assert_allclose(np.linalg.norm(s0.matrix, axis=1), 1.0)
    assert not np.allclose(s0.matrix, s1.matrix)
    assert d.stain_of(-1).matrix.tolist() == d.stain_of(3).matrix.tolist()
    flat = SyntheticNuclei(seed=1, size=64, length=4, stain_jitter=0.0)
    np.testing.assert_allclose(flat.stain_of(0).matrix, flat.stain_of(3).matrix)
    # a different base stain gives visibly different colours for the same geometry
    other = SyntheticNuclei(seed=1, size=64, length=4, stain=[[0.3, 0.8, 0.5], [0.1, 0.9, 0.4]])
    a, b = d[0], other[0]
    np.testing.assert_array_equal(a[1], b[1])
    assert np.abs(a[0].astype(int) - b[0].astype(int)).mean() > 3


def test_as_arrays(ds):
    images, labels = ds.as_arrays(3)
    assert images.shape == (3, 128, 128, 3) and labels.shape == (3, 128, 128)
    np.testing.assert_array_equal(images[2], ds[2][0])
    np.testing.assert_array_equal(labels[1], ds[1][1])
    assert ds.as_arrays()[0].shape[0] == 6
    with pytest.raises(InputError):
        ds.as_arrays(7)


@pytest.mark.parametrize(
    "kw",
    [
        {"size": 8},
        {"size": (64,)},
        {"length": -1},
        {"radius_range": (9, 4)},
        {"elongation": (0.5, 2)},
        {"touching": 1.5},
        {"stain_jitter": -0.1},
        {"stain": np.ones((3, 3))},
        {"density": "high"},
    ],
)
def test_bad_arguments_raise(kw):
    with pytest.raises(InputError):
        SyntheticNuclei(**kw)


def test_bad_seed_type():
    with pytest.raises(InputTypeError):
        SyntheticNuclei(seed=1.5)
    with pytest.raises(InputError, match="length must be an integer"):  # validation.check_int: one error type
        SyntheticNuclei(length=2.0)




# ---------------------------------------------------------------------- typed tiles
@pytest.fixture(scope="module")
def typed() -> SyntheticNuclei:
    return SyntheticNuclei(seed=11, size=128, length=6, n_classes=4)


def test_typed_tiles_are_typed_samples(typed):
    from insmix_fast.data.typed import finish_sample

    assert typed.typed and typed.class_names == ("background", "lymphocyte-like", "tumour-like", "spindle-like",
                                                 "irregular")
    seen = set()
    for k in range(len(typed)):
        image, labels, types = typed[k]
        assert types.dtype == np.int32 and types.shape == labels.shape
        # one class per instance, 0 exactly on background, ids 1..K, clean topology: finish_sample's checks
        out = finish_sample(image, labels, types, typed.class_names, name=f"tile {k}")
        np.testing.assert_array_equal(out[1], labels)
        np.testing.assert_array_equal(out[2], types)
        seen |= set(np.unique(types[types > 0]).tolist())
    assert seen == {1, 2, 3, 4}
    image, labels, types = typed.generate(2)
    a, b = typed.geometry(2, types=True)
    np.testing.assert_array_equal(a, labels)
    np.testing.assert_array_equal(typed.render(2, a, b), image)
    np.testing.assert_array_equal(typed.as_arrays(3)[2][2], types)


def test_untyped_tiles_do_not_change_with_the_class_options():
    """n_classes=0 draws nothing from the class stream: the tile is the untyped one whatever else is set."""
    plain = SyntheticNuclei(seed=3, size=96, length=2)
    again = SyntheticNuclei(seed=3, size=96, length=2, n_classes=0)
    for k in range(2):
        for x, y in zip(plain[k], again[k]):
            np.testing.assert_array_equal(x, y)
    assert len(plain[0]) == 2 and plain.class_names is None


def test_class_appearance_differs_by_class():
    """Archetypes: lymphocyte-like nuclei small and dark, tumour-like large and pale, spindle-like elongated."""
    ds = SyntheticNuclei(seed=5, size=192, length=6, n_classes=4)
    area, value, elong = {c: [] for c in range(1, 5)}, {c: [] for c in range(1, 5)}, {c: [] for c in range(1, 5)}
    for k in range(len(ds)):
        image, labels, types = ds[k]
        gray = image.mean(axis=2)
        for i in range(1, int(labels.max()) + 1):
            ys, xs = np.nonzero(labels == i)
            c = int(types[ys[0], xs[0]])
            area[c].append(ys.size)
            value[c].append(gray[ys, xs].mean())
            ev = np.linalg.eigvalsh(np.cov(np.stack([ys, xs]).astype(float)) + 1e-6 * np.eye(2))
            elong[c].append(np.sqrt(ev[1] / ev[0]))
    m = {name: {c: float(np.median(v[c])) for c in v} for name, v in (("area", area), ("value", value), ("elong", elong))}
    assert m["area"][1] < m["area"][3] < m["area"][2]
    assert m["value"][1] < m["value"][2]  # darker
    assert m["elong"][3] > 1.8 > m["elong"][1]


def test_class_mix_controls_the_share():
    ds = SyntheticNuclei(seed=2, size=128, length=4, n_classes=3, class_mix=(0.8, 0.2, 0.0),
                         class_names=("background", "a", "b", "c"))
    counts = np.zeros(4, int)
    for k in range(len(ds)):
        _, labels, types = ds[k]
        ids, first = np.unique(labels, return_index=True)
        counts += np.bincount(types.ravel()[first[ids > 0]], minlength=4)
    assert counts[3] == 0 and counts[1] > 2 * counts[2] > 0 and ds.class_names[1] == "a"


@pytest.mark.parametrize("kw, match", [
    ({"class_mix": (1, 1)}, "n_classes"),
    ({"n_classes": 2, "class_mix": (1, 1, 1)}, "class_mix"),
    ({"n_classes": 2, "class_mix": (1, -1)}, "class_mix"),
    ({"n_classes": 2, "class_mix": (0, 0)}, "class_mix"),
    ({"n_classes": 2, "class_names": ("background", "a")}, "class_names"),
    ({"n_classes": 2, "class_names": ("a", "b", "c")}, "background"),
    ({"n_classes": -1}, "n_classes"),
])
def test_bad_class_arguments(kw, match):
    with pytest.raises(InputError, match=match):
        SyntheticNuclei(**kw)


def test_typed_bank_from_typed_tiles(typed):
    from insmix_fast.bank import InstanceBank

    bank = InstanceBank.from_samples(typed, progress=False)
    assert bank.class_names == typed.class_names and (bank.class_counts()[1:] > 0).all()
