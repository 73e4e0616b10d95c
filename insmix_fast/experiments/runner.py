"""Experiment runner: arms × seeds → results CSV, Markdown table and bar chart.

Layout of the output directory::

    OUT/config.json          the resolved configuration (a resumed run must match it)
    OUT/runs/<arm>__s<seed>.json   one finished run: per-image metrics, loss history, timing
    OUT/results.csv          one row per (arm, seed, group): mean metrics over that group's images
    OUT/per_image.csv        one row per (arm, seed, image)
    OUT/results.md           mean ± std over seeds, per arm (AJI, Dice, AJI+, PQ; AJI per group)
    OUT/results.png          AJI bar chart per arm (and test group), ±std over seeds, seeds as dots
                             (matplotlib: the ``plots`` extra; ``plots=False`` skips it)
    OUT/results_mpq.png      typed data: the same chart of PanNuke's mPQ

Typed data (samples with nucleus classes: a typed data set, or synthetic tiles with
``n_classes``) train a model with a type head and add mPQ, bPQ and mPQ⁺ to every report
(:func:`~insmix_fast.experiments.train.evaluate_typed`). Cross-validation splits
(``data.splits``, e.g. PanNuke's three folds) run every arm × seed × split; a run file is
then ``<arm>__s<seed>__<split>.json`` and each split's test images form the group named
after it.

A run is written (atomically) only when it has finished, so ``--resume`` skips
exactly the finished arm×seed runs and an interrupted run starts again.
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.resources
import json
import os
import time
import tomllib
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ..atomic import atomic_path, write_text
from ..errors import ConfigError
from ..validation import check_choice, check_int
from .policies import ARMS, make_policy
from .train import TYPED_METRICS, SegmenterTrainConfig, evaluate_model, evaluate_typed, train_model

__all__ = [
    "DataConfig",
    "ExperimentConfig",
    "load_config",
    "load_data",
    "run_experiment",
    "write_reports",
    "plot_results",
    "read_results_csv",
    "BUILTIN_CONFIGS",
    "METRICS",
]

BUILTIN_CONFIGS = ("smoke", "kumar", "kumar-synthetic", "synthetic-cpu", "smoke-typed", "pannuke")
METRICS = ("aji", "dice", "aji_plus", "pq")


@dataclass
class DataConfig:
    """Where the images come from and how they are split.

    source: "synthetic" (tiles of :class:`~insmix_fast.data.SyntheticNuclei`:
        ``n_train`` for training, the next ``n_test`` for testing, one group
        ``"all"``) or "path" (``path``: a folder read by
        :func:`~insmix_fast.data.open_dataset` — MoNuSeg/Kumar layout or
        images/ + labels/).
    path: data folder; ``$VARS`` are expanded; when empty, the environment
        variable named by ``path_env`` is used.
    train: names (file stems) of the training images; test images are those
        listed in ``groups`` (group name → stems), e.g. seen / unseen organs.
        Without ``train``: the first ``n_train`` sorted names train, the rest test.
    synthetic: extra keywords for SyntheticNuclei (density, radius_range, ...).
    n_unseen, unseen: synthetic only — ``n_unseen`` more test tiles drawn with
        the keywords of ``synthetic`` updated by ``unseen`` (e.g. another stain,
        other nucleus sizes) and another seed, as an "unseen" group; the
        ``n_test`` ordinary test tiles then form the group "seen".
    options: keywords for the data set's constructor (source "path"), e.g.
        ``degenerate = "skip"`` for MoNuSeg XML with degenerate polygons.
    splits: cross-validation (source "path"): a list of tables ``{name, train, test}`` whose
        ``train``/``test`` list parts of the data set — given to its constructor as the
        keyword ``split_key`` (PanNuke: ``folds``; HoVer-Net layouts: ``splits``; MoNuSAC:
        ``patients``). Every arm × seed runs once per split; ``train``/``groups`` are then unused.
    split_key: the constructor keyword that selects parts (default ``"folds"``).
    """

    source: str = "synthetic"
    path: str = ""
    path_env: str = "INSMIX_KUMAR_DIR"
    seed: int = 0
    size: int = 256
    n_train: int = 16
    n_test: int = 14
    train: list = field(default_factory=list)
    groups: dict = field(default_factory=dict)
    synthetic: dict = field(default_factory=dict)
    n_unseen: int = 0
    unseen: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    splits: list = field(default_factory=list)
    split_key: str = "folds"

    def __post_init__(self):
        check_int("data.n_unseen", self.n_unseen, 0)
        self._check_splits()
        check_choice("data.source", self.source, ("synthetic", "path"))
        for name in ("n_train", "n_test", "size"):
            check_int(f"data.{name}", getattr(self, name), 16 if name == "size" else 1)
        if not isinstance(self.groups, dict) or not all(isinstance(v, list) for v in self.groups.values()):
            raise ConfigError("data.groups must be a table of group name → list of image names")

    def _check_splits(self) -> None:
        if not self.splits:
            return
        if self.source != "path":
            raise ConfigError("data.splits needs data.source = 'path' (a data set with parts, e.g. PanNuke's folds)")
        if not isinstance(self.split_key, str) or not self.split_key:
            raise ConfigError(f"data.split_key must be a constructor keyword (e.g. 'folds'), got {self.split_key!r}")
        seen = set()
        for i, sp in enumerate(self.splits):
            where = f"data.splits[{i}]"
            if not isinstance(sp, dict) or set(sp) != {"name", "train", "test"}:
                raise ConfigError(f"{where} must be a table with keys name, train, test; got {sp!r}")
            if not isinstance(sp["name"], str) or not sp["name"] or "/" in sp["name"] or sp["name"] in seen:
                raise ConfigError(f"{where}.name must be a unique non-empty name without '/', got {sp['name']!r}")
            seen.add(sp["name"])
            for part in ("train", "test"):
                if not isinstance(sp[part], list) or not sp[part]:
                    raise ConfigError(f"{where}.{part} must be a non-empty list of parts, got {sp[part]!r}")
            both = {str(v) for v in sp["train"]} & {str(v) for v in sp["test"]}
            if both:
                raise ConfigError(f"{where}: part(s) {sorted(both)} both in train and test")

    def resolved_path(self) -> Path:
        p = os.path.expandvars(self.path) if self.path else os.environ.get(self.path_env, "")
        if not p or "$" in p:
            raise ConfigError(
                f"no data folder: set data.path in the config or the environment variable {self.path_env} "
                "to the Kumar/MoNuSeg folder (see docs/experiments.md)"
            )
        path = Path(p).expanduser()
        if not path.is_dir():
            raise ConfigError(f"data folder {path} does not exist")
        return path


@dataclass
class ExperimentConfig:
    """A whole experiment: data, training recipe, arms × seeds.

    arms: arm names (see :data:`insmix_fast.experiments.policies.ARMS`).
    arm_params: per-arm constructor parameters (``[arms.<name>]`` tables).
    seeds: training seeds; every arm uses the same seeds (paired comparison:
        same crops and traditional augmentation for the same seed).
    """

    name: str = "experiment"
    data: DataConfig = field(default_factory=DataConfig)
    train: SegmenterTrainConfig = field(default_factory=SegmenterTrainConfig)
    arms: list = field(default_factory=lambda: ["none"])
    seeds: list = field(default_factory=lambda: [0])
    arm_params: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.arms or not all(isinstance(a, str) for a in self.arms):
            raise ConfigError("experiment.arms must be a non-empty list of arm names")
        bad = [a for a in self.arms if a not in ARMS]
        if bad:
            raise ConfigError(f"unknown arm(s) {bad}; choose from {', '.join(ARMS)}")
        if len(set(self.arms)) != len(self.arms):
            raise ConfigError(f"experiment.arms has duplicates: {self.arms}")
        if not self.seeds:
            raise ConfigError("experiment.seeds must be a non-empty list of integers ≥ 0")
        for i, seed in enumerate(self.seeds):
            check_int(f"experiment.seeds[{i}]", seed, 0)
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"experiment.seeds has duplicates: {self.seeds}")
        for a in self.arm_params:
            if a not in ARMS:
                raise ConfigError(f"[arms.{a}]: unknown arm")
        self.arm_params = {a: _patch_key(a, p, warn=True) for a, p in self.arm_params.items()}

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "data": dataclasses.asdict(self.data),
            "train": self.train.to_dict(),
            "arms": list(self.arms),
            "seeds": list(self.seeds),
            "arm_params": self.arm_params,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "ExperimentConfig":
        d = dict(d)
        known = {"name", "data", "train", "experiment", "arms"}
        extra = set(d) - known
        if extra:
            raise ConfigError(f"unknown top-level config key(s) {sorted(extra)}; expected {sorted(known)}")

        def build(kls, table, where):
            table = dict(table or {})
            names = {f.name for f in dataclasses.fields(kls) if f.init}
            unknown = set(table) - names
            if unknown:
                raise ConfigError(f"[{where}]: unknown key(s) {sorted(unknown)}; expected {sorted(names)}")
            return kls(**table)

        exp = dict(d.get("experiment", {}))
        unknown = set(exp) - {"arms", "seeds"}
        if unknown:
            raise ConfigError(f"[experiment]: unknown key(s) {sorted(unknown)}; expected ['arms', 'seeds']")
        arm_params = d.get("arms", {})
        if not isinstance(arm_params, dict):
            raise ConfigError("[arms] must be a table of per-arm parameter tables")
        return cls(
            name=str(d.get("name", "experiment")),
            data=build(DataConfig, d.get("data"), "data"),
            train=build(SegmenterTrainConfig, d.get("train"), "train"),
            arms=list(exp.get("arms", ["none"])),
            seeds=list(exp.get("seeds", [0])),
            arm_params=arm_params,
        )

    def file_dict(self) -> dict:
        """The TOML-shaped dict (inverse of :meth:`from_dict`)."""
        d = self.to_dict()
        return {"name": d["name"], "data": d["data"], "train": d["train"],
                "experiment": {"arms": d["arms"], "seeds": d["seeds"]}, "arms": d["arm_params"]}


def _patch_key(arm: str, params, warn: bool = False):
    """``params`` of arm ``arm`` with the deprecated InsMix key ``tile`` renamed to ``patch``
    (the background patch side; a FutureWarning with ``warn``: config files are user input)."""
    if not (arm.startswith("insmix-") and isinstance(params, dict) and "tile" in params):
        return params
    params = dict(params)
    tile = params.pop("tile")
    if warn:
        warnings.warn(f"[arms.{arm}] tile = {tile!r} is deprecated: write patch = {tile!r} "
                      "(the side of the background patches)", FutureWarning, stacklevel=4)
    if params.setdefault("patch", tile) != tile:
        raise ConfigError(f"[arms.{arm}] has tile = {tile!r} and patch = {params['patch']!r}; tile is the "
                          "deprecated name of patch: give patch only")
    return params


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def load_config(spec: str | os.PathLike, overrides: dict | None = None) -> ExperimentConfig:
    """Load ``"smoke"``, ``"kumar"`` (packaged configs) or a TOML file; ``overrides``
    (same nested layout as the file) are merged on top."""
    text = os.fspath(spec)
    if text in BUILTIN_CONFIGS:
        raw = importlib.resources.files(__package__).joinpath("configs", f"{text}.toml").read_text("utf-8")
        where = f"built-in config {text!r}"
    else:
        p = Path(text)
        if not p.is_file():
            raise ConfigError(f"config file not found: {p} (or use one of {', '.join(BUILTIN_CONFIGS)})")
        raw = p.read_text("utf-8")
        where = str(p)
    try:
        d = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{where}: invalid TOML: {e}") from e
    if overrides:
        d = _merge(d, overrides)
    try:
        return ExperimentConfig.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from e


# --------------------------------------------------------------------------- data


class _TestItems:
    """The test items ``(name, group, image, labels[, types[, tissue]])`` of a data set, read on
    access (a cross-validation fold is not held in memory)."""

    def __init__(self, ds, group: str) -> None:
        self.ds, self.group = ds, group
        n = len(ds)
        self.names = [str(v) for v in getattr(ds, "names", [f"{group}-{k:05d}" for k in range(n)])]

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, k: int):
        sample = self.ds[k]
        extra = (self.ds.tissue(k),) if len(sample) > 2 and hasattr(self.ds, "tissue") else ()
        return (self.names[k], self.group, *sample, *extra)

    def __iter__(self):
        return (self[k] for k in range(len(self)))


def _open(dc: DataConfig, **parts):
    from ..data import open_dataset

    try:
        return open_dataset(dc.resolved_path(), **dc.options, **parts)
    except TypeError as e:
        raise ConfigError(f"data.options {dc.options}{' / ' + str(parts) if parts else ''}: {e}") from e


def _load(dc: DataConfig, split: dict | None = None) -> tuple:
    """``(train_samples, test_items, class_names or None)`` (see :func:`load_data`)."""
    from ..data.synthetic import SyntheticNuclei

    if split is not None:
        train = _open(dc, **{dc.split_key: list(split["train"])})
        test = _TestItems(_open(dc, **{dc.split_key: list(split["test"])}), split["name"])
        if not len(train) or not len(test):
            raise ConfigError(f"split {split['name']!r}: {len(train)} training and {len(test)} test images")
        return train, test, getattr(train, "class_names", None)
    if dc.source == "synthetic":
        syn = dict(dc.synthetic)
        ds = SyntheticNuclei(seed=dc.seed, size=dc.size, length=dc.n_train + dc.n_test, **syn)
        train = [ds[i] for i in range(dc.n_train)]
        group = "seen" if dc.n_unseen else "all"
        test = [(f"synthetic-{i:04d}", group, *ds[i]) for i in range(dc.n_train, dc.n_train + dc.n_test)]
        if dc.n_unseen:
            kw = {**syn, **dc.unseen}
            if "stain" in kw:
                kw["stain"] = np.asarray(kw["stain"], float)
            other = SyntheticNuclei(seed=dc.seed + 1, size=dc.size, length=dc.n_unseen, **kw)
            test += [(f"synthetic-unseen-{i:04d}", "unseen", *other[i]) for i in range(dc.n_unseen)]
        return train, test, ds.class_names
    ds = _open(dc)
    names = [str(n) for n in getattr(ds, "names", [f"{i:04d}" for i in range(len(ds))])]
    pos = {n: i for i, n in enumerate(names)}
    if dc.train:
        missing = [n for n in dc.train if n not in pos]
        groups = dc.groups or {"all": [n for n in names if n not in set(dc.train)]}
        missing += [n for g in groups.values() for n in g if n not in pos]
        if missing:
            raise ConfigError(
                f"data folder {dc.resolved_path()} lacks image(s) named in the config: {missing[:6]}"
                f"{' ...' if len(missing) > 6 else ''} (found {len(names)}: {names[:4]} ...)"
            )
        train_names = list(dc.train)
    else:
        train_names = names[: dc.n_train]
        groups = dc.groups or {"all": names[dc.n_train :]}
    overlap = set(train_names) & {n for g in groups.values() for n in g}
    if overlap:
        raise ConfigError(f"image(s) both in train and test: {sorted(overlap)[:6]}")
    train = [ds[pos[n]] for n in train_names]
    tissue = (lambda k: (ds.tissue(k),)) if getattr(ds, "typed", False) and hasattr(ds, "tissue") else (lambda k: ())
    test = [(n, g, *ds[pos[n]], *tissue(pos[n])) for g, members in groups.items() for n in members]
    if not train or not test:
        raise ConfigError(f"empty split: {len(train)} training and {len(test)} test images")
    return train, test, getattr(ds, "class_names", None)


def load_data(dc: DataConfig, split: dict | None = None) -> tuple[list, list]:
    """``(train_samples, test_items)``: ``[(image, labels)]`` and
    ``[(name, group, image, labels)]`` — typed data: ``(image, labels, types)`` and
    ``(name, group, image, labels, types[, tissue])``. With ``split`` (one of
    ``dc.splits``): that split's training parts (a data set, read on access) and its test
    parts (items read on access, group = the split's name)."""
    return _load(dc, split)[:2]


# --------------------------------------------------------------------------- running


def _run_path(out: Path, arm: str, seed: int, split: str | None = None) -> Path:
    return out / "runs" / (f"{arm}__s{seed}.json" if split is None else f"{arm}__s{seed}__{split}.json")


def run_experiment(cfg: ExperimentConfig, out: str | os.PathLike, resume: bool = False,
                   progress: bool | None = None, plots: bool = True) -> dict:
    """Run every arm × seed not yet finished in ``out`` and write the reports
    (``plots=False``: no results.png; with ``plots`` matplotlib must be installed, checked first).

    Without ``resume`` the output directory must not hold finished runs already.
    With ``resume`` the stored config must equal ``cfg`` (except ``arms``/``seeds``,
    which may grow, and ``train.threads``/``train.workers``) and finished runs are
    skipped. ``train.workers`` never changes a run; ``train.threads`` (torch's CPU
    threads) changes the summation order of torch's CPU kernels, so runs made with
    another thread count are equal in distribution, not bit for bit.

    Returns ``{"ran": [(arm, seed)], "skipped": [(arm, seed)], "summary": {...}}``.
    """
    if plots:
        from ..plots import require_matplotlib

        require_matplotlib("results.png (or pass --no-plots / plots=False)")
    out = Path(out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    cfg_path = out / "config.json"
    mine = cfg.to_dict()
    done_any = any((out / "runs").glob("*.json"))
    if cfg_path.exists() and done_any:
        if not resume:
            raise ConfigError(f"{out} already holds finished runs; pass --resume to continue them or choose another --out")
        old = json.loads(cfg_path.read_text("utf-8"))
        def strip(d):  # arms/seeds may grow; threads/workers set the speed (see the docstring)
            d = {k: v for k, v in d.items() if k not in ("arms", "seeds")}
            d["train"] = {k: v for k, v in d["train"].items() if k not in ("threads", "workers")}
            d["arm_params"] = {a: _patch_key(a, p) for a, p in d.get("arm_params", {}).items()}  # old `tile`
            return d

        if strip(old) != strip(json.loads(json.dumps(mine))):
            raise ConfigError(f"{out}: --resume with a different configuration than the stored {cfg_path.name}")
    write_text(cfg_path, json.dumps(mine, indent=2))

    splits = {sp["name"]: sp for sp in cfg.data.splits}
    todo, skipped = [], []
    for arm in cfg.arms:
        for seed in cfg.seeds:
            for key in ([(arm, seed, name) for name in splits] or [(arm, seed)]):
                (skipped if _run_path(out, *key).exists() else todo).append(key)
    ran = []
    if todo:
        loaded: dict = {}
        bar = tqdm(todo, desc=f"experiment {cfg.name}", unit="run", disable=None if progress is None else not progress)
        for key in bar:
            arm, seed, split = key[0], key[1], (key[2] if len(key) > 2 else None)
            bar.set_postfix(arm=arm, seed=seed, **({} if split is None else {"split": split}))
            if split not in loaded:
                loaded = {split: _load(cfg.data, splits.get(split))}  # one split's data at a time
            train, test, names = loaded[split]
            t0 = time.perf_counter()
            policy = make_policy(arm, train, cfg.arm_params.get(arm), class_names=names)
            model, hist = train_model(train, cfg.train, seed=seed, policy=policy, progress=progress,
                                      desc=f"{arm} s{seed}" + ("" if split is None else f" {split}"),
                                      class_names=names)
            t1 = time.perf_counter()
            typed = None
            if names is None:
                rows = evaluate_model(model, test, cfg.train.min_size)
            else:
                rows, typed = evaluate_typed(model, test, names, cfg.train.min_size)
            rec = {
                "arm": arm, "seed": seed, "images": rows, "loss": hist["loss"], "device": hist["device"],
                "train_seconds": t1 - t0, "eval_seconds": time.perf_counter() - t1,
                "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }
            if split is not None:
                rec["split"] = split
            if names is not None:
                rec.update(class_names=list(names), typed=typed)
            write_text(_run_path(out, *key), json.dumps(rec, indent=1))
            ran.append(key)
            write_reports(out, cfg, plots=plots)
    summary = write_reports(out, cfg, plots=plots)
    return {"ran": ran, "skipped": skipped, "summary": summary}


# --------------------------------------------------------------------------- reports


def _mean_std(v: list[float]) -> tuple[float, float]:
    a = np.asarray(v, float)
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def _fmt(v: list[float]) -> str:
    if not v:
        return "–"
    m, s = _mean_std(v)
    return f"{100 * m:.2f} ± {100 * s:.2f}" if len(v) > 1 else f"{100 * m:.2f}"


def write_reports(out: str | os.PathLike, cfg: ExperimentConfig | None = None, plots: bool = True) -> dict:
    """(Re)write results.csv, per_image.csv, results.md and (``plots``) results.png from ``out/runs``.

    Returns ``{arm: {"n": runs, "aji": [per-seed values], ..., "groups": {g: {"aji": [...]}}}}``.
    """
    out = Path(out)
    recs = [json.loads(p.read_text("utf-8")) for p in sorted((out / "runs").glob("*.json"))]
    order = list(cfg.arms) if cfg else []
    for r in recs:
        if r["arm"] not in order:
            order.append(r["arm"])
    recs.sort(key=lambda r: (order.index(r["arm"]), r["seed"]))
    groups: list[str] = []
    for r in recs:
        for row in r["images"]:
            if row["group"] not in groups:
                groups.append(row["group"])
    metrics = _metrics_of(recs)
    summary: dict[str, Any] = {}
    res_rows, img_rows = [], []
    for r in recs:
        s = summary.setdefault(r["arm"], {"n": 0, **{m: [] for m in metrics}, "groups": {}, "seconds": []})
        s["n"] += 1
        s["seconds"].append(r["train_seconds"])
        by_group = {"all": r["images"]}
        if len(groups) > 1:
            for g in groups:
                by_group[g] = [x for x in r["images"] if x["group"] == g]
        for g, rows in by_group.items():
            if not rows:  # a cross-validation run has its own split's group only
                continue
            means = {m: float(np.mean([x[m] for x in rows])) for m in METRICS}
            for m in metrics[len(METRICS):]:  # typed: data-set level values of the group
                means[m] = float((r.get("typed") or {}).get(g, {}).get(m, float("nan")))
            res_rows.append({"arm": r["arm"], "seed": r["seed"], "split": r.get("split", ""), "group": g,
                             "n_images": len(rows), **{m: f"{means[m]:.6f}" for m in metrics}, "device": r["device"],
                             "train_seconds": f"{r['train_seconds']:.1f}"})
            if g == "all":
                for m in metrics:
                    s[m].append(means[m])
            else:
                s["groups"].setdefault(g, {m: [] for m in metrics})
                for m in metrics:
                    s["groups"][g][m].append(means[m])
        for x in r["images"]:
            img_rows.append({"arm": r["arm"], "seed": r["seed"], "split": r.get("split", ""), **x})
    split_col = ["split"] if any("split" in r for r in recs) else []
    _write_csv(out / "results.csv", res_rows, ["arm", "seed", *split_col, "group", "n_images", *metrics, "device",
                                               "train_seconds"])
    typed_img = ["mpq", "bpq"] if len(metrics) > len(METRICS) else []
    _write_csv(out / "per_image.csv", img_rows,
               ["arm", "seed", *split_col, "image", "group", "dice", "aji", "aji_plus", "pq", "dq", "sq", *typed_img,
                "n_true", "n_pred"])
    _write_markdown(out / "results.md", summary, groups if len(groups) > 1 else [], cfg, recs)
    if plots:
        plot_results(summary, out / "results.png", cfg.name if cfg else "experiment")
        if "mpq" in metrics:
            plot_results(summary, out / "results_mpq.png", cfg.name if cfg else "experiment", metric="mpq")
    return summary


def _metrics_of(recs) -> tuple[str, ...]:
    """The report metrics: :data:`METRICS`, and :data:`TYPED_METRICS` when a run is typed."""
    return METRICS + (TYPED_METRICS if any(r.get("typed") for r in recs) else ())


def _write_csv(path: Path, rows: list[dict], cols: list[str]) -> None:
    with atomic_path(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


_LABELS = {"mpq": "mPQ", "bpq": "bPQ", "mpq_plus": "mPQ+"}


def _write_markdown(path: Path, summary: dict, groups: list[str], cfg, recs) -> None:
    metrics = _metrics_of(recs)
    typed = metrics[len(METRICS):]
    head = (["Arm", "runs", "AJI (%)", "Dice (%)", "AJI+ (%)", "PQ (%)"] + [f"{_LABELS[m]} (%)" for m in typed]
            + [f"AJI {g} (%)" for g in groups] + ([f"mPQ {g} (%)" for g in groups] if typed else []))
    lines = []
    if cfg is not None:
        t = cfg.train
        dev = sorted({r["device"] for r in recs}) or ["–"]
        lines += [
            f"# Experiment `{cfg.name}`",
            "",
            f"Data: {cfg.data.source}"
            + (f" ({cfg.data.n_train} train / {cfg.data.n_test} test"
               + (f" (seen) + {cfg.data.n_unseen} unseen-stain test" if cfg.data.n_unseen else "")
               + f" tiles of {cfg.data.size}², seed {cfg.data.seed})"
               if cfg.data.source == "synthetic" else f" ({cfg.data.path or '$' + cfg.data.path_env})")
            + f". Model: ResUNet-34 layout, width {t.width}. Training: {t.steps} steps × {t.batch_size} crops of "
            f"{t.crop}², Adam lr {t.lr:g} wd {t.weight_decay:g}, cosine restarts every {t.restart_every} steps, "
            f"p_mix {t.p_mix:g}. Device: {', '.join(dev)}. Seeds: {sorted({r['seed'] for r in recs})}.",
            "",
        ]
        if cfg.data.splits:
            parts = "; ".join(f"{sp['name']}: train {sp['train']}, test {sp['test']}" for sp in cfg.data.splits)
            lines += [f"Cross-validation ({cfg.data.split_key}): {parts}. Runs = seeds × splits; the mean ± std "
                      "is over all of them.", ""]
        if typed:
            names = next((r["class_names"] for r in recs if r.get("class_names")), [])
            lines += [f"Typed: classes {', '.join(names[1:])}; the model has a type head. mPQ and bPQ as PanNuke "
                      "(per image, averaged over tissues when known), mPQ+ as CoNIC (counts pooled over the test "
                      "images).", ""]
        lines += ["Mean ± sample std over seeds of the per-run mean over test images.", ""]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|")
    for arm, s in summary.items():
        cells = [arm, str(s["n"])] + [_fmt(s[m]) for m in metrics]
        cells += [_fmt(s["groups"].get(g, {}).get("aji", [])) for g in groups]
        cells += [_fmt(s["groups"].get(g, {}).get("mpq", [])) for g in groups] if typed else []
        lines.append("| " + " | ".join(cells) + " |")
    write_text(path, "\n".join(lines) + "\n")


def read_results_csv(path: str | os.PathLike) -> dict:
    """The summary of a ``results.csv`` (what :func:`write_reports` returns, without timings):
    ``{arm: {"n": runs, "aji": [per seed], ..., "groups": {group: {"aji": [...], ...}}}}``.
    Used to re-plot a finished experiment (``plot_results(read_results_csv(p), "results.png", name)``)."""
    summary: dict[str, Any] = {}
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        metrics = METRICS + tuple(m for m in TYPED_METRICS if m in (reader.fieldnames or ()))
        for row in reader:
            s = summary.setdefault(row["arm"], {"n": 0, **{m: [] for m in metrics}, "groups": {}})
            if row["group"] == "all":
                s["n"] += 1
                dest = s
            else:
                dest = s["groups"].setdefault(row["group"], {m: [] for m in metrics})
            for m in metrics:
                dest[m].append(float(row[m]))
    return summary


def plot_results(summary: dict, path: str | os.PathLike, title: str, metric: str = "aji") -> Path:
    """Bar chart of ``metric`` (in %) per arm: the mean over seeds with ± sample std, every seed
    as a dot; one bar per test group ("all" and, when the test set has groups, e.g. "seen" /
    "unseen") side by side. ``summary`` is what :func:`write_reports` returns."""
    from ..plots import bar_chart, new_figure, save_figure

    arms = list(summary)
    groups = ["all"] + list(dict.fromkeys(g for a in arms for g in summary[a]["groups"]))
    values, errors, points = {}, {}, {}
    for a in arms:
        values[a], errors[a], points[a] = {}, {}, {}
        for g in groups:
            seeds = summary[a][metric] if g == "all" else summary[a]["groups"].get(g, {}).get(metric, [])
            if not seeds:
                continue
            m, s = _mean_std(seeds)
            values[a][g], errors[a][g], points[a][g] = 100 * m, 100 * s, [100 * v for v in seeds]
    n_seeds = max((summary[a]["n"] for a in arms), default=0)
    width = min(16.0, 1.6 + len(arms) * (0.55 + 0.35 * len(groups)))
    fig, ax = new_figure(1, width=width, height=3.4)
    spread = f"mean ± std over {n_seeds} seeds" if n_seeds > 1 else "1 seed"
    label = _LABELS.get(metric, metric.upper())
    bar_chart(ax, values, errors=errors, points=points, fmt="{:.1f}", ylabel=f"{label} (%)",
              title=f"{title}: {label} per arm ({spread})")
    if len(arms) > 6:
        ax.tick_params(axis="x", labelrotation=30)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    return save_figure(fig, path)
