"""The MONAI adapter inside real ``monai.transforms.Compose`` pipelines: bit-equal to the
functional ``insmix()`` for the same draws, reproducible under MONAI's seeding, channel-first
MetaTensor / tensor / numpy in and out, metadata kept, strict inputs."""

import numpy as np
import pytest
import torch

pytest.importorskip("monai")

from monai.data import MetaTensor  # noqa: E402
from monai.transforms import Compose, Lambdad, RandFlipd, RandRotate90d  # noqa: E402

from insmix_fast.config import InsMixConfig  # noqa: E402
from insmix_fast.core import insmix  # noqa: E402
from insmix_fast.errors import ConfigError, InputError, InputTypeError  # noqa: E402
from insmix_fast.transforms.common import TYPED_INSMIX  # noqa: E402
from insmix_fast.transforms.monai import InsMixd  # noqa: E402
from typed_data import typed_bank, types_of  # noqa: E402

CFG = InsMixConfig(p_paste=1.0, alpha=0.5, patch=8)
typed = pytest.mark.skipif(not TYPED_INSMIX, reason="needs typed InsMix (issue 14)")


def _meta(image, labels):
    """A sample as LoadImaged + EnsureChannelFirstd would give it (channel-first MetaTensors)."""
    meta = {"filename_or_obj": "tile.png", "spatial_shape": np.array(labels.shape)}
    return {"image": MetaTensor(torch.from_numpy(image).permute(2, 0, 1).contiguous(), meta=dict(meta)),
            "label": MetaTensor(torch.from_numpy(labels.astype(np.int64))[None], meta=dict(meta))}


def _hwc(x):
    return np.asarray(x.permute(1, 2, 0) if isinstance(x, torch.Tensor) else x.transpose(1, 2, 0))


def _spy(store, prefix):
    def rec(key):
        def f(x):
            store[f"{prefix}_{key}"] = x.clone() if isinstance(x, torch.Tensor) else x.copy()
            return x
        return f
    return Lambdad(keys=("image", "label"), func=(rec("image"), rec("label")))


@pytest.mark.parametrize("where", ["before-insmix", "after-insmix"])
def test_compose_gives_the_functional_result(small_data, small_bank, where):
    seen = {}
    geo = [RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1), RandRotate90d(keys=("image", "label"), prob=1.0)]
    t = InsMixd(keys=("image", "label"), bank=small_bank, config=CFG, prob=1.0)
    core = [_spy(seen, "in"), t, _spy(seen, "out")]
    pipeline = Compose(geo + core if where == "before-insmix" else core + geo).set_random_state(seed=7)
    pastes = 0
    for k in range(4):
        image, labels = small_data[k]
        out = pipeline(_meta(image, labels))
        ref = insmix(_hwc(seen["in_image"]), np.asarray(seen["in_label"][0]), small_bank, CFG, seed=t.insmix_seed)
        np.testing.assert_array_equal(_hwc(seen["out_image"]), ref.image)
        np.testing.assert_array_equal(np.asarray(seen["out_label"][0]), ref.labels)
        assert isinstance(out["image"], MetaTensor) and isinstance(out["label"], MetaTensor)
        assert out["image"].meta["filename_or_obj"] == "tile.png" and out["label"].meta["filename_or_obj"] == "tile.png"
        assert out["image"].dtype == torch.uint8 and out["label"].dtype == torch.int64
        if where == "before-insmix":  # the spatial transforms' trace survives InsMixd (Invertd still works)
            assert "RandRotate90d" in [op["class"] for op in out["label"].applied_operations]
        pastes += len(ref.pastes)
    assert pastes >= 4


def test_set_random_state_makes_it_reproducible(small_data, small_bank):
    def run(seed):
        t = InsMixd(bank=small_bank, config=CFG, prob=0.7)
        assert t.set_random_state(seed=seed) is t
        return [t(_meta(*small_data[k])) for k in range(6)]

    a, b, c = run(3), run(3), run(4)
    for x, y in zip(a, b):
        assert torch.equal(x["image"], y["image"]) and torch.equal(x["label"], y["label"])
    assert any(not torch.equal(x["image"], z["image"]) for x, z in zip(a, c))


def test_randomize_draws_the_coin_then_a_53_bit_seed(small_bank):
    """The documented draws: ``R.rand() < prob`` (RandomizableTransform's coin), then, when
    applied, the InsMix seed ``floor(R.rand() · 2**53)`` — from the state set_random_state gave."""
    t = InsMixd(bank=small_bank, config=CFG, prob=0.5).set_random_state(seed=11)
    R = np.random.RandomState(11)
    applied = 0
    for _ in range(40):
        t.randomize()
        u = R.rand()
        assert t._do_transform == (u < 0.5)
        if u < 0.5:
            applied += 1
            assert t.insmix_seed == int(R.rand() * 2**53)
    assert 0 < applied < 40


def test_outputs_carry_a_copy_of_the_metadata(small_data, small_bank):
    """A later transform that edits the output's metadata (appends to applied_operations, sets a
    meta key) leaves the caller's input MetaTensors as they were."""
    sample = _meta(*small_data[0])
    sample["image"].applied_operations.append({"class": "Earlier"})
    out = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=0)(sample)
    for key in ("image", "label"):
        assert out[key].meta["filename_or_obj"] == "tile.png" and out[key].meta is not sample[key].meta
        out[key].applied_operations.append({"class": "Later"})
        out[key].meta["edited"] = True
        assert "edited" not in sample[key].meta
    assert [op["class"] for op in sample["image"].applied_operations] == ["Earlier"]
    assert [op["class"] for op in out["image"].applied_operations] == ["Earlier", "Later"]
    assert sample["label"].applied_operations == []


def test_metadata_tracking_off_gives_plain_tensors(small_data, small_bank):
    """With ``set_track_meta(False)`` MONAI's transforms return plain tensors; so does InsMixd."""
    from monai.data import set_track_meta

    image, labels = small_data[0]
    t = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=0)
    set_track_meta(False)
    try:
        out = t(_meta(image, labels))
    finally:
        set_track_meta(True)
    assert type(out["image"]) is torch.Tensor and type(out["label"]) is torch.Tensor
    ref = insmix(image, labels, small_bank, CFG, seed=t.insmix_seed)
    np.testing.assert_array_equal(_hwc(out["image"]), ref.image)
    np.testing.assert_array_equal(out["label"][0].numpy(), ref.labels)


def test_numpy_and_plain_tensors_keep_their_kind(small_data, small_bank):
    image, labels = small_data[1]
    ref_t = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=2)
    sample = {"image": np.ascontiguousarray(image.transpose(2, 0, 1)), "label": labels[None].astype(np.uint16),
              "name": "kept"}
    out = ref_t(sample)
    assert isinstance(out["image"], np.ndarray) and out["image"].dtype == np.uint8
    assert isinstance(out["label"], np.ndarray) and out["label"].dtype == np.int32  # uint16 cannot hold new ids
    assert out["name"] == "kept" and sample["label"].dtype == np.uint16  # input dict not modified
    ref = insmix(image, labels, small_bank, CFG, seed=ref_t.insmix_seed)
    np.testing.assert_array_equal(_hwc(out["image"]), ref.image)
    np.testing.assert_array_equal(out["label"][0], ref.labels)
    t = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=2)
    out = t({"image": torch.from_numpy(sample["image"]), "label": torch.from_numpy(labels[None].astype(np.int32))})
    assert type(out["image"]) is torch.Tensor and out["label"].dtype == torch.int32
    np.testing.assert_array_equal(_hwc(out["image"]), ref.image)


def test_float_image_as_loadimaged_gives_it(small_data, small_bank):
    """LoadImaged's default: float32 0..255 — with max_value=255 the result is the uint8 one."""
    image, labels = small_data[2]
    sample = _meta(image, labels)
    sample["image"] = sample["image"].float()
    t = InsMixd(bank=small_bank, config=CFG, prob=1.0, max_value=255.0).set_random_state(seed=5)
    out = t(sample)
    ref = insmix(image, labels, small_bank, CFG, seed=t.insmix_seed)
    assert out["image"].dtype == torch.float32 and isinstance(out["image"], MetaTensor)
    np.testing.assert_array_equal(_hwc(out["image"]), ref.image.astype(np.float32))
    with pytest.raises(InputError, match="max_value=255"):  # 0..255 floats with the [0, 1] default
        InsMixd(bank=small_bank, config=CFG, prob=1.0)(sample)


def test_metatensor_that_tracks_gradients_is_read_detached(small_data, small_bank):
    """A float MetaTensor with requires_grad (read with its __torch_function__ off) gives the
    same result as a plain one, and the input is left as it was."""
    image, labels = small_data[2]
    sample = _meta(image, labels)
    sample["image"] = sample["image"].float().requires_grad_(True)
    before = sample["image"].detach().clone()
    t = InsMixd(bank=small_bank, config=CFG, prob=1.0, max_value=255.0).set_random_state(seed=5)
    out = t(sample)
    ref = insmix(image, labels, small_bank, CFG, seed=t.insmix_seed)
    assert isinstance(out["image"], MetaTensor) and not out["image"].requires_grad
    assert out["image"].meta["filename_or_obj"] == "tile.png"
    np.testing.assert_array_equal(_hwc(out["image"].detach()), ref.image.astype(np.float32))
    np.testing.assert_array_equal(np.asarray(out["label"])[0], ref.labels)
    assert torch.equal(sample["image"].detach(), before)


def test_probability_zero_leaves_the_sample(small_data, small_bank):
    sample = _meta(*small_data[0])
    out = InsMixd(bank=small_bank, prob=0.0)(sample)
    assert out["image"] is sample["image"] and out["label"] is sample["label"]


def _bad(image, labels):
    chw = np.ascontiguousarray(image.transpose(2, 0, 1))
    return [
        ({"image": image, "label": labels[None]}, InputError, "channel-last.*EnsureChannelFirstd"),
        ({"image": chw, "label": labels}, InputError, "no_channel"),
        ({"image": chw, "label": labels[..., None]}, InputError, "channel-last"),
        ({"image": chw, "label": labels[None].astype(np.float32)}, InputError, "'label'.*CastToTyped"),
        ({"image": chw, "label": labels[None, :10]}, InputError, "'label' is 1×10×96"),
        ({"image": chw}, InputError, "key 'label' is missing"),
        ({"image": chw.tolist(), "label": labels[None]}, InputTypeError, "'image' must be"),
        ({"image": chw, "label": labels[None] - 1}, InputError, "InsMixd.*negative"),
    ]


@pytest.mark.parametrize("case", range(8))
def test_bad_input_names_the_key(small_data, small_bank, case):
    sample, error, pattern = _bad(*small_data[0])[case]
    with pytest.raises(error, match=pattern):
        InsMixd(bank=small_bank, config=CFG, prob=1.0)(sample)


def test_missing_keys_can_be_allowed(small_data, small_bank):
    sample = {"image": np.ascontiguousarray(small_data[0][0].transpose(2, 0, 1))}
    assert InsMixd(bank=small_bank, prob=1.0, allow_missing_keys=True)(sample)["image"] is sample["image"]


def test_bad_arguments(small_bank):
    with pytest.raises(ConfigError, match="image_key, label_key"):
        InsMixd(keys="image", bank=small_bank)
    with pytest.raises(ConfigError, match="bank is None"):
        InsMixd()
    with pytest.raises(ConfigError, match="prob"):
        InsMixd(bank=small_bank, prob=2)
    with pytest.raises(ConfigError, match="type_key"):
        InsMixd(bank=small_bank, type_key="label")


@pytest.mark.skipif(TYPED_INSMIX, reason="insmix accepts types here")
def test_type_key_needs_a_typed_core(small_bank):
    with pytest.raises(InputError, match="types="):
        InsMixd(bank=small_bank, type_key="types")


@typed
@pytest.mark.parametrize("float_image", [False, True])
def test_type_map_follows_the_labels(small_data, float_image):
    bank = typed_bank()
    image, labels = small_data[0]
    types = types_of(labels, np.int16)
    sample = _meta(image, labels)
    if float_image:  # LoadImaged's float32 0..255: the tensor path
        sample["image"] = MetaTensor(sample["image"].as_tensor().float(), meta=dict(sample["image"].meta))
    sample["types"] = MetaTensor(torch.from_numpy(types)[None], meta={"filename_or_obj": "types.png"})
    t = InsMixd(bank=bank, config=CFG, type_key="types", prob=1.0, max_value=255.0).set_random_state(seed=1)
    out = t(sample)
    ref = insmix(image, labels, bank, CFG, seed=t.insmix_seed, types=types)
    np.testing.assert_array_equal(np.asarray(out["label"][0]), ref.labels)
    np.testing.assert_array_equal(np.asarray(out["types"][0]), ref.types)
    assert out["types"].dtype == torch.int16 and out["types"].meta["filename_or_obj"] == "types.png"
    assert len(ref.pastes) and (ref.types[ref.paste_mask] > 0).all()


def test_metadata_copy_is_monais(small_data, small_bank):
    """The outputs' attributes are those MONAI's ``copy_meta_from`` gives (the same keys, the
    same values, shallow copies of dicts, lists and arrays, clones of tensors), for metadata of
    every kind a pipeline carries — and independent of the input's."""
    from monai.data.meta_obj import MetaObj

    from insmix_fast.transforms import monai as adapter

    image, labels = small_data[2]
    sample = _meta(image, labels)
    src = sample["image"]
    src.meta["patch_index"] = 3
    src.meta["spacing"] = np.array([0.25, 0.25])
    src.applied_operations.append({"class": "Earlier", "extra_info": {"k": 1}})
    src.extra_attribute = torch.arange(3)  # an attribute MONAI copies by cloning
    src.other = (1, "two")  # an immutable one, kept as it is
    ref = MetaTensor(torch.zeros(1)).as_subclass(MetaTensor)
    ref.__dict__.clear()
    MetaObj.copy_meta_from(ref, src)
    got = adapter._meta_copy(src)
    assert got.keys() == ref.__dict__.keys()
    for name, value in ref.__dict__.items():
        mine = got[name]
        assert type(mine) is type(value), name
        if isinstance(value, (dict, list, np.ndarray, torch.Tensor)):
            assert mine is not src.__dict__[name], name  # a copy, as MONAI makes it
        if isinstance(value, dict):
            assert mine.keys() == value.keys() and all(mine[k] is value[k] for k in value), name  # shallow
        elif isinstance(value, torch.Tensor):
            assert torch.equal(mine, value), name
        elif isinstance(value, np.ndarray):
            np.testing.assert_array_equal(mine, value)
        else:
            assert mine == value, name
    out = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=1)(sample)
    assert out["image"].meta["patch_index"] == 3 and out["image"].meta is not src.meta
    assert out["image"].applied_operations == src.applied_operations
    assert out["image"].applied_operations is not src.applied_operations
    assert torch.equal(out["image"].extra_attribute, src.extra_attribute)


def test_outputs_are_full_metatensors(small_data, small_bank):
    """The CPU outputs (made as MetaTensors directly, see ``_RECLASS``) behave as MONAI's own:
    torch functions keep the type and metadata, they copy, pickle and collate, and MONAI's
    transforms take them."""
    import copy
    import pickle

    from monai.data import list_data_collate

    image, labels = small_data[3]
    t = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=2)
    out = t(_meta(image, labels))
    ref = insmix(image, labels, small_bank, CFG, seed=t.insmix_seed)
    for key in ("image", "label"):
        x = out[key]
        assert type(x) is MetaTensor and x.meta["filename_or_obj"] == "tile.png"
        y = x.float() * 2
        assert type(y) is MetaTensor and y.meta["filename_or_obj"] == "tile.png"
        for z in (copy.deepcopy(x), pickle.loads(pickle.dumps(x))):
            assert type(z) is MetaTensor and torch.equal(z.as_tensor(), x.as_tensor())
            assert z.meta["filename_or_obj"] == "tile.png"
    np.testing.assert_array_equal(_hwc(out["image"]), ref.image)
    np.testing.assert_array_equal(out["label"][0].numpy(), ref.labels)
    batch = list_data_collate([out, t(_meta(image, labels))])
    assert type(batch["image"]) is MetaTensor and tuple(batch["image"].shape) == (2, 3, *labels.shape)
    flipped = RandFlipd(keys=("image", "label"), prob=1.0, spatial_axis=1)(out)
    assert [op["class"] for op in flipped["image"].applied_operations] == ["RandFlipd"]
    assert out["image"].applied_operations == []
    del out, flipped, batch
    import gc
    gc.collect()


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int32, np.int64, np.uint32])
def test_label_dtypes(small_data, small_bank, dtype):
    """Every integer label dtype: the functional labels in the dtype the docs give (its own with
    ≥ 32 bits, else int32) — the core writes int32 / int64 maps directly, others are cast after."""
    image, labels = small_data[4]
    sample = _meta(image, labels)
    sample["label"] = MetaTensor(torch.from_numpy(labels.astype(dtype))[None], meta={"filename_or_obj": "tile.png"})
    t = InsMixd(bank=small_bank, config=CFG, prob=1.0).set_random_state(seed=5)
    out = t(sample)
    ref = insmix(image, labels, small_bank, CFG, seed=t.insmix_seed)
    want = np.dtype(dtype) if np.dtype(dtype).itemsize >= 4 else np.dtype(np.int32)
    assert type(out["label"]) is MetaTensor and out["label"].numpy().dtype == want
    assert out["label"].meta["filename_or_obj"] == "tile.png"
    np.testing.assert_array_equal(out["label"][0].numpy(), ref.labels)
    np.testing.assert_array_equal(_hwc(out["image"]), ref.image)
