"""InsMix parameters (``../shared/SPEC.md`` §2–4) as one validated dataclass."""

from __future__ import annotations

import dataclasses
import functools
import warnings
from dataclasses import dataclass
from typing import Literal

from .errors import ConfigError
from .validation import check_bool, check_choice, check_int, check_number

__all__ = ["InsMixConfig", "OFFICIAL"]

OffsetMode = Literal["annulus", "diagonal"]
TemplateSource = Literal["bank", "self"]
TemplateClass = Literal["any", "same", "balanced"]


@dataclass(frozen=True)
class InsMixConfig:
    """Parameters of one InsMix call; the defaults are those of SPEC §2.

    Foreground (copy-paste with SSD constraints)
        eps:            scale gap bound, ``f_scale = (max−min)/min ≤ eps``.
        rho:            shape gap bound, ``f_shape = |Mo xor Mt| / max ≤ rho``.
        delta, gamma:   the template's centroid lands at an integer offset
                        (dy, dx) from the original's with ``delta² ≤ dy²+dx² ≤ gamma²``.
        p_paste:        probability that an original instance receives a paste.
        max_occlusion:  a placement may cover at most this fraction of any
                        existing instance.
        n_tries:        placements tried per original before giving up.
    Background perturbation
        alpha:          fraction of background patches that are permuted.
        patch:          side of the background patches in pixels (``tile`` is
                        its deprecated old name, accepted with a warning).
    Switches (paper Table 3 ablations)
        foreground:     paste templates (False: background perturbation only).
        background:     shuffle background patches (False: no BgP).
        ssd:            apply the scale/shape/distance constraints; False gives
                        plain copy-paste: any bank template, anywhere in the tile.
    Official-code options (for comparison runs, SPEC §2)
        offset_mode:    "annulus" (ours) or "diagonal" (one d ∈ [−gamma, gamma)
                        per tile added to both axes, as the official code does).
        template_source: "bank" (the whole bank, ours) or "self" (a bank built
                        from the input tile itself, as the official code does).
    Nucleus classes (SPEC §3b; typed banks)
        template_class: "any" (the paper: templates of every class), "same" (only
                        templates of the original's class; needs ``types``) or
                        "balanced" (per original, first draw a class c over the
                        bank's classes — each template weighted n_c^(−balance_power),
                        so class c has probability ∝ n_c^(1−balance_power) — then
                        the SSD choice among class-c templates; none admissible:
                        no paste).
        balance_power:  β of "balanced": 1 = uniform over classes (default), 0 =
                        the bank's class frequencies, > 1 favours rare classes more.
    Sampling
        max_draws:      uniform draws in the scale range before the exact
                        fallback scan (the choice is uniform either way).
    """

    eps: float = 1.0
    rho: float = 0.8
    delta: float = 0.0
    gamma: float = 40.0
    p_paste: float = 0.5
    max_occlusion: float = 0.3
    n_tries: int = 4
    alpha: float = 0.2
    patch: int = 20
    foreground: bool = True
    background: bool = True
    ssd: bool = True
    offset_mode: OffsetMode = "annulus"
    template_source: TemplateSource = "bank"
    max_draws: int = 32
    template_class: TemplateClass = "any"
    balance_power: float = 1.0

    def __post_init__(self) -> None:
        def num(name: str, lo: float, hi: float) -> None:
            check_number(f"InsMixConfig.{name}", getattr(self, name), lo, hi)

        def integer(name: str, lo: int, hi: int) -> None:
            check_int(f"InsMixConfig.{name}", getattr(self, name), lo, hi)

        num("eps", 0.0, 1e6)
        num("rho", 0.0, 2.0)
        num("delta", 0.0, 4096.0)
        num("gamma", 0.0, 4096.0)
        if self.delta > self.gamma:
            raise ConfigError(f"InsMixConfig.delta = {self.delta} must not exceed gamma = {self.gamma}")
        num("p_paste", 0.0, 1.0)
        num("max_occlusion", 0.0, 1.0)
        integer("n_tries", 1, 1000)
        num("alpha", 0.0, 1.0)
        integer("patch", 2, 4096)
        integer("max_draws", 1, 1_000_000)
        for name in ("foreground", "background", "ssd"):
            check_bool(f"InsMixConfig.{name}", getattr(self, name))
        check_choice("InsMixConfig.offset_mode", self.offset_mode, ("annulus", "diagonal"))
        check_choice("InsMixConfig.template_source", self.template_source, ("bank", "self"))
        check_choice("InsMixConfig.template_class", self.template_class, ("any", "same", "balanced"))
        num("balance_power", 0.0, 16.0)

    @property
    def tile(self) -> int:
        """Deprecated alias of :attr:`patch` (the background patch side)."""
        warnings.warn("InsMixConfig.tile is deprecated: use InsMixConfig.patch (the background patch side)",
                      DeprecationWarning, stacklevel=2)
        return self.patch

    def replace(self, **changes) -> "InsMixConfig":
        """A copy with some fields changed (validated again)."""
        if "tile" in changes:
            changes["patch"] = _patch_from_tile(changes.pop("tile"), changes.get("patch"), stacklevel=2)
        return dataclasses.replace(self, **changes)

    @classmethod
    def ablation(cls, name: str, **overrides) -> "InsMixConfig":
        """Configurations for the rows of the paper's Table 3.

        ``"copy-paste"`` (no SSD, no BgP), ``"ssd"`` (SSD only), ``"bgp"``
        (copy-paste + background perturbation), ``"full"`` (SSD + BgP).
        The smooth-GAN rows add the blender on top of ``"ssd"``/``"full"``.
        """
        table = {
            "copy-paste": dict(ssd=False, background=False),
            "ssd": dict(ssd=True, background=False),
            "bgp": dict(ssd=False, background=True),
            "bgp-only": dict(foreground=False, background=True),
            "full": dict(ssd=True, background=True),
        }
        if name not in table:
            raise ConfigError(f"unknown ablation {name!r}; choose one of {sorted(table)}")
        if "tile" in overrides:
            overrides["patch"] = _patch_from_tile(overrides.pop("tile"), overrides.get("patch"), stacklevel=2)
        return cls(**{**table[name], **overrides})


def _patch_from_tile(tile, patch, *, stacklevel: int):
    warnings.warn("InsMixConfig(tile=...) is deprecated: use patch=... (the background patch side)",
                  DeprecationWarning, stacklevel=stacklevel + 1)
    if patch is not None and patch != tile:
        raise ConfigError(f"InsMixConfig got tile={tile!r} and patch={patch!r}: tile is the deprecated name of patch; "
                          "give patch only")
    return tile


_dataclass_init = InsMixConfig.__init__


@functools.wraps(_dataclass_init)
def _init(self, *args, **kwargs):
    if "tile" in kwargs:  # the deprecated name of ``patch``
        kwargs["patch"] = _patch_from_tile(kwargs.pop("tile"), kwargs.get("patch"), stacklevel=2)
    _dataclass_init(self, *args, **kwargs)


InsMixConfig.__init__ = _init


#: The behaviour of the official code (SPEC §2): templates from the same image,
#: background ratio 0.5, one diagonal offset per crop.
OFFICIAL = InsMixConfig(alpha=0.5, offset_mode="diagonal", template_source="self")
