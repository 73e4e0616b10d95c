"""InsMix written in place in the caller's layout and dtype (core.insmix_into / insmix_batch_into):
the same pixels, labels and plans as insmix / insmix_batch for the same draw; core.insmix_arrays:
the same arrays without the plan."""

import numpy as np
import pytest

from insmix_fast.config import InsMixConfig
from insmix_fast.core import insmix, insmix_arrays, insmix_batch, insmix_batch_into, insmix_into
from insmix_fast.errors import ConfigError, InputError

from typed_data import typed_bank, types_of

CFG = InsMixConfig()


@pytest.fixture(scope="module")
def batch(tiles256):
    images = np.stack([t[0] for t in tiles256[:4]])
    labels = np.stack([t[1] for t in tiles256[:4]]).astype(np.int32)
    labels[2] = np.where(labels[2] > 0, labels[2] + 100_000, 0)  # sparse ids: the per-tile fallback path
    return images, labels


def _same_result(got, want):
    np.testing.assert_array_equal(got.labels, want.labels)
    np.testing.assert_array_equal(got.paste_masks, want.paste_masks)
    np.testing.assert_array_equal(got.shuffled_masks, want.shuffled_masks)
    for b in range(len(want.moves)):
        assert np.array_equal(got.pastes[b], want.pastes[b]) and np.array_equal(got.moves[b], want.moves[b])


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
@pytest.mark.parametrize("label_dtype", [np.int32, np.int64])
def test_batch_into_equals_insmix_batch(batch, bank256, layout, label_dtype):
    images, labels = batch
    want = insmix_batch(images, labels, bank256, CFG, seed=5, indices=[3, 1, 4, 1])
    assert sum(len(p) for p in want.pastes) and sum(len(m) for m in want.moves)
    if layout == "nhwc":
        x = images.copy()
        out = x
    else:
        x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        out = x.transpose(0, 2, 3, 1)  # written in place, channel-first in memory
    got = insmix_batch_into(out, labels.astype(label_dtype), bank256, CFG, seed=5, indices=[3, 1, 4, 1])
    assert got.images is out
    np.testing.assert_array_equal(out, want.images)
    _same_result(got, want)


@pytest.mark.parametrize("layout", ["nhwc", "nchw"])
def test_batch_into_without_masks(batch, bank256, layout):
    """``masks=False``: the same images, labels, pastes and moves (the sparse tile's fallback
    included), no masks — and a result that says so when asked for them."""
    images, labels = batch
    want = insmix_batch(images, labels, bank256, CFG, seed=7, indices=[0, 2, 4, 6])
    x = images.copy() if layout == "nhwc" else np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    out = x if layout == "nhwc" else x.transpose(0, 2, 3, 1)
    got = insmix_batch_into(out, labels.astype(np.int64), bank256, CFG, seed=7, indices=[0, 2, 4, 6], masks=False)
    np.testing.assert_array_equal(out, want.images)
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.paste_masks is None and got.shuffled_masks is None and got[2].paste_mask is None
    for b in range(len(want.moves)):
        assert np.array_equal(got.pastes[b], want.pastes[b]) and np.array_equal(got.moves[b], want.moves[b])
    with pytest.raises(InputError, match="masks=False"):
        got.original_masks


def test_batch_into_writes_out_labels(batch, bank256):
    images, labels = batch
    want = insmix_batch(images, labels, bank256, CFG, seed=2)
    for dtype in (np.int32, np.int64):
        out_labels = np.full(labels.shape, -1, dtype)
        got = insmix_batch_into(images.copy(), labels.astype(np.int64), bank256, CFG, seed=2, out_labels=out_labels)
        assert got.labels is out_labels
        np.testing.assert_array_equal(out_labels, want.labels)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_batch_into_float(batch, bank256, dtype):
    """A float image of the uint8 one (v / 255): InsMix gives the float of the uint8 result."""
    images, labels = batch
    want = insmix_batch(images, labels, bank256, CFG, seed=9)
    x = (images.astype(np.float64) / 255.0).astype(dtype).transpose(0, 3, 1, 2).copy()
    got = insmix_batch_into(x.transpose(0, 2, 3, 1), labels, bank256, CFG, seed=9, max_value=1.0)
    np.testing.assert_array_equal(x.transpose(0, 2, 3, 1), (want.images / 255.0).astype(dtype))
    _same_result(got, want)


def test_into_equals_insmix(tiles256, bank256):
    image, labels = tiles256[5][:2]
    want = insmix(image, labels, bank256, CFG, seed=3, index=8)
    x = np.ascontiguousarray(image.transpose(2, 0, 1))
    got = insmix_into(x.transpose(1, 2, 0), labels.astype(np.int64), bank256, CFG, seed=3, index=8)
    np.testing.assert_array_equal(x.transpose(1, 2, 0), want.image)
    np.testing.assert_array_equal(got.labels, want.labels)
    assert got.plan == want.plan


def test_into_errors(batch, bank256):
    images, labels = batch
    with pytest.raises(ConfigError, match="template_source='self'"):
        insmix_batch_into(images.copy(), labels, None, InsMixConfig(template_source="self"))
    with pytest.raises(InputError, match="max_value"):
        insmix_batch_into(images.astype(np.float32), labels, bank256, CFG)
    ro = images.copy()
    ro.flags.writeable = False
    with pytest.raises(InputError, match="read-only"):
        insmix_batch_into(ro, labels, bank256, CFG)
    with pytest.raises(InputError, match="to match labels"):
        insmix_batch_into(images[:, :8].copy(), labels, bank256, CFG)
    with pytest.raises(InputError, match="negative"):
        insmix_batch_into(images.copy(), -labels.astype(np.int64) - 1, bank256, CFG)
    with pytest.raises(InputError, match="int32"):
        insmix_batch_into(images.copy(), labels.astype(np.int64) + 2**31, bank256, CFG)
    with pytest.raises(InputError, match="out_labels"):
        insmix_batch_into(images.copy(), labels, bank256, CFG, out_labels=np.zeros(labels.shape, np.int16))
    with pytest.raises(InputError, match="uint8 or float"):
        insmix_into(images[0].astype(np.int16), labels[0], bank256, CFG)


@pytest.mark.parametrize("sparse", [False, True])
def test_arrays_equal_insmix(tiles256, bank256, sparse):
    """The arrays alone, bit for bit those of insmix (new image) and insmix_into (in place,
    channel-first uint8 and float32), also for ids the core relabels (``sparse``)."""
    image, labels = tiles256[6][:2]
    if sparse:
        labels = np.where(labels > 0, labels + 100_000, 0)
    want = insmix(image, labels, bank256, CFG, seed=4, index=2)
    assert len(want.pastes)
    img, lab, typ = insmix_arrays(image, labels, bank256, CFG, seed=4, index=2)
    assert typ is None and img is not image
    np.testing.assert_array_equal(img, want.image)
    np.testing.assert_array_equal(lab, want.labels)
    x = np.ascontiguousarray(image.transpose(2, 0, 1))
    img, lab, _ = insmix_arrays(x.transpose(1, 2, 0), labels, bank256, CFG, seed=4, index=2, in_place=True)
    assert np.shares_memory(img, x)
    np.testing.assert_array_equal(x.transpose(1, 2, 0), want.image)
    np.testing.assert_array_equal(lab, want.labels)
    xf = image.astype(np.float32) / 255
    insmix_arrays(xf, labels, bank256, CFG, seed=4, index=2, in_place=True, max_value=1.0)
    np.testing.assert_array_equal(xf, (want.image / 255.0).astype(np.float32))


def test_arrays_typed(small_data):
    bank = typed_bank()
    image, labels = small_data[1]
    types = types_of(labels)
    want = insmix(image, labels, bank, CFG, seed=6, types=types)
    img, lab, typ = insmix_arrays(image, labels, bank, CFG, seed=6, types=types)
    assert len(want.pastes)
    for got, ref in ((img, want.image), (lab, want.labels), (typ, want.types)):
        np.testing.assert_array_equal(got, ref)


def test_arrays_errors(batch, bank256):
    images, labels = batch
    with pytest.raises(ConfigError, match="template_source='self'"):
        insmix_arrays(images[0].copy(), labels[0], None, InsMixConfig(template_source="self"), in_place=True)
    with pytest.raises(InputError, match="uint8"):
        insmix_arrays(images[0].astype(np.float32), labels[0], bank256, CFG)
    with pytest.raises(InputError, match="negative"):
        insmix_arrays(images[0], -labels[0] - 1, bank256, CFG)


@pytest.mark.parametrize("sparse", [False, True])
def test_arrays_channel_first_source(tiles256, bank256, sparse):
    """A channel-first uint8 image seen through ``.transpose(1, 2, 0)``: the kernels work on its
    planes and the new image is laid out channel-first, with insmix's values; the input is left
    alone. insmix_into on such a view gives insmix's masks and plan too."""
    image, labels = tiles256[5][:2]
    SHUFFLE = InsMixConfig(p_paste=1.0, alpha=0.5, patch=8)  # background patches move too
    if sparse:
        labels = np.where(labels > 0, labels + 100_000, 0)
    want = insmix(image, labels, bank256, SHUFFLE, seed=9, index=1)
    assert len(want.pastes) and want.shuffled_mask.any()
    x = np.ascontiguousarray(image.transpose(2, 0, 1))
    before = x.copy()
    img, lab, _ = insmix_arrays(x.transpose(1, 2, 0), labels, bank256, SHUFFLE, seed=9, index=1)
    assert img.transpose(2, 0, 1).flags.c_contiguous and not np.shares_memory(img, x)
    np.testing.assert_array_equal(img, want.image)
    np.testing.assert_array_equal(lab, want.labels)
    np.testing.assert_array_equal(x, before)
    into = insmix_into(x.copy().transpose(1, 2, 0), labels, bank256, SHUFFLE, seed=9, index=1)
    np.testing.assert_array_equal(into.image, want.image)
    np.testing.assert_array_equal(into.paste_mask, want.paste_mask)
    np.testing.assert_array_equal(into.shuffled_mask, want.shuffled_mask)
    assert np.array_equal(into.pastes, want.pastes) and np.array_equal(into.plan.moves, want.plan.moves)
    xf = x.astype(np.float64) / 255 * 2.0
    insmix_arrays(xf.transpose(1, 2, 0), labels, bank256, SHUFFLE, seed=9, index=1, in_place=True, max_value=2.0)
    np.testing.assert_array_equal(xf.transpose(1, 2, 0), want.image / 255.0 * 2.0)


def test_arrays_channel_first_with_self_templates_is_copied(tiles256):
    """Templates cut from the tile read its pixels as H×W×3: a channel-first view is copied to
    that layout first (the result is insmix's, laid out C-contiguous)."""
    image, labels = tiles256[3][:2]
    cfg = InsMixConfig(template_source="self")
    want = insmix(image, labels, None, cfg, seed=2)
    img, lab, _ = insmix_arrays(np.ascontiguousarray(image.transpose(2, 0, 1)).transpose(1, 2, 0), labels, None, cfg,
                                seed=2)
    assert img.flags.c_contiguous
    np.testing.assert_array_equal(img, want.image)
    np.testing.assert_array_equal(lab, want.labels)


@pytest.mark.parametrize("channel_first", [False, True])
@pytest.mark.parametrize("label_dtype", [None, np.int32, np.int64])
def test_arrays_labels_dtype_and_output_hook(tiles256, bank256, channel_first, label_dtype):
    """``labels_dtype`` gives insmix's labels in that dtype (int64 widened), also for ids the core
    relabels; ``on_outputs`` sees the very arrays returned, before InsMix writes them."""
    image, labels = tiles256[7][:2]
    src = np.ascontiguousarray(image.transpose(2, 0, 1)).transpose(1, 2, 0) if channel_first else image
    for lab_in in (labels, np.where(labels > 0, labels + 100_000, 0)):
        want = insmix(image, lab_in, bank256, CFG, seed=11)
        seen = []

        def hook(img, lab):
            seen.append((img, lab))
            img[...] = 0  # (a real hook must not write them: here, to show InsMix writes them afterwards)
            lab[...] = -1

        img, lab, _ = insmix_arrays(src, lab_in, bank256, CFG, seed=11, labels_dtype=label_dtype, on_outputs=hook)
        assert lab.dtype == (label_dtype or np.int32)
        np.testing.assert_array_equal(img, want.image)
        np.testing.assert_array_equal(lab, want.labels)
        (hook_img, hook_lab), = seen
        assert hook_img is img and hook_lab is lab
        x = src.copy()  # in place: the hook gets the image itself
        seen.clear()
        img, lab, _ = insmix_arrays(x, lab_in, bank256, CFG, seed=11, in_place=True, labels_dtype=label_dtype,
                                    on_outputs=lambda i, l: seen.append((i, l)))
        assert img is x and seen[0][0] is x and seen[0][1] is lab
        np.testing.assert_array_equal(lab, want.labels)
        np.testing.assert_array_equal(x, want.image)


def test_arrays_labels_dtype_errors(tiles256, bank256):
    image, labels = tiles256[7][:2]
    for bad in (np.uint16, np.float32, "float", object):
        with pytest.raises(InputError, match="labels_dtype must be int32 or int64"):
            insmix_arrays(image, labels, bank256, CFG, labels_dtype=bad)
    from insmix_fast.errors import InputTypeError
    with pytest.raises(InputTypeError, match="on_outputs must be a function"):
        insmix_arrays(image, labels, bank256, CFG, on_outputs=[])


@pytest.mark.parametrize("patch, alpha, p_paste", [(4, 1.0, 0.0), (8, 0.3, 0.5), (16, 0.0, 1.0), (32, 1.0, 1.0)])
def test_channel_first_and_maskless_paths_across_configs(tiles256, bank256, patch, alpha, p_paste):
    """The channel-first and mask-less kernel paths against insmix / insmix_batch for background-only,
    paste-only and mixed configurations and patch sizes: per tile (uint8 new image with int64 labels,
    in place with masks, float32 in place) and per batch (uint8 without masks, float64 with masks)."""
    cfg = InsMixConfig(patch=patch, alpha=alpha, p_paste=p_paste)
    for k in range(3):
        image, labels = tiles256[k][:2]
        want = insmix(image, labels, bank256, cfg, seed=k, index=k)
        planes = np.ascontiguousarray(image.transpose(2, 0, 1))
        img, lab, _ = insmix_arrays(planes.transpose(1, 2, 0), labels, bank256, cfg, seed=k, index=k,
                                    labels_dtype=np.int64)
        np.testing.assert_array_equal(img, want.image)
        np.testing.assert_array_equal(lab, want.labels)
        got = insmix_into(planes.copy().transpose(1, 2, 0), labels, bank256, cfg, seed=k, index=k)
        np.testing.assert_array_equal(got.image, want.image)
        np.testing.assert_array_equal(got.paste_mask, want.paste_mask)
        np.testing.assert_array_equal(got.shuffled_mask, want.shuffled_mask)
        f = (planes / 255.0).astype(np.float32)
        insmix_arrays(f.transpose(1, 2, 0), labels, bank256, cfg, seed=k, index=k, in_place=True, max_value=1.0)
        np.testing.assert_array_equal(f.transpose(1, 2, 0), (want.image / 255.0).astype(np.float32))
    images = np.stack([t[0] for t in tiles256[:4]])
    labels = np.stack([t[1] for t in tiles256[:4]]).astype(np.int64)
    want = insmix_batch(images, labels, bank256, cfg, seed=patch)
    x = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
    got = insmix_batch_into(x.transpose(0, 2, 3, 1), labels, bank256, cfg, seed=patch, masks=False)
    np.testing.assert_array_equal(x.transpose(0, 2, 3, 1), want.images)
    np.testing.assert_array_equal(got.labels, want.labels)
    xf = np.ascontiguousarray(images.transpose(0, 3, 1, 2)) / 255.0
    got = insmix_batch_into(xf.transpose(0, 2, 3, 1), labels, bank256, cfg, seed=patch, max_value=1.0)
    np.testing.assert_array_equal(xf.transpose(0, 2, 3, 1), want.images / 255.0)
    _same_result(got, want)
