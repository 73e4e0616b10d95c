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
  training images. The smooth-GAN rows of Table 3 are not arms here (the
  blender is applied offline; see docs/experiments.md).

``params`` (the ``[arms.<name>]`` table of a config) go to the policy's
constructor (baselines) or override InsMixConfig fields (InsMix arms).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .. import baselines as B
from ..errors import ConfigError

__all__ = ["ARMS", "make_policy", "is_known_arm"]

_INSMIX_ABLATIONS = ("copy-paste", "ssd", "bgp", "bgp-only", "full")

#: every arm name the harness knows
ARMS: tuple[str, ...] = ("none",) + tuple(B.POLICIES) + tuple(f"insmix-{a}" for a in _INSMIX_ABLATIONS)


def is_known_arm(name: str) -> bool:
    return name in ARMS


def make_policy(name: str, train_samples: Sequence | None = None, params: dict | None = None) -> Callable | None:
    """Build the batch policy of arm ``name`` (``None`` for ``"none"``).

    InsMix arms need ``train_samples`` (sequence of ``(image, labels)``) to build
    their instance bank.
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

        def run(images, labels, seed, indices, _pol=pol):
            r = _pol.batch(images, labels, seed=seed, indices=indices)
            return r.image, r.labels

        run.policy = pol
        run.thread_safe = True
        return run
    if name.startswith("insmix-") and name[len("insmix-"):] in _INSMIX_ABLATIONS:
        from ..config import InsMixConfig

        try:
            from .. import InstanceBank, insmix_batch
        except ImportError:  # the package's top level may not re-export them
            from ..bank import InstanceBank
            from ..core import insmix_batch
        try:
            cfg = InsMixConfig.ablation(name[len("insmix-"):], **params)
        except TypeError as e:
            raise ConfigError(f"arm {name!r}: {e}") from e
        bank = None
        if cfg.foreground and cfg.template_source == "bank":
            if train_samples is None:
                raise ConfigError(f"arm {name!r} needs the training samples to build its instance bank")
            bank = InstanceBank.from_samples(train_samples, on_invalid="skip", progress=False)

        def run(images, labels, seed, indices, _cfg=cfg, _bank=bank):
            r = insmix_batch(images, labels, _bank, _cfg, seed=seed, indices=np.asarray(indices, np.int64))
            return (r.images if hasattr(r, "images") else r.image), r.labels

        run.config = cfg
        run.bank = bank
        return run
    raise ConfigError(f"unknown arm {name!r}; choose from {', '.join(ARMS)}")
