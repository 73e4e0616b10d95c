"""insmix_fast: online InsMix augmentation for nuclei instance segmentation.

Quick start (a doctest: the test suite runs it):

>>> from insmix_fast import InstanceBank, InsMixConfig, insmix
>>> from insmix_fast.data import SyntheticNuclei
>>> data = SyntheticNuclei(seed=0, size=128, length=8)
>>> bank = InstanceBank.from_samples(data, progress=False)
>>> result = insmix(*data[0], bank, InsMixConfig(), seed=0)
>>> result.image.shape, result.labels.dtype
((128, 128, 3), dtype('int32'))
"""

from .bank import InstanceBank
from .config import OFFICIAL, InsMixConfig
from .core import admissible_templates, apply_plan, insmix, insmix_batch, plan_insmix
from .errors import (BankError, ConfigError, InputError, InputTypeError, InsMixError, LabelMapError,
                     LoaderTimeoutError, ReaderError)
from ._version import __version__
from .results import PASTE_DTYPE, InsMixBatchResult, InsMixPlan, InsMixResult


def __getattr__(name):  # lazy: the loader imports torch (and DALI when installed)
    if name == "InsMixLoader":
        from .loader.loader import InsMixLoader

        return InsMixLoader
    raise AttributeError(f"module 'insmix_fast' has no attribute {name!r}")


__all__ = [
    "InsMixLoader", "InstanceBank", "InsMixConfig", "OFFICIAL", "insmix", "insmix_batch", "plan_insmix", "apply_plan",
    "admissible_templates",
    "InsMixResult", "InsMixBatchResult", "InsMixPlan", "PASTE_DTYPE",
    "InsMixError", "InputError", "InputTypeError", "LabelMapError", "ConfigError", "BankError", "ReaderError",
    "LoaderTimeoutError",
]
