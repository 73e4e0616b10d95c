"""Nucleus types through the bank and InsMix (SPEC §3b), and ignore regions.

The template-class modes are checked bit for bit against the plain reference of
``reference.py`` with its template choice replaced by a class-aware one written here
from SPEC §3b (class draw from its own Philox stream, then the same SSD choice among
the templates of that class).
"""

import math

import numpy as np
import pytest
from dataset_fixtures import make_truth, write_pannuke_fold
from typed_data import CLASS_NAMES, TypedTiles, add_types

import reference
from insmix_fast import (BankError, ConfigError, InputError, InputTypeError, InsMixConfig, InstanceBank,
                         LabelMapError, apply_plan, insmix, insmix_batch, plan_insmix)
from insmix_fast.kernels.rng import STREAM_CLASS, STREAM_TEMPLATE


@pytest.fixture(scope="module")
def typed_small():
    return TypedTiles(seed=7, size=96, n=8)


@pytest.fixture(scope="module")
def typed_small_bank(typed_small):
    return InstanceBank.from_samples(typed_small, progress=False)


@pytest.fixture(scope="module")
def typed256():
    return TypedTiles(seed=11, size=256, n=6)


@pytest.fixture(scope="module")
def typed_bank256(typed256):
    return InstanceBank.from_samples(typed256, progress=False)


# ---------------------------------------------------------------------- the bank
def test_typed_bank_keeps_each_instance_class(typed_small, typed_small_bank):
    bank = typed_small_bank
    assert bank.typed and bank.class_names == CLASS_NAMES
    for t in range(len(bank)):
        _image, labels, types = typed_small[int(bank.source[t])]
        assert set(np.unique(types[labels == bank.source_label[t]]).tolist()) == {int(bank.classes[t])}
    counts = bank.class_counts()
    assert counts.shape == (len(CLASS_NAMES),) and counts[0] == 0 and counts.sum() == len(bank)
    assert counts.tolist() == np.bincount(bank.classes, minlength=5).tolist()
    assert bank.summary()["class_counts"] == dict(zip(CLASS_NAMES[1:], counts[1:].tolist()))
    assert "4 classes" in repr(bank)
    # the same instances as the untyped bank, in the same order
    untyped = InstanceBank.from_samples([s[:2] for s in typed_small.samples], progress=False)
    assert not untyped.typed and untyped.class_names is None and untyped.classes.tolist() == [0] * len(untyped)
    assert untyped.class_counts().tolist() == [len(untyped)] and "class_counts" not in untyped.summary()
    assert np.array_equal(untyped.area, bank.area) and np.array_equal(untyped.masks, bank.masks)


def test_class_names_inferred_or_given(typed_small):
    plain = [tuple(s) for s in typed_small.samples[:3]]  # a list has no class_names
    bank = InstanceBank.from_samples(plain, progress=False)
    assert bank.class_names == ("background",) + tuple(f"class {c}" for c in range(1, int(bank.classes.max()) + 1))
    named = InstanceBank.from_samples(plain, class_names=CLASS_NAMES, progress=False)
    assert named.class_names == CLASS_NAMES and np.array_equal(named.classes, bank.classes)


def test_save_load_roundtrips_classes(tmp_path, typed_small_bank, small_bank):
    loaded = InstanceBank.load(typed_small_bank.save(tmp_path / "typed"))
    assert loaded.class_names == typed_small_bank.class_names
    assert loaded.classes.dtype == np.int32 and np.array_equal(loaded.classes, typed_small_bank.classes)
    assert loaded.summary() == typed_small_bank.summary()
    plain = InstanceBank.load(small_bank.save(tmp_path / "plain"))
    assert plain.class_names is None and not plain.classes.any()
    # a file written before classes existed loads as an untyped bank
    with np.load(tmp_path / "plain.npz") as z:
        old = {k: z[k] for k in z.files if k != "classes"}
    np.savez(tmp_path / "old.npz", **old)
    assert InstanceBank.load(tmp_path / "old.npz").classes.tolist() == [0] * len(small_bank)


def _typed_sample(seed=3, size=64):
    image, labels, types = make_truth(seed, size=size, n_max=12)
    return image, labels, types


def test_bad_typed_samples_are_named():
    image, labels, types = _typed_sample()
    good = (image, labels, types)
    with pytest.raises(BankError, match="sample 1 is untyped"):
        InstanceBank.from_samples([good, (image, labels)], progress=False)
    with pytest.raises(InputError, match=r"sample 1 types shape"):
        InstanceBank.from_samples([good, (image, labels, types[:-1])], progress=False)
    with pytest.raises(InputError, match="sample 0 types must be an integer"):
        InstanceBank.from_samples([(image, labels, types.astype(np.float32))], progress=False)
    bg = types.copy()
    bg[labels == 0] = 0
    bg[0, 0] = 2
    with pytest.raises(LabelMapError, match=r"sample 0 types: a background pixel \(row 0, column 0\) carries class 2"):
        InstanceBank.from_samples([(image, labels, bg)], progress=False)
    mixed = types.copy()
    ys, xs = np.nonzero(labels == 4)
    mixed[ys[0], xs[0]] = types[ys[0], xs[0]] % 5 + 1
    with pytest.raises(LabelMapError, match="instance id 4 carries several classes"):
        InstanceBank.from_samples([(image, labels, mixed)], progress=False)
    zero = types.copy()
    zero[labels == 2] = 0
    with pytest.raises(LabelMapError, match="instance id 2 has class 0"):
        InstanceBank.from_samples([(image, labels, zero)], progress=False)
    big = np.where(labels == 3, 9, types)
    with pytest.raises(LabelMapError, match=r"class id 9 of instance id 3 .* not one of the bank's classes 1\.\.5"):
        InstanceBank.from_samples([(image, labels, big)], class_names=("background", *"abcde"), progress=False)
    with pytest.raises(BankError, match="class_names was given but the samples are untyped"):
        InstanceBank.from_samples([(image, labels)], class_names=("background", "a"), progress=False)
    with pytest.raises(BankError, match="'background'"):
        InstanceBank.from_samples([good], class_names=("a", "b"), progress=False)


def test_bank_leaves_out_instances_touching_the_ignore_mask(typed_small):
    class WithIgnore(TypedTiles):
        def __init__(self, base):
            self.samples = base.samples

        def ignore_mask(self, k):
            m = np.zeros(self.samples[k][1].shape, bool)
            m[40:44, :] = True  # a band across every tile
            return m

    ds = WithIgnore(typed_small)
    full = InstanceBank.from_samples(ds.samples, progress=False)
    cut = InstanceBank.from_samples(ds, progress=False)
    assert 0 < len(cut) < len(full)
    band = np.zeros((96, 96), bool)
    band[39:45, :] = True  # the mask and its 8-neighbourhood
    kept = set(zip(cut.source.tolist(), cut.source_label.tolist()))
    for s, lab in zip(full.source.tolist(), full.source_label.tolist()):
        touches = bool(band[ds.samples[s][1] == lab].any())
        assert ((s, lab) in kept) == (not touches), (s, lab)
    none = InstanceBank.from_samples(ds, ignore=lambda k: np.zeros((96, 96), bool), progress=False)
    assert len(none) == len(full)
    with pytest.raises(InputError, match="sample 0 ignore mask shape"):
        InstanceBank.from_samples(ds, ignore=lambda k: np.zeros((5, 5), bool), progress=False)


# ---------------------------------------------------------------------- InsMix, template_class="any"
def _expected_types(types_in, labels_in, result):
    """LUT[result.labels]: input ids keep their class, pasted ids take their record's class."""
    top = int(max(labels_in.max(), result.labels.max()))
    lut = np.zeros(top + 1, np.int64)
    for v in np.unique(labels_in[labels_in > 0]):
        lut[v] = types_in[labels_in == v][0]
    for p in result.pastes:
        lut[p["label"]] = p["class"]
    return lut[result.labels]


@pytest.mark.parametrize("seed", [0, 5])
def test_any_is_the_untyped_result_with_types(typed256, typed_bank256, seed):
    cfg = InsMixConfig(p_paste=0.8, alpha=0.5)
    untyped_bank = InstanceBank.from_samples([s[:2] for s in typed256.samples], progress=False)
    for index in range(3):
        image, labels, types = typed256[index]
        r = insmix(image, labels, typed_bank256, cfg, seed=seed, index=index, types=types)
        u = insmix(image, labels, untyped_bank, cfg, seed=seed, index=index)
        assert len(r.pastes) > 0 and u.types is None
        for f in ("template", "original", "label", "y", "x", "dy", "dx", "f_scale", "f_shape", "f_dis"):
            assert np.array_equal(r.pastes[f], u.pastes[f]), f
        assert (u.pastes["class"] == 0).all()
        assert np.array_equal(r.pastes["class"], typed_bank256.classes[r.pastes["template"]])
        assert np.array_equal(r.image, u.image) and np.array_equal(r.labels, u.labels)
        assert r.types.dtype == np.int32 and np.array_equal(r.types, _expected_types(types, labels, r))
        assert np.array_equal(r.types[~r.paste_mask], types[~r.paste_mask])
        # typed bank, untyped call: the same tile, no types
        assert insmix(image, labels, typed_bank256, cfg, seed=seed, index=index).types is None


# ---------------------------------------------------------------------- the class-aware reference
def _reference_choose(bank, rank_classes):
    """Reference template choice for template_class 'same'/'balanced' (SPEC §3b)."""
    classes = bank.classes.tolist()

    def choose(mask_o, area_o, anchor_o, entries, cfg, seed, sample, key):
        if cfg.template_class == "same":
            c = rank_classes[key]
        else:
            counts = np.bincount(bank.classes, minlength=len(bank.class_names)).tolist()
            present = [k for k in range(1, len(counts)) if counts[k] > 0]
            w = [0.0] * len(counts)
            for k in present:
                w[k] = float(counts[k]) ** (1.0 - cfg.balance_power)
            total = sum(w)
            acc, cum = 0.0, []
            for k in range(len(counts)):
                acc += w[k]
                cum.append(acc / total)
            for k in range(present[-1], len(counts)):
                cum[k] = 1.0
            u = (reference.u64(seed, sample, STREAM_CLASS, key) >> 11) * 2.0**-53
            c = next(k for k in range(1, len(counts)) if u < cum[k])
        cand = [t for t in range(len(entries)) if classes[t] == c]
        if not cand:
            return -1
        if not cfg.ssd:
            return cand[reference.u64(seed, sample, STREAM_TEMPLATE, reference.c2(key, 0)) % len(cand)]
        in_scale = [p for p, t in enumerate(cand) if reference.scale_ok(area_o, entries[t][0], cfg.eps)]
        if not in_scale:
            return -1
        lo, hi = in_scale[0], in_scale[-1] + 1
        assert in_scale == list(range(lo, hi))

        def ok(t):
            a, anc, m, _ = entries[t]
            return reference.shape_ok(reference.aligned_xor(mask_o, anchor_o, m, anc), area_o, a, cfg.rho)

        for j in range(cfg.max_draws):
            t = cand[lo + reference.u64(seed, sample, STREAM_TEMPLATE, reference.c2(key, j)) % (hi - lo)]
            if ok(t):
                return t
        adm = [cand[p] for p in range(lo, hi) if ok(cand[p])]
        if not adm:
            return -1
        return adm[reference.u64(seed, sample, STREAM_TEMPLATE, reference.c2(key, reference.M32)) % len(adm)]

    return choose


TYPED_CONFIGS = {
    "same": InsMixConfig(p_paste=1.0, template_class="same"),
    "same-fallback": InsMixConfig(p_paste=1.0, template_class="same", max_draws=1, rho=0.5),
    "balanced": InsMixConfig(p_paste=1.0, template_class="balanced"),
    "balanced-freq": InsMixConfig(p_paste=1.0, template_class="balanced", balance_power=0.0, max_draws=1),
    "balanced-rare": InsMixConfig(p_paste=0.7, template_class="balanced", balance_power=2.5, eps=0.5),
    "balanced-nossd": InsMixConfig.ablation("copy-paste", p_paste=1.0, template_class="balanced"),
}


@pytest.mark.parametrize("name", sorted(TYPED_CONFIGS))
def test_template_class_equals_reference(typed_small, typed_small_bank, name, monkeypatch):
    cfg = TYPED_CONFIGS[name]
    total = 0
    for index in (0, 3, 5):
        image, labels, types = typed_small[index]
        ids = np.unique(labels)
        ids = ids[ids > 0]
        rank_classes = [int(types[labels == v][0]) for v in ids]
        monkeypatch.setattr(reference, "choose", _reference_choose(typed_small_bank, rank_classes))
        fast = insmix(image, labels, typed_small_bank, cfg, seed=11, index=index, types=types)
        ref_img, ref_lab, ref_pm, _sh, ref_pastes, ref_moves = reference.reference_insmix(
            image, labels, typed_small_bank, cfg, 11, index)
        got = [tuple(int(p[k]) for k in ("template", "original", "label", "y", "x", "dy", "dx")) for p in fast.pastes]
        assert got == [tuple(p[k] for k in ("template", "original", "label", "y", "x", "dy", "dx"))
                       for p in ref_pastes]
        assert [tuple(m) for m in fast.plan.moves] == ref_moves
        np.testing.assert_array_equal(fast.labels, ref_lab)
        np.testing.assert_array_equal(fast.image, ref_img)
        np.testing.assert_array_equal(fast.paste_mask, ref_pm)
        assert np.array_equal(fast.pastes["class"], typed_small_bank.classes[fast.pastes["template"]])
        np.testing.assert_array_equal(fast.types, _expected_types(types, labels, fast))
        if cfg.template_class == "same":
            orig_class = {int(v): c for v, c in zip(ids, rank_classes)}
            assert [orig_class[int(o)] for o in fast.pastes["original"]] == fast.pastes["class"].tolist()
        total += len(fast.pastes)
    assert total >= 3


def test_balanced_pastes_more_of_the_rare_class(typed256, typed_bank256):
    """β = 1 draws the classes uniformly: the rare class (2 % of the bank) gets far more pastes."""
    counts = typed_bank256.class_counts()
    assert counts[4] / counts.sum() < 0.05
    share = {}
    for mode in ("any", "balanced"):
        cfg = InsMixConfig(p_paste=1.0, template_class=mode)
        cls = np.concatenate([insmix(im, lab, typed_bank256, cfg, seed=1, index=k, types=ty).pastes["class"]
                              for k, (im, lab, ty) in enumerate(typed256.samples)])
        share[mode] = float(np.mean(cls == 4))
    assert share["balanced"] > 0.15 and share["balanced"] > 3 * share["any"], share


def test_class_draw_frequencies_follow_balance_power(typed_bank256):
    """The balanced class draw alone: empirical frequencies ≈ n_c^(1−β) / Σ."""
    from insmix_fast.kernels.classes import draw_class

    counts = typed_bank256.class_counts().astype(float)
    for beta in (0.0, 1.0, 2.0):
        cum = typed_bank256.class_table("balanced", beta).cum
        draws = np.array([draw_class(cum, np.uint64(3), 0, k) for k in range(20000)])
        freq = np.bincount(draws, minlength=5)[1:] / draws.size
        want = counts[1:] ** (1 - beta) / (counts[1:] ** (1 - beta)).sum()
        assert np.abs(freq - want).max() < 0.015, (beta, freq, want)
        assert math.isclose(cum[-1], 1.0) and cum[0] == 0.0


# ---------------------------------------------------------------------- batch, plans, sparse ids
@pytest.mark.parametrize("mode", ["any", "same", "balanced"])
def test_typed_batch_matches_single(typed256, typed_bank256, mode):
    images, labels, types = typed256.arrays()
    images, labels, types = images[:4], labels[:4].copy(), types[:4]
    labels[3] = np.where(labels[3] > 0, labels[3] + 100_000, 0)  # sparse ids: the per-tile path
    ignore = np.zeros(labels.shape, bool)
    ignore[1, 100:160, 100:160] = True
    cfg = InsMixConfig(p_paste=0.9, template_class=mode, alpha=0.5)
    indices = np.array([4, 9, 2, 7])
    batch = insmix_batch(images, labels, typed_bank256, cfg, seed=6, indices=indices, types=types, ignore=ignore)
    assert batch.types.shape == labels.shape and batch.types.dtype == np.int32
    for b in range(4):
        single = insmix(images[b], labels[b], typed_bank256, cfg, seed=6, index=int(indices[b]), types=types[b],
                        ignore=ignore[b])
        assert batch[b].plan == single.plan
        np.testing.assert_array_equal(batch.images[b], single.image)
        np.testing.assert_array_equal(batch.types[b], single.types)
        np.testing.assert_array_equal(batch[b].types, single.types)
        plan = plan_insmix(labels[b], typed_bank256, cfg, seed=6, index=int(indices[b]), types=types[b],
                           ignore=ignore[b])
        assert plan == single.plan
        replay = apply_plan(images[b], labels[b], plan, typed_bank256, types=types[b])
        np.testing.assert_array_equal(replay.types, single.types)
        np.testing.assert_array_equal(replay.image, single.image)
    assert sum(len(p) for p in batch.pastes) > 0


def test_template_source_self_with_types(typed256):
    image, labels, types = typed256[0]
    cfg = InsMixConfig(p_paste=1.0, template_source="self", template_class="same")
    r = insmix(image, labels, None, cfg, seed=2, types=types)
    assert len(r.pastes) > 0
    np.testing.assert_array_equal(r.types, _expected_types(types, labels, r))
    with pytest.raises(ConfigError, match="typed instance bank"):
        insmix(image, labels, None, cfg, seed=2)


# ---------------------------------------------------------------------- ignore regions
def test_ignore_region_is_never_pasted_onto_nor_moved(typed256, typed_bank256):
    image, labels, types = typed256[2]
    ignore = np.zeros(labels.shape, bool)
    ignore[:, :128] = True
    ignore[200:205, 180:190] = True
    cfg = InsMixConfig(p_paste=1.0, alpha=0.8, gamma=60, patch=16)
    free = insmix(image, labels, typed_bank256, cfg, seed=4, types=types)
    r = insmix(image, labels, typed_bank256, cfg, seed=4, types=types, ignore=ignore)
    assert (free.paste_mask & ignore).any()  # without the mask pastes land there
    assert len(r.pastes) > 0 and not (r.paste_mask & ignore).any()
    # background patches holding ignore pixels neither move nor receive others
    T = cfg.patch
    gw = labels.shape[1] // T
    for s, d in r.plan.moves:
        for p in (s, d):
            assert not ignore[(p // gw) * T:(p // gw + 1) * T, (p % gw) * T:(p % gw + 1) * T].any()
    assert len(r.plan.moves) > 0 and not (r.shuffled_mask & ignore).any()
    np.testing.assert_array_equal(r.image[ignore], image[ignore])
    # an all-False mask changes nothing; integer masks are accepted
    none = insmix(image, labels, typed_bank256, cfg, seed=4, types=types, ignore=np.zeros(labels.shape, np.uint8))
    assert none.plan == free.plan and np.array_equal(none.image, free.image)
    with pytest.raises(InputError, match="ignore shape"):
        insmix(image, labels, typed_bank256, cfg, ignore=ignore[:10])
    with pytest.raises(InputError, match="ignore must be a bool"):
        insmix(image, labels, typed_bank256, cfg, ignore=ignore.astype(np.float32))


# ---------------------------------------------------------------------- bad input
def test_bad_types_and_modes_are_named(typed256, typed_bank256, bank256):
    image, labels, types = typed256[0]
    bank = typed_bank256
    with pytest.raises(InputError, match=r"types shape \(255, 256\)"):
        insmix(image, labels, bank, types=types[:-1])
    with pytest.raises(InputError, match="types must be an integer class map"):
        insmix(image, labels, bank, types=types.astype(np.float64))
    with pytest.raises(InputTypeError, match="types must be a numpy array"):
        insmix(image, labels, bank, types=types.tolist())
    bg = types.copy()
    y, x = np.argwhere(labels == 0)[0]
    bg[y, x] = 3
    with pytest.raises(LabelMapError, match=rf"background pixel \(row {y}, column {x}\) carries class 3"):
        insmix(image, labels, bank, types=bg)
    v = int(labels.max())
    mixed = types.copy()
    ys, xs = np.nonzero(labels == v)
    mixed[ys[-1], xs[-1]] = types[ys[0], xs[0]] % 4 + 1
    with pytest.raises(LabelMapError, match=f"instance id {v} carries several classes"):
        insmix(image, labels, bank, types=mixed)
    sparse = np.where(labels > 0, labels + 200_000, 0)
    with pytest.raises(LabelMapError, match=f"instance id {v + 200_000} carries several classes"):
        insmix(image, sparse, bank, types=mixed)  # the caller's id, not the relabelled one
    beyond = np.where(labels == v, 7, types)
    with pytest.raises(LabelMapError, match=r"class id 7 of instance id \d+ .*classes 1\.\.4 \(common, .*rare\)"):
        insmix(image, labels, bank, types=beyond)
    for mode in ("same", "balanced"):
        with pytest.raises(ConfigError, match=f"template_class='{mode}' needs a typed instance bank"):
            insmix(image, labels, bank256, InsMixConfig(template_class=mode), types=None)
    with pytest.raises(ConfigError, match="'same' needs the tile's classes: pass types="):
        insmix(image, labels, bank, InsMixConfig(template_class="same"))
    with pytest.raises(BankError, match="types were given but the instance bank is untyped"):
        insmix(image, labels, bank256, types=types)
    with pytest.raises(LabelMapError, match=r"types\[1\]: instance id"):
        insmix_batch(np.stack([image] * 2), np.stack([labels] * 2), bank, types=np.stack([types, mixed]))
    # background only: no bank needed, the types pass through
    r = insmix(image, labels, None, InsMixConfig.ablation("bgp-only"), types=types)
    np.testing.assert_array_equal(r.types, types)


@pytest.mark.parametrize("field,value", [("template_class", "rare"), ("template_class", None),
                                         ("balance_power", -0.5), ("balance_power", float("inf"))])
def test_class_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        InsMixConfig(**{field: value})


# ---------------------------------------------------------------------- end to end
def test_pannuke_layout_to_balanced_insmix(tmp_path):
    """PanNuke fold on disk → typed data set → bank → template_class='balanced' InsMix."""
    from insmix_fast.data import PANNUKE_CLASSES, PanNukeDataset

    truths = [make_truth(40 + i, size=96, n_max=36) for i in range(6)]
    write_pannuke_fold(tmp_path, 1, truths, ["Breast"] * 6)
    ds = PanNukeDataset(tmp_path)
    bank = InstanceBank.from_samples(ds, progress=False)
    assert bank.class_names == PANNUKE_CLASSES and bank.class_counts()[1:].min() > 0
    cfg = InsMixConfig(p_paste=1.0, template_class="balanced", eps=2.0, rho=1.0)
    pasted = []
    for k in range(len(ds)):
        image, labels, types = ds[k]
        r = insmix(image, labels, bank, cfg, seed=3, index=k, types=types)
        np.testing.assert_array_equal(r.types, _expected_types(types, labels, r))
        assert set(np.unique(r.types)) <= set(range(len(PANNUKE_CLASSES)))
        assert np.array_equal(r.types > 0, r.labels > 0)
        pasted.extend(r.pastes["class"].tolist())
    assert len(pasted) >= 10 and len(set(pasted)) >= 4
