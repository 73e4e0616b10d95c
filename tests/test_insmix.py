"""InsMix on CPU agrees with the slow reference and keeps its promises (SPEC §2–4, §6)."""

import numpy as np
import pytest
from skimage.measure import label as cc_label

from insmix_fast import (OFFICIAL, BankError, ConfigError, InputError, InputTypeError, InsMixConfig, InstanceBank,
                         admissible_templates, apply_plan, insmix, insmix_batch, plan_insmix)

from reference import admissible_set, anchor_of, bank_entries, reference_insmix

CONFIGS = {
    "default": InsMixConfig(),
    "always-paste": InsMixConfig(p_paste=1.0, max_draws=1),  # max_draws=1 exercises the exact fallback scan
    "tight": InsMixConfig(p_paste=1.0, eps=0.3, rho=0.4, delta=5, gamma=12, n_tries=6),
    "no-ssd": InsMixConfig.ablation("copy-paste", p_paste=1.0),
    "diagonal": InsMixConfig(p_paste=1.0, offset_mode="diagonal", alpha=0.5),
    "bgp-only": InsMixConfig.ablation("bgp-only", alpha=0.7, patch=8),
    "occlusion": InsMixConfig(p_paste=1.0, max_occlusion=0.9, delta=0, gamma=6),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("seed", [0, 12345])
def test_fast_path_equals_reference(small_data, small_bank, name, seed):
    cfg = CONFIGS[name]
    for index in (0, 3):
        image, labels = small_data[index]
        fast = insmix(image, labels, small_bank, cfg, seed=seed, index=index)
        ref_img, ref_lab, ref_pm, ref_sh, ref_pastes, ref_moves = reference_insmix(
            image, labels, small_bank, cfg, seed, index)
        assert [tuple(p[k] for k in ("template", "original", "label", "y", "x", "dy", "dx")) for p in ref_pastes] == \
            [tuple(int(v) for v in (p["template"], p["original"], p["label"], p["y"], p["x"], p["dy"], p["dx"]))
             for p in fast.pastes]
        for p, r in zip(fast.pastes, ref_pastes):
            assert p["f_scale"] == r["f_scale"] and p["f_shape"] == r["f_shape"] and p["f_dis"] == r["f_dis"]
        assert [tuple(m) for m in fast.plan.moves] == ref_moves
        np.testing.assert_array_equal(fast.labels, ref_lab)
        np.testing.assert_array_equal(fast.image, ref_img)
        np.testing.assert_array_equal(fast.paste_mask, ref_pm)
        np.testing.assert_array_equal(fast.shuffled_mask, ref_sh)


def test_paths_do_something(small_data, small_bank):
    """Guard against the equality test passing vacuously."""
    n_pastes = n_moves = 0
    for index in range(4):
        r = insmix(*small_data[index], small_bank, CONFIGS["always-paste"], seed=1, index=index)
        n_pastes += len(r.pastes)
        for name in ("bgp-only", "diagonal"):
            n_moves += len(insmix(*small_data[index], small_bank, CONFIGS[name], seed=1, index=index).plan.moves)
    assert n_pastes >= 8 and n_moves >= 4


def test_admissible_sets_equal_reference(small_data, small_bank):
    cfg = InsMixConfig(eps=0.5, rho=0.6)
    entries = bank_entries(small_bank)
    image, labels = small_data[1]
    fast = admissible_templates(labels, small_bank, cfg)
    sizes = []
    for oid, idx in fast.items():
        m = labels == oid
        ys, xs = np.nonzero(m)
        crop = m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
        anc = anchor_of(m)
        ref = admissible_set(crop, int(m.sum()), (anc[0] - ys.min(), anc[1] - xs.min()), entries, cfg.eps, cfg.rho)
        assert idx.tolist() == ref, oid
        sizes.append(len(ref))
    assert max(sizes) > 0 and min(sizes) < len(small_bank)


def _pieces(mask):
    return int(cc_label(mask, connectivity=2).max())


@pytest.mark.parametrize("seed", range(6))
def test_invariants_on_256_tiles(tiles256, bank256, seed):
    cfg = InsMixConfig(p_paste=0.8, alpha=0.5)
    image, labels = tiles256[seed]
    r = insmix(image, labels, bank256, cfg, seed=seed, index=seed)
    p = r.pastes
    assert len(p) > 0
    # every paste satisfies the SSD constraints
    assert np.all(p["f_scale"] <= cfg.eps) and np.all(p["f_shape"] <= cfg.rho)
    assert np.all((p["f_dis"] >= cfg.delta) & (p["f_dis"] <= cfg.gamma))
    # ids: pasted ids are new and unique; no pixel carries an id nobody owns
    in_ids = set(np.unique(labels)) - {0}
    assert len(set(p["label"])) == len(p) and not (set(p["label"]) & in_ids)
    assert set(np.unique(r.labels)) - {0} <= in_ids | set(p["label"].tolist())
    # each pasted instance is its template, one piece; each original keeps ≤ its pieces
    for rec in p:
        rgb, mask = bank256.crop(int(rec["template"]))
        h, w = mask.shape
        region = r.labels[rec["y"]:rec["y"] + h, rec["x"]:rec["x"] + w]
        assert _pieces(r.labels == rec["label"]) == 1
        later = p["label"] > rec["label"]
        if not later.any():
            assert np.array_equal(region == rec["label"], mask)
    for oid in in_ids:
        after = r.labels == oid
        if after.any():
            assert _pieces(after) <= _pieces(labels == oid)
    # original pixels unchanged except where covered by a paste
    untouched = ~r.paste_mask & ~r.shuffled_mask
    assert np.array_equal(r.image[untouched], image[untouched])
    assert np.array_equal(r.labels[~r.paste_mask], labels[~r.paste_mask])
    # shuffled patches hold no nucleus pixel, and nuclei pixels never move
    assert not np.any(r.labels[r.shuffled_mask])
    T = cfg.patch
    free = sum(not r.labels[y:y + T, x:x + T].any() for y in range(0, 256 - T + 1, T) for x in range(0, 256 - T + 1, T))
    assert len(r.plan.moves) == (int(np.floor(cfg.alpha * free + 0.5)) if free * cfg.alpha >= 1.5 else 0)
    assert r.shuffled_mask.any() == any(s != d for s, d in r.plan.moves)
    # pastes land near their originals
    for rec in p:
        assert abs(rec["dy"]) <= cfg.gamma and abs(rec["dx"]) <= cfg.gamma


def test_same_seed_same_output_different_seed_different(tiles256, bank256):
    image, labels = tiles256[0]
    a = insmix(image, labels, bank256, seed=5)
    b = insmix(image, labels, bank256, seed=5)
    c = insmix(image, labels, bank256, seed=6)
    d = insmix(image, labels, bank256, seed=5, index=1)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels) and a.plan == b.plan
    assert not np.array_equal(a.image, c.image)
    assert not np.array_equal(a.image, d.image)


def test_plan_then_apply_equals_fused(tiles256, bank256):
    image, labels = tiles256[2]
    for cfg in (InsMixConfig(), OFFICIAL.replace(template_source="bank")):
        plan = plan_insmix(labels, bank256, cfg, seed=9, index=4)
        applied = apply_plan(image, labels, plan, bank256)
        fused = insmix(image, labels, bank256, cfg, seed=9, index=4)
        assert plan == fused.plan
        assert np.array_equal(applied.image, fused.image) and np.array_equal(applied.labels, fused.labels)
        assert "pastes" in repr(plan)


def test_batch_matches_single_whatever_the_batch(tiles256, bank256):
    images = np.stack([t[0] for t in tiles256[:6]])
    labels = np.stack([t[1] for t in tiles256[:6]])
    full = insmix_batch(images, labels, bank256, seed=3, indices=np.arange(10, 16))
    part = insmix_batch(images[3:5], labels[3:5], bank256, seed=3, indices=[13, 14])
    for b in range(6):
        single = insmix(images[b], labels[b], bank256, seed=3, index=10 + b)
        assert np.array_equal(full.images[b], single.image) and np.array_equal(full.labels[b], single.labels)
        assert np.array_equal(full.pastes[b], single.pastes)
        assert np.array_equal(full[b].paste_mask, single.paste_mask)
    assert np.array_equal(part.images, full.images[3:5]) and np.array_equal(part.labels, full.labels[3:5])


@pytest.mark.parametrize("name", ["default", "always-paste", "no-ssd", "diagonal", "bgp-only"])
def test_batch_plans_are_lossless(tiles256, bank256, name):
    """``insmix_batch(...)[b].plan`` is the plan ``insmix(..., index=indices[b])`` makes,
    keeps seed, index and patch side, and ``apply_plan`` replays it exactly."""
    cfg = CONFIGS[name]
    images = np.stack([t[0] for t in tiles256[:3]])
    labels = np.stack([t[1] for t in tiles256[:3]])
    labels[2] = np.where(labels[2] > 0, labels[2] + 100_000, 0)  # sparse ids: the per-tile fallback path
    indices = np.array([7, 2, 40])
    batch = insmix_batch(images, labels, bank256, cfg, seed=11, indices=indices)
    assert (batch.seed, batch.patch) == (11, cfg.patch)
    for b in range(3):
        single = insmix(images[b], labels[b], bank256, cfg, seed=11, index=int(indices[b]))
        plan = batch[b].plan
        assert plan == single.plan
        assert (plan.seed, plan.index, plan.patch, plan.shape) == (11, int(indices[b]), cfg.patch, labels.shape[1:])
        replay = apply_plan(images[b], labels[b], plan, bank256)
        np.testing.assert_array_equal(replay.image, single.image)
        np.testing.assert_array_equal(replay.labels, single.labels)
        np.testing.assert_array_equal(replay.shuffled_mask, single.shuffled_mask)
    assert sum(len(p) for p in batch.pastes) + sum(len(m) for m in batch.moves) > 0


def test_apply_plan_refuses_plans_that_do_not_fit(tiles256, bank256):
    """A plan for another bank or tile raises a named error; nothing is written out of bounds."""
    import dataclasses

    image, labels = tiles256[0]
    plan = plan_insmix(labels, bank256, InsMixConfig(p_paste=1.0, alpha=0.5), seed=1)
    assert len(plan.pastes) and len(plan.moves)
    far = plan.pastes.copy()
    far["y"] = labels.shape[0] - 1
    with pytest.raises(InputError, match="outside"):
        apply_plan(image, labels, dataclasses.replace(plan, pastes=far), bank256)
    other = plan.pastes.copy()
    other["template"] = len(bank256)
    with pytest.raises(BankError, match="beyond this bank"):
        apply_plan(image, labels, dataclasses.replace(plan, pastes=other), bank256)
    with pytest.raises(InputError, match="plan.moves"):
        apply_plan(image, labels, dataclasses.replace(plan, moves=plan.moves + 10_000), bank256)
    with pytest.raises(InputError, match="plan.patch"):
        apply_plan(image, labels, dataclasses.replace(plan, patch=-1), bank256)
    with pytest.raises(InputError, match="stream"):
        insmix_batch(image[None], labels[None], bank256, stream=0)


def test_tile_is_a_deprecated_alias_of_patch():
    with pytest.warns(DeprecationWarning, match="patch"):
        cfg = InsMixConfig(tile=8)
    assert cfg.patch == 8 and cfg == InsMixConfig(patch=8)
    with pytest.warns(DeprecationWarning, match="InsMixConfig.patch"):
        assert cfg.tile == 8
    with pytest.warns(DeprecationWarning, match="patch"):
        assert InsMixConfig().replace(tile=12).patch == 12
    with pytest.warns(DeprecationWarning, match="patch"):
        assert InsMixConfig.ablation("bgp-only", tile=10).patch == 10
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="patch only"):
        InsMixConfig(tile=8, patch=10)
    with pytest.warns(DeprecationWarning, match="patch="), pytest.raises(ConfigError, match="InsMixConfig.patch"):
        InsMixConfig(tile=1)
    plan = plan_insmix(np.zeros((40, 40), np.int32), None, InsMixConfig(foreground=False, patch=10))
    with pytest.warns(DeprecationWarning, match="InsMixPlan.patch"):
        assert plan.tile == 10
    assert "10×10 patches" in repr(plan) and "tile 40×40" in repr(plan)


def test_template_source_self_uses_only_the_tile(tiles256):
    image, labels = tiles256[1]
    r = insmix(image, labels, None, OFFICIAL.replace(p_paste=1.0), seed=2)
    own = InstanceBank.from_samples([(image, labels)], min_area=1, on_invalid="skip", progress=False)
    assert len(r.pastes) > 0 and r.pastes["template"].max() < len(own)
    assert np.all(r.pastes["dy"] == r.pastes["dx"])  # one diagonal offset per tile
    assert len(set(r.pastes["dy"].tolist())) == 1


def test_ablation_switches(tiles256, bank256):
    image, labels = tiles256[3]
    fg_only = insmix(image, labels, bank256, InsMixConfig.ablation("ssd"), seed=1)
    assert len(fg_only.plan.moves) == 0 and not fg_only.shuffled_mask.any() and len(fg_only.pastes) > 0
    bg_only = insmix(image, labels, None, InsMixConfig.ablation("bgp-only"), seed=1)
    assert len(bg_only.pastes) == 0 and bg_only.shuffled_mask.any() and np.array_equal(bg_only.labels, labels)
    free = insmix(image, labels, bank256, InsMixConfig.ablation("copy-paste", p_paste=1.0), seed=1)
    assert free.pastes["f_dis"].max() > 40  # without SSD pastes go anywhere in the tile


def test_empty_tile_and_tile_without_nuclei(bank256):
    image = np.full((64, 64, 3), 200, np.uint8)
    labels = np.zeros((64, 64), np.int32)
    r = insmix(image, labels, bank256, seed=0)
    assert len(r.pastes) == 0 and np.array_equal(r.labels, labels)
    assert len(r.plan.moves) == round(0.2 * 9)  # 3×3 full background patches, α = 0.2


@pytest.mark.parametrize("bad,exc", [
    (lambda im, lb: (im.astype(np.float32), lb), InputError),
    (lambda im, lb: (im[..., :2], lb), InputError),
    (lambda im, lb: (im[..., 0], lb), InputError),
    (lambda im, lb: (im, lb[:-1]), InputError),
    (lambda im, lb: (im, lb.astype(np.float64)), InputError),
    (lambda im, lb: (im, lb - 5), InputError),
    (lambda im, lb: (im.tolist(), lb), InputTypeError),
])
def test_bad_input_is_named(tiles256, bank256, bad, exc):
    image, labels = bad(*tiles256[0])
    with pytest.raises(exc) as info:
        insmix(image, labels, bank256, seed=0)
    assert "image" in str(info.value) or "labels" in str(info.value)


def test_bad_arguments(tiles256, bank256):
    image, labels = tiles256[0]
    with pytest.raises(InputError, match="seed"):
        insmix(image, labels, bank256, seed=-1)
    with pytest.raises(InputError, match="index"):
        insmix(image, labels, bank256, seed=0, index=2**40)
    with pytest.raises(InputTypeError, match="bank"):
        insmix(image, labels, "bank.npz", seed=0)
    with pytest.raises(InputTypeError, match="config"):
        insmix(image, labels, bank256, {"eps": 1}, seed=0)
    with pytest.raises(InputError, match="indices"):
        insmix_batch(image[None], labels[None], bank256, indices=[0, 1])
    with pytest.raises(InputError, match="device"):
        insmix_batch(image[None], labels[None], bank256, device="tpu")


def test_empty_bank_is_rejected(tiles256):
    with pytest.raises(BankError, match="empty"):
        InstanceBank.from_samples([(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.int32))], progress=False)


@pytest.mark.parametrize("field,value", [
    ("eps", -0.1), ("rho", float("nan")), ("delta", 50.0), ("gamma", -1.0), ("p_paste", 1.5),
    ("max_occlusion", -0.2), ("n_tries", 0), ("alpha", 2.0), ("patch", 1), ("n_tries", 2.5),
    ("offset_mode", "spiral"), ("template_source", "web"), ("foreground", "yes"),
])
def test_config_validation(field, value):
    with pytest.raises(ConfigError, match=field):
        InsMixConfig(**{field: value})


def test_config_defaults_follow_spec():
    c = InsMixConfig()
    assert (c.eps, c.rho, c.delta, c.gamma, c.p_paste, c.max_occlusion, c.n_tries, c.alpha, c.patch) == \
        (1.0, 0.8, 0.0, 40.0, 0.5, 0.3, 4, 0.2, 20)
    assert OFFICIAL.alpha == 0.5 and OFFICIAL.offset_mode == "diagonal" and OFFICIAL.template_source == "self"
    with pytest.raises(ConfigError, match="ablation"):
        InsMixConfig.ablation("everything")
