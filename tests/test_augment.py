"""Traditional augmentations: labels stay valid, geometry moves image and labels together."""

import numpy as np
import pytest

from insmix_fast.augment import TraditionalAugment, traditional_augment
from insmix_fast.data.labels import find_label_problems
from insmix_fast.errors import ConfigError, InputError

from test_baselines import _sample


def test_labels_valid_and_deterministic():
    img, lab = _sample(3, size=64)
    aug = TraditionalAugment()
    for s in range(8):
        a, l = aug(img, lab, seed=s, index=2)
        assert a.dtype == np.uint8 and a.shape == img.shape
        assert l.dtype == np.int32 and l.shape == lab.shape
        assert find_label_problems(l).split_ids.size == 0
        ids, cnt = np.unique(l[l > 0], return_counts=True)
        assert (cnt >= 8).all()
        a2, l2 = aug(img, lab, seed=s, index=2)
        np.testing.assert_array_equal(a, a2)
        np.testing.assert_array_equal(l, l2)
    a3, _ = aug(img, lab, seed=0, index=3)
    a4, _ = aug(img, lab, seed=0, index=2)
    assert not np.array_equal(a3, a4)


def test_geometry_moves_image_and_labels_together():
    img, lab = _sample(4, size=96, n=20)
    # image encodes the foreground: white nuclei on black
    enc = np.zeros_like(img)
    enc[lab > 0] = 255
    aug = TraditionalAugment(brightness=0, contrast=0, saturation=0, hue=0, blur_p=0, scale=(0.7, 1.3), rotate=180)
    for s in range(6):
        a, l = aug(enc, lab, seed=s)
        fg_img = a[..., 0] > 127
        agree = (fg_img == (l > 0)).mean()
        assert agree > 0.97, (s, agree)
        # the transform did something
        assert not np.array_equal(l > 0, lab > 0)


def test_flip_only_is_exact():
    img, lab = _sample(5, size=40)
    aug = TraditionalAugment(scale=(1, 1), shift=0, rotate=0, brightness=0, contrast=0, saturation=0, hue=0, blur_p=0)
    seen = set()
    for s in range(12):
        a, l = aug(img, lab, seed=s)
        for name, f in (("id", lambda x: x), ("h", lambda x: x[:, ::-1]), ("v", lambda x: x[::-1]), ("hv", lambda x: x[::-1, ::-1])):
            if np.array_equal(a, f(img)) and np.array_equal(l, f(lab)):
                seen.add(name)
                break
        else:
            raise AssertionError("flip-only result is not a flip of the input")
    assert len(seen) >= 3


def test_photometric_keeps_labels_and_changes_colour():
    img, lab = _sample(6, size=48)
    aug = TraditionalAugment(scale=(1, 1), shift=0, rotate=0, flip=False, blur_p=1.0)
    a, l = aug(img, lab, seed=1)
    np.testing.assert_array_equal(l, lab)
    assert np.abs(a.astype(int) - img.astype(int)).mean() > 1


def test_batch_and_functional():
    img, lab = _sample(7, size=32)
    imgs = np.stack([img, img])
    labs = np.stack([lab, lab])
    aug = TraditionalAugment()
    bi, bl = aug.batch(imgs, labs, seed=3, indices=[5, 6])
    a, l = traditional_augment(img, lab, seed=3, index=6)
    np.testing.assert_array_equal(bi[1], a)
    np.testing.assert_array_equal(bl[1], l)


def test_bad_args():
    img, lab = _sample(7, size=32)
    with pytest.raises(ConfigError):
        TraditionalAugment(scale=(1.2, 0.8))
    with pytest.raises(ConfigError):
        TraditionalAugment(hue=0.9)
    with pytest.raises(ConfigError):
        TraditionalAugment(flip=1)
    with pytest.raises(InputError):
        TraditionalAugment()(img, lab[:10])
