"""What the adapters share: optional imports, the one typed-core call point (checked here with
a stand-in typed core, so the type plumbing is tested before the real one lands), dtype rules."""

import importlib
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

import insmix_fast.core as core
from insmix_fast.config import InsMixConfig
from insmix_fast.transforms import common

CFG = InsMixConfig(p_paste=1.0, alpha=0.5, patch=8)
PASTED_CLASS = 7


def test_package_import_pulls_in_no_optional_library():
    code = ("import sys, insmix_fast.transforms as t; "
            "bad = [m for m in ('albumentations', 'monai', 'kornia') if m in sys.modules]; "
            "assert not bad, bad; print(' '.join(t.__all__))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                       env=dict(os.environ, PYTHONPATH=root))
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["InsMix", "InsMixd", "InsMixBatch"]


@pytest.mark.parametrize("library, module, name", [("albumentations", "albumentations", "InsMix"),
                                                   ("monai", "monai", "InsMixd")])
def test_missing_library_says_how_to_install(monkeypatch, library, module, name):
    for hidden in [m for m in sys.modules if m == library or m.startswith(library + ".")] + [library]:
        monkeypatch.setitem(sys.modules, hidden, None)  # importing it (or any of its modules) now fails
    monkeypatch.delitem(sys.modules, f"insmix_fast.transforms.{module}", raising=False)
    with pytest.raises(ImportError, match=r'pip install "insmix-fast\[transforms\]"'):
        importlib.import_module(f"insmix_fast.transforms.{module}")
    import insmix_fast.transforms as t

    monkeypatch.delattr(t, module, raising=False)
    with pytest.raises(ImportError, match=library):
        getattr(t, name)


def test_unknown_name():
    import insmix_fast.transforms as t

    with pytest.raises(AttributeError, match="Nope"):
        t.Nope  # noqa: B018


def test_typed_flags_follow_the_core_signatures():
    import inspect

    assert common.TYPED_INSMIX == ("types" in inspect.signature(core.insmix).parameters)
    assert common.TYPED_INSMIX_BATCH == ("types" in inspect.signature(core.insmix_batch).parameters)


def test_label_dtype_rule():
    assert common.label_dtype(np.uint8) == np.int32 and common.label_dtype(np.int16) == np.int32
    assert common.label_dtype(np.uint32) == np.uint32 and common.label_dtype(np.int64) == np.int64
    assert common.label_dtype(torch.uint8) == torch.int32 and common.label_dtype(torch.int64) == torch.int64


def test_patch_size_reads_the_renamed_field():
    class Renamed:
        patch, tile = 12, 99

    assert common.patch_size(Renamed()) == 12 and common.patch_size(CFG) == CFG.patch


# ---------------------------------------------------------------------- the typed call point
@pytest.fixture
def typed_core(monkeypatch):
    """A stand-in typed core: the real InsMix, plus ``result.types`` = the given type map with
    pasted pixels set to PASTED_CLASS. Records the type maps it was handed."""
    received = []

    def insmix(image, labels, bank, config=None, *, seed=0, index=0, types=None):
        r = core.insmix(image, labels, bank, config, seed=seed, index=index)
        received.append(np.array(types))
        r.types = np.where(r.paste_mask, PASTED_CLASS, types).astype(np.int32)
        return r

    def insmix_batch(images, labels, bank, config=None, *, seed=0, indices=None, device="cpu", types=None):
        r = core.insmix_batch(images, labels, bank, config, seed=seed, indices=indices, device=device)
        received.append(np.array(types))
        r.types = np.where(r.paste_masks, PASTED_CLASS, types).astype(np.int32)
        return r

    def insmix_arrays(image, labels, bank, config=None, *, seed=0, index=0, types=None, in_place=False,
                      max_value=None, labels_dtype=None, on_outputs=None):
        if in_place:
            r = core.insmix_into(image, labels, bank, config, seed=seed, index=index, max_value=max_value)
        else:
            r = core.insmix(image, labels, bank, config, seed=seed, index=index)
        received.append(np.array(types))
        lab = r.labels.astype(labels_dtype or np.int32)
        if on_outputs is not None:
            on_outputs(r.image, lab)
        return r.image, lab, np.where(r.paste_mask, PASTED_CLASS, types).astype(np.int32)

    def insmix_batch_into(out, labels, bank, config=None, *, seed=0, indices=None, types=None, max_value=None,
                          out_labels=None, masks=True):
        r = core.insmix_batch_into(out, labels, bank, config, seed=seed, indices=indices, max_value=max_value,
                                   out_labels=out_labels)
        received.append(np.array(types))
        r.types = np.where(r.paste_masks, PASTED_CLASS, types).astype(np.int32)
        return r

    monkeypatch.setattr(common, "insmix", insmix)
    monkeypatch.setattr(common, "insmix_batch", insmix_batch)
    monkeypatch.setattr(common, "insmix_arrays", insmix_arrays)
    monkeypatch.setattr(common, "insmix_batch_into", insmix_batch_into)
    monkeypatch.setattr(common, "TYPED_INSMIX", True)
    monkeypatch.setattr(common, "TYPED_INSMIX_BATCH", True)
    return received


def _types_of(labels):
    return np.where(labels > 0, labels % 3 + 1, 0).astype(np.uint8)


def test_albumentations_type_plumbing(typed_core, small_data, small_bank):
    A = pytest.importorskip("albumentations", minversion="2.0")
    from insmix_fast.transforms.albumentations import InsMix

    image, labels = small_data[0]
    types = _types_of(labels)
    pipeline = A.Compose([A.HorizontalFlip(p=1.0), InsMix(small_bank, CFG, types_key="types", p=1.0)],
                         additional_targets={"types": "mask"}, seed=0, save_applied_params=True)
    out = pipeline(image=image, mask=labels, types=types)
    np.testing.assert_array_equal(typed_core[-1], types[:, ::-1])  # the flipped map reached the core
    seed = out["applied_transforms"][-1][1]["insmix_seed"]
    ref = core.insmix(image[:, ::-1], labels[:, ::-1], small_bank, CFG, seed=seed)
    assert ref.paste_mask.any() and out["types"].dtype == np.uint8
    np.testing.assert_array_equal(out["types"], np.where(ref.paste_mask, PASTED_CLASS, types[:, ::-1]))
    np.testing.assert_array_equal(out["mask"], ref.labels)


def test_monai_type_plumbing(typed_core, small_data, small_bank):
    pytest.importorskip("monai")
    from monai.data import MetaTensor

    from insmix_fast.transforms.monai import InsMixd

    image, labels = small_data[1]
    types = _types_of(labels)
    t = InsMixd(bank=small_bank, config=CFG, type_key="types", prob=1.0).set_random_state(seed=3)
    out = t({"image": torch.from_numpy(image).permute(2, 0, 1), "label": torch.from_numpy(labels)[None],
             "types": MetaTensor(torch.from_numpy(types)[None], meta={"filename_or_obj": "t.png"})})
    ref = core.insmix(image, labels, small_bank, CFG, seed=t.insmix_seed)
    assert isinstance(out["types"], MetaTensor) and out["types"].meta["filename_or_obj"] == "t.png"
    assert out["types"].dtype == torch.uint8
    np.testing.assert_array_equal(out["types"][0].numpy(), np.where(ref.paste_mask, PASTED_CLASS, types))


def test_batch_type_plumbing(typed_core, small_data, small_bank):
    from insmix_fast.transforms.batch import InsMixBatch

    images, labels = small_data.as_arrays(6)
    types = _types_of(labels)
    op = InsMixBatch(small_bank, CFG, p=0.5, seed=2)
    sel = op.coins(range(6))
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    out_images, out_labels, out_types = op(x, torch.from_numpy(labels), types=torch.from_numpy(types))
    ref = core.insmix_batch(images, labels, small_bank, CFG, seed=2, indices=np.arange(6))
    want = np.where(ref.paste_masks, PASTED_CLASS, types)
    want[~sel] = types[~sel]
    assert out_types.dtype == torch.uint8 and 0 < sel.sum() < 6
    np.testing.assert_array_equal(out_types.numpy(), want)


def test_float_result_paths_agree(small_data, small_bank):
    """The CPU loop and the whole-batch gathers the GPU runs give the same float image."""
    images, labels = small_data.as_arrays(4)
    r = core.insmix_batch(images, labels, small_bank, CFG, seed=1)
    x = torch.rand(4, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    args = (x, torch.from_numpy(r.images).permute(0, 3, 1, 2), torch.from_numpy(r.paste_masks),
            *common.moves_of(r, "cpu"), CFG.patch, 1.0)
    loop, gathered = common.float_result(*args, vectorised=False), common.float_result(*args, vectorised=True)
    assert sum(len(m) for m in r.moves) >= 4 and r.paste_masks.any()
    assert torch.equal(loop, gathered) and not torch.equal(loop, x)
