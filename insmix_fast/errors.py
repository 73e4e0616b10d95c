"""Exception types raised by insmix_fast.

Every check on user input raises one of these (all are ``ValueError`` or
``TypeError`` subclasses, so ``except ValueError`` keeps working) with a
message that names the offending argument, file or instance id.
"""

from __future__ import annotations


class InsMixError(Exception):
    """Base class of all insmix_fast errors."""


class InputError(InsMixError, ValueError):
    """An array argument has the wrong shape, dtype, range or content."""


class InputTypeError(InsMixError, TypeError):
    """An argument has the wrong Python type (e.g. a list where an array is needed)."""


class LabelMapError(InputError):
    """An instance label map is invalid (negative ids, holes, split instances, ...)."""


class ConfigError(InsMixError, ValueError):
    """A configuration value is out of range or inconsistent."""


class BankError(InsMixError, ValueError):
    """The instance bank is empty, corrupt or incompatible with the request."""


class ReaderError(InsMixError, ValueError):
    """A data file cannot be read or parsed (names the file)."""


class LoaderTimeoutError(InsMixError, TimeoutError):
    """A training loader waited longer than its ``timeout`` for a batch (names the batch's samples)."""
