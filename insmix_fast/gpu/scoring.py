"""Bank-wide SSD scoring alone on the GPU (tests, statistics, the bank-size benchmark):
the analysis and choice stages of :mod:`.batch` without the placement."""

from __future__ import annotations

import numpy as np

from ..classes import as_types_map, check_class_mode
from ..config import InsMixConfig
from ..errors import InputError, InputTypeError
from ..kernels.instances import DENSE_ID_LIMIT
from ..validation import check_indices, check_labels
from .arrays import as_device, kind_of
from .batch import analyse, analyse_types, bank_args, choose, id_range, read_id_range, resolve_bank
from .launch import Launcher
from .runtime import require_cuda

__all__ = ["admissible_counts_cuda", "choose_templates_cuda"]


def _labels_on_device(labels, launcher: Launcher):
    """(numba view, batch max id, host input?) of a host or device N×H×W label batch."""
    if kind_of(labels) == "numpy":
        labels = np.asarray(labels)
        if labels.ndim != 3:
            raise InputError(f"labels must be N×H×W, got shape {labels.shape}")
        flat = check_labels(labels.reshape(-1, labels.shape[2]), name="labels").reshape(labels.shape)
        return launcher.h2d(flat), int(flat.max()), True
    _x, view, _k = as_device(labels, kind_of(labels), "labels", np.int32)
    if view.ndim != 3:
        raise InputError(f"labels must be N×H×W, got shape {view.shape}")
    max_id, min_id = read_id_range(*id_range(view, launcher), launcher)
    if min_id < 0:
        raise InputError("labels hold negative ids")
    return view, max_id, False


def _setup(labels, bank, config, seed: int, indices, select_mode: int):
    require_cuda()
    config = InsMixConfig() if config is None else config
    if not isinstance(config, InsMixConfig):
        raise InputTypeError(f"config must be an InsMixConfig, got {type(config).__name__}")
    launcher = Launcher()
    lab_d, max_id, host = _labels_on_device(labels, launcher)
    if max_id > DENSE_ID_LIMIT:
        raise InputError(f"labels hold ids up to {max_id}; relabel to ≤ {DENSE_ID_LIMIT} first")
    dbank, _host_bank = resolve_bank(bank, True, 0)
    indices = check_indices(indices, lab_d.shape[0])
    samples_d = launcher.h2d(indices)
    nslots = max_id + 1
    o = analyse(lab_d, nslots, samples_d, seed, config.p_paste, select_mode, config.patch, 0, launcher)
    return config, lab_d, dbank, o, samples_d, nslots, host, launcher


def admissible_counts_cuda(labels, bank, config: InsMixConfig | None = None):
    """Exhaustive bank-wide scoring on the device: for every original of an N×H×W label
    batch, the number of bank templates with ``f_scale ≤ eps`` and ``f_shape ≤ rho``.

    Returns an (N, max_id + 1) int64 array indexed by (tile, rank): rank ``c`` is the
    c-th smallest id of the tile, -1 for unused ranks (a device array for device input).
    """
    from ..kernels import cuda_ssd as ks

    config, lab_d, dbank, o, _samples, nslots, host, launcher = _setup(labels, bank, config, 0, None, 2)
    counts = launcher.array((lab_d.shape[0], nslots), np.int64)
    launcher.launch(ks.k_counts, launcher.per_block(lab_d.shape[0] * nslots), lab_d, o.k, o.ids_ext, o.area,
                    o.anchor, o.desc, o.fits, *dbank.kernel_args(), np.float64(config.eps), np.float64(config.rho),
                    counts)
    return launcher.d2h(counts) if host else counts


def choose_templates_cuda(labels, bank, config: InsMixConfig | None = None, *, seed: int = 0, indices=None,
                          select_all: bool = True, types=None):
    """The seeded template choice of every original (``kernels.ssd.choose_template`` on the
    device): (N, max_id + 1) int64 indexed by (tile, rank), -1 where none is admissible
    or the original is not selected (``select_all=False`` applies the ``p_paste`` draw).
    ``config.template_class`` as in InsMix (``"same"`` reads ``types``, N×H×W, on the
    labels' side)."""
    config, lab_d, dbank, o, samples_d, nslots, host, launcher = _setup(labels, bank, config, seed, indices,
                                                                        2 if select_all else 1)
    check_class_mode(config, dbank.host.typed, types is not None)
    id_class = None
    if types is not None:
        if host:
            types_d = launcher.h2d(as_types_map(types, tuple(lab_d.shape)))
        else:
            _x, types_d, _k = as_device(types, kind_of(types), "types", np.int32)
        id_class = analyse_types(lab_d, types_d, nslots, dbank.host, launcher)
    choice = choose(lab_d, o, bank_args(dbank, launcher)[0], config, seed, samples_d, nslots, launcher, dbank,
                    id_class)
    return launcher.d2h(choice) if host else choice
