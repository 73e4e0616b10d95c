"""InsMix as an albumentations (2.x) transform: ``InsMix(bank, config, p=...)`` in an ``A.Compose``.

Targets: ``image`` (H×W×3 RGB, uint8 or float in ``[0, max_value]``) and ``mask`` (the H×W
instance map, 0 = background; H×W×1 is accepted and kept). A nucleus type map travels
as an additional *mask* target named by ``types_key``::

    A.Compose([..., InsMix(bank, types_key="types")], additional_targets={"types": "mask"})

Randomness is albumentations': ``p`` is decided by the transform's ``py_random`` and the
InsMix seed is drawn from its ``random_generator`` in :meth:`InsMix.get_params`, so a
``Compose(..., seed=S)`` is reproducible. Given that seed, the whole result is
``insmix(image, mask, bank, config, seed=seed, index=0)`` — computed once per call in
:meth:`InsMix.get_params_dependent_on_data`, where image and mask are seen together.
Importing this module needs albumentations ≥ 2.0 (``pip install "insmix-fast[transforms]"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ConfigError, InputError, InputTypeError
from .common import (check_bank, check_config, check_max_value, check_probability, error_context,
                     insmix_hwc, missing_library, require_types)

try:
    import albumentations
    from albumentations.core.transforms_interface import DualTransform
    from albumentations.core.type_definitions import Targets
except ImportError as _e:  # pragma: no cover - exercised by a test that hides the library
    raise missing_library("albumentations", _e, ">=2.0") from _e

if int(albumentations.__version__.split(".")[0]) < 2:  # pragma: no cover - CI installs 2.x
    raise missing_library("albumentations", ImportError(f"found {albumentations.__version__}"), ">=2.0")

__all__ = ["InsMix"]

#: Targets InsMix cannot update consistently (boxes and per-instance masks go stale when
#: nuclei are pasted); passing them is refused rather than silently left unchanged.
_UNSUPPORTED = ("masks", "bboxes", "keypoints", "images", "volume", "volumes", "mask3d", "masks3d")
_UNSUPPORTED_SET = frozenset(_UNSUPPORTED)


class InsMix(DualTransform):
    """InsMix (copy-paste-smooth of nuclei from an instance bank, then a background-patch
    shuffle) on an ``image`` and its instance ``mask``.

    Args:
        bank: the :class:`~insmix_fast.bank.InstanceBank` templates come from (``None`` only
            when ``config.foreground`` is False or ``config.template_source == "self"``).
        config: :class:`~insmix_fast.config.InsMixConfig` (SPEC defaults when ``None``).
        types_key: name of an additional mask target holding the H×W nucleus type map
            (0 = background); register it with ``additional_targets={types_key: "mask"}``.
            Pasted nuclei carry their template's class. Needs a typed InsMix core.
        max_value: full intensity of a float image (1.0 for [0, 1], 255.0 for 0..255 floats);
            ignored for uint8.
        p: probability of applying the transform.

    Output: ``image`` in its input dtype (float: pixels InsMix did not touch are returned
    unchanged, moved background patches are copied exactly, pasted nuclei are
    ``template / 255 · max_value``); ``mask`` in its dtype when that has ≥ 32 bits, else int32
    (pasted nuclei get new ids above the input's maximum); the type map in its dtype.
    Put InsMix before or after geometric transforms; normalise after it.
    """

    _targets = (Targets.IMAGE, Targets.MASK)

    def __init__(self, bank, config=None, *, types_key: str | None = None, max_value: float = 1.0, p: float = 0.5):
        super().__init__(p=check_probability("p", p))
        self.config = check_config(config)
        self.bank = check_bank(bank, self.config)
        if types_key is not None:
            if not isinstance(types_key, str) or types_key in ("image", "mask") or types_key in _UNSUPPORTED:
                raise ConfigError(f"types_key must be the name of an additional mask target (a str other than "
                                  f"'image'/'mask'), got {types_key!r}")
            require_types(f"InsMix(types_key={types_key!r})")
        self.types_key = types_key
        self.max_value = check_max_value(max_value)

    # ------------------------------------------------------------------ albumentations hooks
    @property
    def targets(self) -> dict[str, Any]:
        return {"image": self.apply, "mask": self.apply_to_mask}

    def get_params(self) -> dict[str, Any]:
        """The InsMix seed, drawn from albumentations' per-transform generator."""
        return {"insmix_seed": int(self.random_generator.bit_generator.random_raw())}  # 64 random bits

    def update_transform_params(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """``params["shape"]`` as albumentations' own method sets it (InsMix has none of the
        interpolation / fill attributes it also looks for), after saying what is wrong with the
        data if anything is."""
        image = data.get("image")
        if image is None and data.get("images") is not None:
            raise InputError("InsMix transforms one sample (image=, mask=), not images=/masks= batches: call the "
                             "pipeline per sample, or use insmix_fast.transforms.batch.InsMixBatch on tensor batches")
        params["shape"] = _array(image, "image").shape
        return params

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        """Nothing: InsMix runs once per call in :meth:`apply_with_params`, which sees image,
        mask and type map together (the parameters — kept by ``get_applied_params`` and copied
        into ``ReplayCompose`` records — stay the seed alone, not the output images)."""
        return {}

    def apply(self, img: np.ndarray, insmix: dict[str, np.ndarray] | None = None, **params: Any) -> np.ndarray:
        return insmix["image"]

    def apply_to_mask(self, mask: np.ndarray, insmix: dict[str, np.ndarray] | None = None,
                      **params: Any) -> np.ndarray:
        return insmix["mask"]

    def apply_with_params(self, params: dict[str, Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
        """Run InsMix with the drawn (or, in replay mode, the saved) seed on this call's data
        and hand each target its part (image, instance map, type map: all mask-like targets
        share ``apply_to_mask``, so the dispatch is by key here)."""
        out = dict(kwargs)
        out.update(self._insmix(params["insmix_seed"], kwargs))
        return out

    # ------------------------------------------------------------------ the work
    def _check_targets(self, data: dict[str, Any]) -> None:
        for key in () if _UNSUPPORTED_SET.isdisjoint(data) else _UNSUPPORTED:  # (one set test for the usual data)
            value = data.get(key)
            if value is not None and len(value):
                raise InputError(f"InsMix cannot update {key!r}: pasting nuclei changes instances. Pass the instance "
                                 f"map as mask=... and derive {key} from it after InsMix")
        for key, kind in self._additional_targets.items():
            if key != self.types_key and data.get(key) is not None and kind in ("image", "mask"):
                raise InputError(f"InsMix cannot update the additional {kind} target {key!r}: it transforms one image, "
                                 f"its instance map (mask) and a type map (types_key) only")
        if self.types_key is not None:
            if data.get(self.types_key) is None:
                raise InputError(f"InsMix(types_key={self.types_key!r}) but the data has no {self.types_key!r}: call "
                                 f"the pipeline with {self.types_key}=<H×W type map>")
            if self._additional_targets.get(self.types_key) != "mask":
                raise InputError(f"the type map {self.types_key!r} is not a mask target of this pipeline, so geometric "
                                 f"transforms would not move it: A.Compose([...], additional_targets="
                                 f"{{{self.types_key!r}: 'mask'}})")

    def _insmix(self, seed: int, data: dict[str, Any]) -> dict[str, np.ndarray]:
        self._check_targets(data)
        image = _array(data.get("image"), "image")
        if image.ndim != 3 or image.shape[2] != 3:
            hint = " — it looks channel-first (3×H×W): albumentations takes H×W×3" if image.ndim == 3 and \
                image.shape[0] == 3 else ""
            raise InputError(f"InsMix: image must be H×W×3 RGB, got shape {image.shape}{hint}")
        mask = _plane(_array(data.get("mask"), "mask"), "mask", "instance map")
        typemap = None
        if self.types_key is not None:
            typemap = _plane(_array(data[self.types_key], self.types_key), self.types_key, "type map")
        with error_context("InsMix (albumentations)"):
            img, lab, typ = insmix_hwc(image, mask[0], self.bank, self.config, seed=seed, max_value=self.max_value,
                                       types=None if typemap is None else typemap[0],
                                       names=("image", "mask", repr(self.types_key)))
        out = {"image": img, "mask": lab.reshape(mask[1])}
        if typ is not None:
            out[self.types_key] = typ.reshape(typemap[1])
        return out


def _array(x, name: str) -> np.ndarray:
    if x is None:
        raise InputError(f"InsMix needs image=<H×W×3 RGB> and mask=<H×W instance map>; {name!r} is missing")
    if not isinstance(x, np.ndarray):
        raise InputTypeError(f"InsMix: {name} must be a numpy array, got {type(x).__name__}")
    return x


def _plane(x: np.ndarray, name: str, what: str) -> tuple[np.ndarray, tuple[int, ...]]:
    """An H×W (or H×W×1) map as ``(H×W view, original shape)`` (its dtype is checked by ``insmix_hwc``)."""
    if x.ndim == 3 and x.shape[2] == 1:
        return x[..., 0], x.shape
    if x.ndim != 2:
        raise InputError(f"InsMix: {name} must be an H×W {what} (or H×W×1), got shape {x.shape}")
    return x, x.shape
