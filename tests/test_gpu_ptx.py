"""Every GPU kernel compiles for a real device (PTX for sm_90 through NVVM), no GPU needed.

The CUDA simulator runs kernels as Python, so it cannot tell whether numba's CUDA
target accepts them (typing, unsupported NumPy calls, …). This test compiles each
kernel with the argument types of real calls (a 2-tile InsMix per configuration, the
scoring entry points) and checks that no float FMA contraction appears in the PTX
(it could round differently from the CPU). It needs ``numba-cuda`` and NVVM
(``pip install -e ".[cuda12]"`` brings both); it is skipped with the reason otherwise.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest

SKIP_RC = 77


def _worker() -> None:
    try:
        import importlib.util

        if importlib.util.find_spec("numba_cuda") is None:
            raise ImportError("numba-cuda is not installed (pip install -e '.[cuda12]')")
        from numba import cuda
        from numba.cuda.cudadrv.nvvm import NVVM

        NVVM()
    except Exception as e:  # no numba-cuda / no NVVM here
        print(f"cannot compile for CUDA here: {' '.join(str(e).split())[:200]}")
        sys.exit(SKIP_RC)
    import numba
    import numba.cuda.dispatcher as disp

    class _Dev:  # compile device functions for sm_90 without a driver
        compute_capability = (9, 0)
        id = 0

    disp.get_current_device = lambda: _Dev()
    import insmix_fast.gpu.runtime as runtime

    runtime._STATE = (True, "PTX compile check")
    cuda.device_array = lambda shape, dtype=np.float64, **k: np.zeros(shape, dtype)
    cuda.to_device = lambda a, **k: np.array(a)
    import insmix_fast.gpu.bank as gbank
    import insmix_fast.gpu.batch as gbatch
    from insmix_fast.gpu import scoring
    from insmix_fast.gpu.launch import Launcher
    from insmix_fast.kernels import cuda_instances as ki

    class _NoDevice:
        def __init__(self, i):
            pass

        def __enter__(self):
            return self

        def __exit__(self, *e):
            return False

    gbank.on_device = gbatch.on_device = _NoDevice
    Launcher.d2h = lambda self, a: np.array(a)
    gbatch.read_bad_tile = lambda bad, launcher: None  # no kernel runs here: the type check has no verdict
    done = {}

    def compile_launch(kernel, config, *args):
        sig = tuple(numba.typeof(a) for a in args)
        key = (kernel.py_func.__name__, sig)
        if key in done:
            return
        ptx, _ = cuda.compile_ptx(kernel.py_func, sig, cc=(9, 0))
        fma = sorted(set(re.findall(r"fma\.[a-z]+\.f(?:32|64)", ptx)))
        assert not fma, f"{kernel.py_func.__name__}: FMA contraction in PTX {fma}"
        done[key] = len(ptx)
        print(f"ok {kernel.py_func.__name__} {len(ptx)} chars", flush=True)

    Launcher.launch = lambda self, kernel, config, *args: compile_launch(kernel, config, *args)
    from insmix_fast import InsMixConfig, InstanceBank, insmix_batch
    from insmix_fast.data import SyntheticNuclei

    bank = InstanceBank.from_samples(SyntheticNuclei(seed=7, size=96, length=4), progress=False)
    images, labels = SyntheticNuclei(seed=5, size=64, length=2).as_arrays()
    for cfg in (InsMixConfig(), InsMixConfig(ssd=False), InsMixConfig(offset_mode="diagonal"),
                InsMixConfig(foreground=False)):
        insmix_batch(images, labels, bank if cfg.foreground else None, cfg, seed=1, device="cuda")
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from typed_data import TypedTiles

    typed_bank = InstanceBank.from_samples(TypedTiles(seed=7, size=96, n=4), progress=False)
    _im, t_labels, types = TypedTiles(seed=5, size=64, n=2).arrays()
    ignore = np.zeros(t_labels.shape, bool)
    for cfg in (InsMixConfig(template_class="same"), InsMixConfig(template_class="balanced", ssd=False)):
        insmix_batch(images, t_labels, typed_bank, cfg, seed=1, device="cuda", types=types, ignore=ignore)
    scoring.choose_templates_cuda(t_labels, typed_bank, InsMixConfig(template_class="same"), types=types)
    scoring.admissible_counts_cuda(labels, bank)
    scoring.choose_templates_cuda(labels, bank)
    compile_launch(ki.k_max1, None, np.zeros(3, np.int32), np.zeros(1, np.int32))
    compile_launch(ki.k_pack2, None, np.zeros(1, np.int32), np.zeros(1, np.int32), np.zeros(2, np.int32))
    names = {k[0] for k in done}
    print(f"compiled {len(done)} kernel signatures: {sorted(names)}")
    assert len(names) >= 21, names


@pytest.mark.slow
def test_every_kernel_compiles_to_ptx():
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    p = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True, text=True,
                       timeout=900, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if p.returncode == SKIP_RC:
        pytest.skip(p.stdout.strip().splitlines()[-1])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-6000:]
    assert "compiled" in p.stdout


if __name__ == "__main__":
    _worker()
