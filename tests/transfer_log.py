"""Record host↔device copies made through numba.cuda — shared by the real-GPU and the simulator tests.

``with transfer_log(cuda, ArrayClass) as log:`` patches ``cuda.to_device`` and the
array class's ``copy_to_host`` / ``copy_to_device`` (``DeviceNDArray`` on a GPU,
the simulator's ``FakeCUDAArray`` under ``NUMBA_ENABLE_CUDASIM=1``) and appends
``("h2d" | "d2h", nbytes)`` for every copy; the originals are restored on exit.
"""

import contextlib

import numpy as np


def _nbytes(a) -> int:
    n = getattr(a, "nbytes", None)  # device arrays: never np.asarray them (that would copy)
    return int(n) if n is not None else int(np.asarray(a).nbytes)


@contextlib.contextmanager
def transfer_log(cuda, array_cls):
    log: list[tuple[str, int]] = []
    orig = (cuda.to_device, array_cls.copy_to_host, array_cls.copy_to_device)

    def to_device(a, *args, **kw):
        log.append(("h2d", _nbytes(a)))
        return orig[0](a, *args, **kw)

    def copy_to_host(self, *args, **kw):
        log.append(("d2h", int(self.nbytes)))
        return orig[1](self, *args, **kw)

    def copy_to_device(self, a, *args, **kw):
        log.append(("h2d", _nbytes(a)))
        return orig[2](self, a, *args, **kw)

    cuda.to_device, array_cls.copy_to_host, array_cls.copy_to_device = to_device, copy_to_host, copy_to_device
    try:
        yield log
    finally:
        cuda.to_device, array_cls.copy_to_host, array_cls.copy_to_device = orig
