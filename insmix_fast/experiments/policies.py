"""Augmentation arms of an experiment: name → batch policy.

An arm is a callable ``policy(images, labels, seed, indices) -> (images, labels)``
over N×H×W×3 / N×H×W crops (see :func:`make_policy`). Names:

* ``none`` — traditional augmentation only (the baseline row);
* ``mixup``, ``cutout``, ``cutmix``, ``cowout``, ``cowmix``, ``copy-paste`` —
  :mod:`insmix_fast.baselines` (partners: a seeded derangement of the batch);
* ``insmix-<ablation>`` with ``<ablation>`` one of
  :meth:`insmix_fast.config.InsMixConfig.ablation`'s names — ``insmix-copy-paste``
  (random templates from the bank, no SSD), ``insmix-ssd``, ``insmix-bgp``,
  ``insmix-bgp-only``, ``insmix-full`` — InsMix with the instance bank of the
  training images;
* ``insmix-ssd-gan``, ``insmix-full-gan`` — the smooth-GAN rows of Table 3
  ("SSD + smooth-GAN", "all"): the same InsMix output, then the pasted pixels
  blended by a trained blender (:class:`insmix_fast.gan.Blender`). They need
  ``blender = "PATH"`` in ``[arms.<name>]`` (an exported ``.pt2``/``.pt`` or a
  ``gan train`` checkpoint / output folder); optional ``strength`` (1.0 =
  paper, 0.7 = official code) and ``blend_device`` (default: CPU). The blend is
  applied after the background perturbation, which only moves patches free of
  instance pixels, so it touches exactly the pasted pixels either way.

``params`` (the ``[arms.<name>]`` table of a config) go to the policy's
constructor (baselines) or override InsMixConfig fields (InsMix arms).

Typed data: every policy takes ``types=`` (N×H×W class maps) and then returns
``(images, labels, types)`` (``policy.typed`` is True). InsMix arms paste with
``insmix_batch(types=)`` from a typed bank (pasted nuclei keep their template's class;
``template_class`` in the arm's table chooses any/same/balanced); the mix baselines give a
pixel the partner's class where they take the partner's pixels (``MixResult.mask``) and
0 where the result is background — except Copy-Paste with ``scale_range``, whose rescaled
partner has no type map (it raises a :class:`~insmix_fast.errors.ConfigError`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .. import baselines as B
from ..errors import ConfigError

__all__ = ["ARMS", "make_policy", "is_known_arm"]

_INSMIX_ABLATIONS = ("copy-paste", "ssd", "bgp", "bgp-only", "full")
#: InsMix ablations with the smooth-GAN blender on top (Table 3: "+ smooth-GAN", "all")
_GAN_ABLATIONS = ("ssd", "full")
_GAN_KEYS = ("blender", "strength", "blend_device")

#: every arm name the harness knows
ARMS: tuple[str, ...] = (("none",) + tuple(B.POLICIES) + tuple(f"insmix-{a}" for a in _INSMIX_ABLATIONS)
                         + tuple(f"insmix-{a}-gan" for a in _GAN_ABLATIONS))


def is_known_arm(name: str) -> bool:
    return name in ARMS


def _mixed_types(res, types: np.ndarray) -> np.ndarray:
    """Type maps of a batch mix: the partner's classes inside ``res.mask``, one's own outside,
    0 where the mixed labels are background (cut, or a dropped fragment)."""
    partner = types[np.asarray(res.partners, np.int64)]
    return np.where(res.labels > 0, np.where(res.mask, partner, types), 0).astype(types.dtype, copy=False)


def make_policy(name: str, train_samples: Sequence | None = None, params: dict | None = None,
                class_names: Sequence[str] | None = None) -> Callable | None:
    """Build the batch policy of arm ``name`` (``None`` for ``"none"``).

    InsMix arms need ``train_samples`` (sequence of ``(image, labels)``, or typed
    ``(image, labels, types)``: then a typed bank with ``class_names``) to build their
    instance bank.
    """
    params = dict(params or {})
    if name == "none":
        if params:
            raise ConfigError(f"arm 'none' takes no parameters, got {sorted(params)}")
        return None
    if name in B.POLICIES:
        try:
            pol = B.POLICIES[name](**params)
        except TypeError as e:
            raise ConfigError(f"arm {name!r}: {e}") from e

        def run(images, labels, seed, indices, _pol=pol, types=None):
            if types is not None and getattr(_pol, "scale_range", None) is not None:
                raise ConfigError(f"arm {name!r} with scale_range rescales the partner, whose classes it cannot "
                                  "carry: leave scale_range out for typed data")
            r = _pol.batch(images, labels, seed=seed, indices=indices)
            if types is None:
                return r.image, r.labels
            return r.image, r.labels, _mixed_types(r, types)

        run.policy = pol
        run.thread_safe = True
        run.typed = True
        return run
    gan = name.startswith("insmix-") and name.endswith("-gan") and name[len("insmix-"):-len("-gan")] in _GAN_ABLATIONS
    if gan:
        gan_params = {k: params.pop(k) for k in _GAN_KEYS if k in params}
        if not gan_params.get("blender"):
            raise ConfigError(f"arm {name!r} needs a trained blender: add [arms.{name}] blender = \"PATH\" "
                              "(an exported .pt2/.pt or a 'gan train' checkpoint; see docs/gan.md)")
        inner = make_policy(name[: -len("-gan")], train_samples, params, class_names)
        from ..gan.blender import Blender

        blender = Blender.from_file(str(gan_params["blender"]), device=gan_params.get("blend_device", "cpu"),
                                    strength=float(gan_params.get("strength", 1.0)))

        def run_gan(images, labels, seed, indices, _inner=inner, _blender=blender, types=None):
            r = _inner.insmix(images, labels, seed, indices, types=types)
            out = _blender.blend(r.images, r.paste_masks, r.original_masks)
            return (out, r.labels) if types is None else (out, r.labels, r.types)

        run_gan.typed = True
        run_gan.config = inner.config
        run_gan.bank = inner.bank
        run_gan.blender = blender
        return run_gan
    if name.startswith("insmix-") and name[len("insmix-"):] in _INSMIX_ABLATIONS:
        from ..bank import InstanceBank
        from ..config import InsMixConfig
        from ..core import insmix_batch

        try:
            cfg = InsMixConfig.ablation(name[len("insmix-"):], **params)
        except TypeError as e:
            raise ConfigError(f"arm {name!r}: {e}") from e
        bank = None
        if cfg.foreground and cfg.template_source == "bank":
            if train_samples is None:
                raise ConfigError(f"arm {name!r} needs the training samples to build its instance bank")
            bank = InstanceBank.from_samples(train_samples, on_invalid="skip", progress=False,
                                             class_names=class_names)

        def full(images, labels, seed, indices, _cfg=cfg, _bank=bank, types=None):
            kw = {} if types is None else {"types": types}
            return insmix_batch(images, labels, _bank, _cfg, seed=seed, indices=np.asarray(indices, np.int64), **kw)

        def run(images, labels, seed, indices, types=None):
            r = full(images, labels, seed, indices, types=types)
            return (r.images, r.labels) if types is None else (r.images, r.labels, r.types)

        run.typed = True
        run.insmix = full  # the whole InsMixBatchResult (paste masks for the GAN arms)
        run.config = cfg
        run.bank = bank
        return run
    raise ConfigError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
