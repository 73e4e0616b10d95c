"""Issue 15, bank and plan hardening: each numbered failure of the issue reproduced, now a
named error (or a correct result).

1. a plan applied to another tile; 2. a plan applied with another bank; 3. a bank file whose
masks are all zero; 4. a bank file with float areas / int64 masks; 5. random bytes loaded as
a bank (no pickle advice); 6. saving onto a directory / a failing write (no temp file left);
7. concurrent saves to one path (no torn files, no errors).
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from insmix_fast.bank import InstanceBank
from insmix_fast.config import InsMixConfig
from insmix_fast.core import apply_plan, insmix, insmix_batch, plan_insmix
from insmix_fast.errors import BankError, InputError
from insmix_fast.results import PlanFingerprint, labels_fingerprint

ALWAYS = InsMixConfig(p_paste=1.0)


def _fields(bank: InstanceBank) -> dict:
    return {k: getattr(bank, k) for k in ("area", "anchor", "hw", "offset", "masks", "pixels", "desc", "fits",
                                          "source", "source_label", "source_origin")}


def _file_fields(path: Path) -> dict:
    with np.load(path) as z:
        return dict(z)


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp") or ".tmp." in p.name)


# ---------------------------------------------------------------------- 1, 2: plans carry fingerprints
def test_plan_for_another_tile_is_refused(tiles256, bank256):
    """#1: a plan made for tile A applied to tile B used to paste ids that exist in B (split instances)."""
    (image_a, labels_a), (image_b, labels_b) = tiles256[0], tiles256[1]
    plan = plan_insmix(labels_a, bank256, ALWAYS, seed=3)
    assert len(plan.pastes) and plan.fingerprint.labels == labels_fingerprint(labels_a)
    with pytest.raises(InputError, match="another label map") as e:
        apply_plan(image_b, labels_b, plan, bank256)
    assert f"{labels_fingerprint(labels_a):#018x}" in str(e.value)
    assert f"{labels_fingerprint(labels_b):#018x}" in str(e.value)
    # plans of insmix and insmix_batch record the bank but not the map's hash (it would cost 4–10 %
    # of a call); apply_plan still refuses them on another tile: their pasted ids do not fit its ids
    fused = insmix(image_a, labels_a, bank256, ALWAYS, seed=3)
    batch = insmix_batch(np.stack([image_a, image_b]), np.stack([labels_a, labels_b]), bank256, ALWAYS, seed=3,
                         indices=[0, 1])
    assert fused.plan == plan == batch[0].plan
    assert fused.plan.fingerprint == batch[0].plan.fingerprint == PlanFingerprint(None, len(bank256),
                                                                                  bank256.content_hash)
    assert labels_a.max() != labels_b.max()
    for p in (fused.plan, batch[0].plan):
        with pytest.raises(InputError, match="another label map"):
            apply_plan(image_b, labels_b, p, bank256)
    # the id check alone (a plan without fingerprint) catches ids that would collide with B's
    bare = type(plan)(plan.pastes, plan.moves, plan.patch, plan.shape, plan.seed, plan.index)
    with pytest.raises(InputError, match="pasted nuclei the ids"):
        apply_plan(image_b, labels_b, bare, bank256)
    # one changed pixel is another map; the right tile still replays exactly
    edited = labels_a.copy()
    edited[0, 0] = edited.max() + 1
    with pytest.raises(InputError, match="another label map"):
        apply_plan(image_a, edited, plan, bank256)
    np.testing.assert_array_equal(apply_plan(image_a, labels_a, plan, bank256).labels, fused.labels)


def test_plan_with_another_bank_is_refused(tiles256, bank256):
    """#2: the same number of templates but other content used to be pasted silently."""
    image, labels = tiles256[2]
    plan = plan_insmix(labels, bank256, ALWAYS, seed=5)
    assert len(plan.pastes)
    fields = _fields(bank256)
    fields["pixels"] = np.where(fields["pixels"] > 0, 255 - fields["pixels"], 0).astype(np.uint8)
    other = InstanceBank(n_samples=bank256.n_samples, min_area=bank256.min_area, **fields)
    assert len(other) == len(bank256) and other.content_hash != bank256.content_hash
    with pytest.raises(InputError, match="another bank") as e:
        apply_plan(image, labels, plan, other)
    for b in (bank256, other):
        assert f"{b.content_hash:#018x}" in str(e.value) and f"{len(b)} instances" in str(e.value)
    smaller = InstanceBank.from_samples(tiles256[:4], progress=False)
    with pytest.raises(InputError, match="another bank"):
        apply_plan(image, labels, plan, smaller)
    # an identical bank (e.g. loaded back from its file) is the same bank
    same = InstanceBank(n_samples=bank256.n_samples, min_area=bank256.min_area, **_fields(bank256))
    np.testing.assert_array_equal(apply_plan(image, labels, plan, same).image,
                                  insmix(image, labels, bank256, ALWAYS, seed=5).image)


def test_fingerprint_parts_and_plans_without_one(tiles256, bank256):
    image, labels = tiles256[3]
    shuffle_only = plan_insmix(labels, bank256, InsMixConfig(foreground=False), seed=1)
    assert shuffle_only.fingerprint == PlanFingerprint(labels_fingerprint(labels))  # no bank involved
    apply_plan(image, labels, shuffle_only, None)
    plan = plan_insmix(labels, bank256, ALWAYS, seed=1)
    assert plan.fingerprint.bank_size == len(bank256) and plan.fingerprint.bank_hash == bank256.content_hash
    # a plan built by hand (or pickled before fingerprints existed) is not checked
    bare = type(plan)(plan.pastes, plan.moves, plan.patch, plan.shape, plan.seed, plan.index)
    assert bare == plan and bare.fingerprint is None
    apply_plan(image, labels, bare, bank256)
    # odd pixel counts, shapes and single pixels all count
    odd = np.arange(5 * 7, dtype=np.int32).reshape(5, 7)
    assert labels_fingerprint(odd) == labels_fingerprint(odd.copy()) != labels_fingerprint(odd.reshape(7, 5))
    changed = odd.copy()
    changed[4, 6] += 1
    assert labels_fingerprint(changed) != labels_fingerprint(odd)


def test_content_hash_is_cached_and_survives_save_load(tmp_path, bank256):
    h = bank256.content_hash
    assert bank256.content_hash == h and isinstance(h, int) and 0 <= h < 2**64
    assert InstanceBank.load(bank256.save(tmp_path / "b.npz")).content_hash == h


# ---------------------------------------------------------------------- 3, 4, 5: load checks everything
@pytest.fixture()
def saved(tmp_path, bank256):
    return bank256.save(tmp_path / "ok.npz")


def _write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / name
    np.savez(path, **data)
    return path


def test_all_zero_masks_are_refused(tmp_path, saved):
    """#3: a CRC-valid file whose masks are all zero used to load; insmix then pasted 0 pixels."""
    data = _file_fields(saved)
    data["masks"] = np.zeros_like(data["masks"])
    data["pixels"] = np.zeros_like(data["pixels"])
    with pytest.raises(BankError, match="'masks' does not match 'area'"):
        InstanceBank.load(_write(tmp_path, "zero.npz", data))


@pytest.mark.parametrize("field, dtype", [("area", np.float64), ("masks", np.int64), ("hw", np.int64),
                                          ("offset", np.int32), ("fits", np.uint8), ("desc", np.int64)])
def test_wrong_dtypes_are_refused_not_cast(tmp_path, saved, field, dtype):
    """#4: float areas were truncated (54.7 → 54) and int64 masks wrapped mod 256."""
    data = _file_fields(saved)
    data[field] = data[field].astype(dtype)
    if field == "area":
        data[field] = data[field] + 0.7
    with pytest.raises(BankError, match=f"field '{field}' has dtype {np.dtype(dtype)}"):
        InstanceBank.load(_write(tmp_path, f"{field}.npz", data))


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(masks=np.where(d["masks"] > 0, 2, 0).astype(np.uint8)), "masks are 0/1"),
    (lambda d: d.update(pixels=np.full_like(d["pixels"], 7)), "'pixels' holds colour outside"),
    (lambda d: d.update(offset=d["offset"] + 1), "'offset' must start at 0"),
    (lambda d: d.update(anchor=d["anchor"] + 1000), "'anchor'"),
    (lambda d: d.update(hw=d["hw"][:-1]), r"'hw' has shape"),
    (lambda d: d.update(desc=d["desc"][:, :8].copy()), r"'desc' has shape"),
    (lambda d: d.update(source=d["source"] + 1000), "'source'"),
    (lambda d: d.update(area=d["area"][::-1].copy()), "sorted"),
    (lambda d: d.update(extra=np.zeros(3)), "unknown fields"),
    (lambda d: d.update(classes=np.zeros(len(d["area"]), np.int64)), "'classes' has dtype"),
    (lambda d: d.update(classes=np.ones(len(d["area"]), np.int32)), "'classes' holds classes 1..1"),
    (lambda d: d.update(classes=np.full(len(d["area"]), 3, np.int32), class_names=np.array(["background", "a"])),
     "outside 1..1"),
    (lambda d: d.update(class_names=np.array(["tumour", "a"])), "'class_names'"),
    (lambda d: d.pop("pixels"), "lacks fields"),
])
def test_inconsistent_files_name_the_field(tmp_path, saved, edit, match):
    data = _file_fields(saved)
    edit(data)
    with pytest.raises(BankError, match=match) as e:
        InstanceBank.load(_write(tmp_path, "bad.npz", data))
    assert "bad.npz" in str(e.value)


@pytest.mark.parametrize("content", [os.urandom(4096), b"", b"\x93NUMPY\x01\x00" + bytes(100), b"PK\x03\x04junk"])
def test_foreign_bytes_never_get_pickle_advice(tmp_path, content):
    """#5: random bytes were reported as "pickled (object) data" with allow_pickle= advice."""
    path = tmp_path / "random.npz"
    path.write_bytes(content)
    with pytest.raises(BankError, match="cannot read instance bank") as e:
        InstanceBank.load(path)
    assert "pickle" not in str(e.value).lower()


def test_object_arrays_never_get_pickle_advice(tmp_path, saved):
    data = _file_fields(saved)
    data["source"] = np.array([object()] * len(data["source"]), dtype=object)
    path = tmp_path / "objects.npz"
    np.savez(path, **data)  # numpy pickles the object array into the file
    with pytest.raises(BankError, match="'source' holds Python objects") as e:
        InstanceBank.load(path)
    assert "allow_pickle" not in str(e.value) and "pickle.load" not in str(e.value)


# ---------------------------------------------------------------------- 6, 7: atomic, unique-temp saves
def test_save_onto_a_directory_or_a_file_path_raises_and_leaves_nothing(tmp_path, bank256):
    """#6: a directory target raised a raw IsADirectoryError and left x.npz.tmp.npz behind."""
    (tmp_path / "x.npz").mkdir()
    with pytest.raises(BankError, match="is a directory"):
        bank256.save(tmp_path / "x.npz")
    with pytest.raises(BankError, match="is a directory"):
        bank256.save(tmp_path / "x")  # ".npz" is appended: the same directory
    (tmp_path / "plain").write_text("a file, not a folder")
    with pytest.raises(BankError, match="cannot create its folder"):
        bank256.save(tmp_path / "plain" / "bank.npz")
    assert _leftovers(tmp_path) == [] and _leftovers(tmp_path / "x.npz") == []


def test_a_failing_write_leaves_the_old_file_and_no_temp(tmp_path, bank256, monkeypatch):
    """#6: an exception during the write left the temp file behind."""
    path = bank256.save(tmp_path / "bank.npz")
    before = path.read_bytes()
    import insmix_fast.bank as bank_module

    def fail(f, **arrays):
        f.write(b"PK\x03\x04 half a bank")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(bank_module.np, "savez", fail)
    with pytest.raises(BankError, match="No space left on device"):
        bank256.save(path)

    def interrupt(f, **arrays):
        f.write(b"PK")
        raise KeyboardInterrupt

    monkeypatch.setattr(bank_module.np, "savez", interrupt)
    with pytest.raises(KeyboardInterrupt):
        bank256.save(path)
    monkeypatch.undo()
    assert path.read_bytes() == before and _leftovers(tmp_path) == []
    assert len(InstanceBank.load(path)) == len(bank256)


def test_concurrent_saves_to_one_path(tmp_path, bank256, small_bank):
    """#7: DDP ranks saving one bank used the same temp name: FileNotFoundError for writers,
    "Bad CRC-32" / "File is not a zip file" for readers. Now every read sees a whole bank."""
    path = tmp_path / "shared.npz"
    bank256.save(path)
    errors: list[BaseException] = []
    seen: set[int] = set()
    stop = threading.Event()

    def writer(bank):
        try:
            for _ in range(6):
                bank.save(path)
        except BaseException as e:  # noqa: BLE001 - collected and asserted below
            errors.append(e)

    def reader():
        try:
            while not stop.is_set():
                seen.add(len(InstanceBank.load(path)))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(b,)) for b in (bank256, small_bank, bank256, small_bank)]
    readers = [threading.Thread(target=reader) for _ in range(2)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    for t in readers:
        t.join()
    assert errors == []
    assert seen <= {len(bank256), len(small_bank)} and seen
    assert len(InstanceBank.load(path)) in (len(bank256), len(small_bank))
    assert _leftovers(tmp_path) == []
