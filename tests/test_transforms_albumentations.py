"""The albumentations adapter inside real ``A.Compose`` pipelines: bit-equal to the functional
``insmix()`` for the same draws, reproducible under albumentations' seeding, strict inputs."""

import numpy as np
import pytest

A = pytest.importorskip("albumentations", minversion="2.0")

from insmix_fast.config import InsMixConfig  # noqa: E402
from insmix_fast.core import insmix  # noqa: E402
from insmix_fast.errors import ConfigError, InputError, InputTypeError  # noqa: E402
from insmix_fast.transforms.albumentations import InsMix  # noqa: E402
from insmix_fast.transforms.common import TYPED_INSMIX  # noqa: E402
from typed_data import typed_bank, types_of  # noqa: E402

#: Pastes for every original and many moved background patches: nothing is vacuous.
CFG = InsMixConfig(p_paste=1.0, alpha=0.5, patch=8)
typed = pytest.mark.skipif(not TYPED_INSMIX, reason="needs typed InsMix (issue 14)")


def _record(store, key):
    def f(x, **_):
        store[key] = x.copy()
        return x
    return f


def _spy(store, prefix):
    return A.Lambda(image=_record(store, f"{prefix}_image"), mask=_record(store, f"{prefix}_mask"), p=1.0)


def _insmix_seed(out):
    (params,) = [p for name, p in out["applied_transforms"] if name == "InsMix"]
    return params["insmix_seed"]


@pytest.mark.parametrize("where", ["before-insmix", "after-insmix"])
def test_compose_gives_the_functional_result(small_data, small_bank, where):
    """Geometric transforms before or after InsMix: what InsMix returns inside the pipeline is
    ``insmix(what it received, seed=the seed it drew)``, bit for bit."""
    seen = {}
    geo = [A.HorizontalFlip(p=0.5), A.RandomRotate90(p=1.0), A.Affine(rotate=(-15, 15), p=1.0)]
    core = [_spy(seen, "in"), InsMix(small_bank, CFG, p=1.0), _spy(seen, "out")]
    pipeline = A.Compose(geo + core if where == "before-insmix" else core + geo, seed=11, save_applied_params=True)
    pastes = moved = 0
    for k in range(4):
        image, labels = small_data[k]
        out = pipeline(image=image, mask=labels)
        ref = insmix(seen["in_image"], seen["in_mask"], small_bank, CFG, seed=_insmix_seed(out))
        np.testing.assert_array_equal(seen["out_image"], ref.image)
        np.testing.assert_array_equal(seen["out_mask"], ref.labels)
        if where == "before-insmix":
            np.testing.assert_array_equal(out["image"], ref.image)
            np.testing.assert_array_equal(out["mask"], ref.labels)
        pastes += len(ref.pastes)
        moved += int(ref.shuffled_mask.any())
    assert pastes >= 4 and moved >= 2


def test_seeded_compose_is_reproducible(small_data, small_bank):
    def run(seed):
        pipeline = A.Compose([A.HorizontalFlip(p=0.5), InsMix(small_bank, CFG, p=0.7)], seed=seed)
        return [pipeline(image=small_data[k][0], mask=small_data[k][1]) for k in range(6)]

    a, b, c = run(5), run(5), run(6)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x["image"], y["image"])
        np.testing.assert_array_equal(x["mask"], y["mask"])
    assert any(not np.array_equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_probability(small_data, small_bank):
    image, labels = small_data[0]
    never = A.Compose([InsMix(small_bank, CFG, p=0.0)], seed=0)(image=image, mask=labels)
    np.testing.assert_array_equal(never["image"], image)
    np.testing.assert_array_equal(never["mask"], labels)
    t = InsMix(small_bank, CFG, p=0.5)
    pipeline = A.Compose([t], seed=1)
    applied = 0
    for _ in range(40):
        out = pipeline(image=image, mask=labels)
        applied += bool(t.params)
        if not t.params:
            np.testing.assert_array_equal(out["image"], image)
    assert 8 <= applied <= 32


def test_float_images_are_exact(small_data, small_bank):
    """Float input: untouched pixels come back bit for bit, moved background patches are
    copied from the float input, pasted nuclei are template/255; 0..255 floats with
    ``max_value=255`` give exactly the uint8 result."""
    image, labels = small_data[1]
    rng = np.random.default_rng(0)
    x = np.clip(image.astype(np.float32) / 255 + rng.uniform(-1e-3, 1e-3, image.shape).astype(np.float32), 0, 1)
    t = InsMix(small_bank, CFG, p=1.0)
    out = A.Compose([t], seed=3, save_applied_params=True)(image=x, mask=labels)
    ref = insmix(image, labels, small_bank, CFG, seed=_insmix_seed(out))
    y = out["image"]
    assert y.dtype == np.float32 and y.shape == x.shape
    assert ref.paste_mask.any() and ref.shuffled_mask.any()
    same = ~(ref.paste_mask | ref.shuffled_mask)
    np.testing.assert_array_equal(y[same], x[same])
    np.testing.assert_array_equal(y[ref.paste_mask], ref.image[ref.paste_mask].astype(np.float32) / np.float32(255))
    t, gw = CFG.patch, image.shape[1] // CFG.patch
    for src, dst in ref.plan.moves:
        sy, sx, dy, dx = src // gw * t, src % gw * t, dst // gw * t, dst % gw * t
        np.testing.assert_array_equal(y[dy:dy + t, dx:dx + t], x[sy:sy + t, sx:sx + t])
    out255 = A.Compose([InsMix(small_bank, CFG, p=1.0, max_value=255.0)], seed=3)(
        image=image.astype(np.float32), mask=labels)
    np.testing.assert_array_equal(out255["image"], ref.image.astype(np.float32))


@pytest.mark.parametrize("dtype, out_dtype", [(np.uint8, np.int32), (np.uint16, np.int32), (np.int32, np.int32),
                                              (np.uint32, np.uint32), (np.int64, np.int64)])
def test_mask_dtypes(small_data, small_bank, dtype, out_dtype):
    image, labels = small_data[2]
    out = A.Compose([InsMix(small_bank, CFG, p=1.0)], seed=4, save_applied_params=True)(
        image=image, mask=labels.astype(dtype))
    ref = insmix(image, labels, small_bank, CFG, seed=_insmix_seed(out))
    assert out["mask"].dtype == out_dtype
    np.testing.assert_array_equal(out["mask"], ref.labels)


def test_mask_with_a_channel_axis_keeps_it(small_data, small_bank):
    image, labels = small_data[2]
    out = A.Compose([InsMix(small_bank, CFG, p=1.0)], seed=4, save_applied_params=True)(
        image=image, mask=labels[..., None])
    ref = insmix(image, labels, small_bank, CFG, seed=_insmix_seed(out))
    assert out["mask"].shape == labels.shape + (1,)
    np.testing.assert_array_equal(out["mask"][..., 0], ref.labels)


def test_replay_applies_the_saved_draw(small_data, small_bank):
    (image, labels), (image2, labels2) = small_data[0], small_data[3]
    rc = A.ReplayCompose([InsMix(small_bank, CFG, p=1.0)])
    out = rc(image=image, mask=labels)
    again = A.ReplayCompose.replay(out["replay"], image=image, mask=labels)
    np.testing.assert_array_equal(again["image"], out["image"])
    other = A.ReplayCompose.replay(out["replay"], image=image2, mask=labels2)
    seed = out["replay"]["transforms"][0]["params"]["insmix_seed"]
    np.testing.assert_array_equal(other["image"], insmix(image2, labels2, small_bank, CFG, seed=seed).image)


def test_to_dict_keeps_the_objects(small_bank):
    """``A.to_dict`` works in-process (ReplayCompose relies on it); the bank stays an object,
    so a JSON ``A.save`` is not possible — InsMix is rebuilt in code."""
    d = A.to_dict(A.Compose([InsMix(small_bank, CFG, p=0.3)]))
    (t,) = d["transform"]["transforms"]
    assert t["bank"] is small_bank and t["config"] == CFG and t["p"] == 0.3


def _bad_calls(image, labels):
    return [
        ("float mask", dict(image=image, mask=labels.astype(np.float32)), InputError, "'mask'|mask must be an integer"),
        ("bool mask", dict(image=image, mask=labels > 0), InputError, "integer instance map"),
        ("no mask", dict(image=image), InputError, "'mask' is missing"),
        ("channel-first image", dict(image=np.ascontiguousarray(image.transpose(2, 0, 1)), mask=labels[:3]),
         InputError, "channel-first"),
        ("grey image", dict(image=image[..., 0], mask=labels), InputError, "H×W×3"),
        ("3-D mask", dict(image=image, mask=np.stack([labels, labels], -1)), InputError, "H×W instance map"),
        ("negative ids", dict(image=image, mask=labels - 1), InputError, "InsMix \\(albumentations\\).*negative"),
        ("list image", dict(image=image.tolist(), mask=labels), InputTypeError, "numpy array"),
        ("no image", dict(mask=labels), InputError, "'image' is missing"),
        ("a batch", dict(images=np.stack([image, image]), masks=np.stack([labels, labels])), InputError,
         "InsMixBatch"),
        ("bboxes", dict(image=image, mask=labels, bboxes=np.array([[0, 0, 4, 4]], np.float32)), InputError,
         "cannot update 'bboxes'"),
    ]


@pytest.mark.parametrize("case", range(11))
def test_bad_input_is_refused_with_its_name(small_data, small_bank, case):
    image, labels = small_data[0]
    what, kwargs, error, pattern = _bad_calls(image, labels)[case]
    t = InsMix(small_bank, CFG, p=1.0)
    with pytest.raises(error, match=pattern):
        t(**kwargs)


def test_other_mask_targets_are_refused(small_data, small_bank):
    image, labels = small_data[0]
    pipeline = A.Compose([InsMix(small_bank, CFG, p=1.0)], additional_targets={"semantic": "mask"})
    with pytest.raises(InputError, match="'semantic'"):
        pipeline(image=image, mask=labels, semantic=labels > 0)


def test_bad_arguments():
    with pytest.raises(ConfigError, match="bank is None"):
        InsMix(None)
    with pytest.raises(InputTypeError, match="bank must be an InstanceBank"):
        InsMix("bank.npz")
    with pytest.raises(ConfigError, match="p"):
        InsMix(None, InsMixConfig(foreground=False), p=1.5)
    with pytest.raises(InputTypeError, match="config"):
        InsMix(None, {"alpha": 0.5})
    with pytest.raises(ConfigError, match="max_value"):
        InsMix(None, InsMixConfig(foreground=False), max_value=0)
    with pytest.raises(ConfigError, match="types_key"):
        InsMix(None, InsMixConfig(foreground=False), types_key="mask")


def test_background_only_needs_no_bank(small_data):
    image, labels = small_data[0]
    cfg = InsMixConfig(foreground=False, alpha=0.8, patch=8)
    out = A.Compose([InsMix(None, cfg, p=1.0)], seed=0, save_applied_params=True)(image=image, mask=labels)
    ref = insmix(image, labels, None, cfg, seed=_insmix_seed(out))
    assert ref.shuffled_mask.any()
    np.testing.assert_array_equal(out["image"], ref.image)


# ---------------------------------------------------------------------- nucleus types
@pytest.mark.skipif(TYPED_INSMIX, reason="insmix accepts types here")
def test_types_key_needs_a_typed_core(small_bank):
    with pytest.raises(InputError, match="types="):
        InsMix(small_bank, types_key="types")


@typed
def test_type_map_travels_as_a_mask_target(small_data):
    """The type map is flipped with the mask before InsMix and comes out as the functional result's
    types: pasted nuclei carry their template's class."""
    bank = typed_bank()
    t = InsMix(bank, CFG, types_key="types", p=1.0)
    # (no spy here: A.Lambda's mask function sees every mask target, the type map too)
    pipeline = A.Compose([A.HorizontalFlip(p=1.0), t], additional_targets={"types": "mask"}, seed=0,
                         save_applied_params=True)
    image, labels = small_data[0]
    types = types_of(labels)
    out = pipeline(image=image, mask=labels, types=types)
    flip = (slice(None), slice(None, None, -1))
    ref = insmix(np.ascontiguousarray(image[flip]), np.ascontiguousarray(labels[flip]), bank, CFG,
                 seed=_insmix_seed(out), types=np.ascontiguousarray(types[flip]))
    np.testing.assert_array_equal(out["mask"], ref.labels)
    np.testing.assert_array_equal(out["types"], ref.types)
    assert out["types"].dtype == types.dtype
    assert len(ref.pastes)  # not vacuous: pasted nuclei, each of its template's class
    for p in ref.pastes:
        assert set(np.unique(out["types"][out["mask"] == p["label"]])) == {bank.classes[p["template"]]}


@typed
def test_type_map_with_a_float_image(small_data):
    """Float images take the tensor path; the type map comes out as for the uint8 image."""
    bank = typed_bank()
    image, labels = small_data[1]
    types = types_of(labels, np.int32)
    t = InsMix(bank, CFG, types_key="types", p=1.0)
    pipeline = A.Compose([t], additional_targets={"types": "mask"}, seed=3, save_applied_params=True)
    out = pipeline(image=image.astype(np.float32) / 255, mask=labels, types=types)
    ref = insmix(image, labels, bank, CFG, seed=_insmix_seed(out), types=types)
    np.testing.assert_array_equal(out["mask"], ref.labels)
    np.testing.assert_array_equal(out["types"], ref.types)
    assert out["types"].dtype == np.int32 and len(ref.pastes)


@typed
def test_type_map_must_be_registered_and_present(small_data, small_bank):
    image, labels = small_data[0]
    t = InsMix(small_bank, CFG, types_key="types", p=1.0)
    with pytest.raises(InputError, match="additional_targets"):
        A.Compose([t])(image=image, mask=labels, types=types_of(labels))
    with pytest.raises(InputError, match="no 'types'"):
        A.Compose([t], additional_targets={"types": "mask"})(image=image, mask=labels)
    with pytest.raises(InputError, match="type map"):
        A.Compose([t], additional_targets={"types": "mask"})(image=image, mask=labels,
                                                              types=types_of(labels).astype(np.float32))


def test_example_script_trains(monkeypatch):
    """examples/train_albumentations.py: the documented recipe runs end to end (two steps)."""
    import math
    import os
    import sys

    monkeypatch.syspath_prepend(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
    import train_albumentations

    loss = train_albumentations.main(["--steps", "2", "--batch-size", "2", "--crop", "64", "--synthetic-tiles", "4",
                                      "--insmix-p", "1.0", "--log-every", "1"])
    assert math.isfinite(loss)
    sys.modules.pop("train_albumentations", None)
    sys.modules.pop("train_segmenter", None)
