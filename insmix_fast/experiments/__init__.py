"""Segmentation experiment harness comparing augmentation policies.

* :mod:`.model` — ResUNet-34 (ResNet-34 encoder written here, U-Net decoder),
  3 classes (background / interior / boundary), plus a type head on typed data.
* :mod:`.train` — targets, post-processing to instance maps, the training loop
  (the paper's recipe scaled by :class:`SegmenterTrainConfig`), per-image evaluation.
* :mod:`.policies` — augmentation arms (``none``, the mix baselines, InsMix ablations).
* :mod:`.runner` — configs (``smoke``, ``kumar`` or a TOML file), arms × seeds,
  resumable, results CSV / Markdown / PNG.
* :mod:`.cli` — ``insmix-fast experiment`` (``register(subparsers)``, ``main(argv)``).

Names are imported lazily so that importing this package (e.g. for the CLI)
does not import torch.
"""

from __future__ import annotations

import importlib

__all__ = [
    "ResUNet34",
    "SegmenterTrainConfig",
    "train_model",
    "evaluate_model",
    "predict",
    "predict_typed",
    "evaluate_typed",
    "postprocess",
    "make_targets",
    "make_policy",
    "ARMS",
    "ExperimentConfig",
    "DataConfig",
    "load_config",
    "load_data",
    "run_experiment",
    "write_reports",
]

_WHERE = {
    "ResUNet34": ".model",
    "SegmenterTrainConfig": ".train",
    "train_model": ".train",
    "evaluate_model": ".train",
    "predict": ".train",
    "predict_typed": ".train",
    "evaluate_typed": ".train",
    "postprocess": ".train",
    "make_targets": ".train",
    "make_policy": ".policies",
    "ARMS": ".policies",
    "ExperimentConfig": ".runner",
    "DataConfig": ".runner",
    "load_config": ".runner",
    "load_data": ".runner",
    "run_experiment": ".runner",
    "write_reports": ".runner",
}


def __getattr__(name):
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
