"""The loader's CUDA kernels (``insmix_fast.loader.cuda_augment``) under the CUDA simulator:
bit-for-bit the CPU kernels of ``insmix_fast.augment``.

``NUMBA_ENABLE_CUDASIM=1`` must be set before numba.cuda is first imported, so the device
side runs in a subprocess (this file run as a script) that writes an ``.npz``; the test
compares it here with the CPU kernels. The simulator is slow: three 24×24 crops.
"""

import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SIZE = 24


def _case():
    from insmix_fast.augment import TraditionalAugment
    from insmix_fast.data import SyntheticNuclei

    ds = SyntheticNuclei(seed=3, size=40, length=3)
    images = np.stack([ds[i][0][:SIZE, :SIZE] for i in range(3)])
    labels = np.stack([ds[i][1][:SIZE, :SIZE] for i in range(3)]).astype(np.int16)
    aug = TraditionalAugment(scale=(0.5, 1.2), blur_p=0.7)
    params, taps, _ = aug.prepare(images, labels, 5, np.array([1, 2, 3]))
    return aug, images, labels, params, taps


def _device(out_path):  # runs in the subprocess, under the simulator
    from numba import cuda

    from insmix_fast.augment import P_MAXID
    from insmix_fast.loader import cuda_augment as ca

    aug, images, labels, params, taps = _case()
    n = len(images)
    width = int(params[:, P_MAXID].max()) * aug.id_factor((SIZE, SIZE)) + 1
    d = [cuda.to_device(a) for a in (images, labels, params, taps)]
    out_i = cuda.device_array(images.shape, np.uint8)
    out_l = cuda.device_array(labels.shape, np.int32)
    counts = cuda.to_device(np.zeros((n, width), np.int32))
    tmp = cuda.device_array(images.shape, np.int32)
    stream = ca.numba_stream(None)
    ca.launch_augment(*d, out_i, out_l, counts, tmp, blur=True, clean=True, stream=stream)
    m = 5
    ci = cuda.device_array((n, SIZE + 2 * m, SIZE + 2 * m, 3), np.uint8)
    cl = cuda.device_array((n, SIZE + 2 * m, SIZE + 2 * m), np.int32)
    ca.launch_canvas(d[0], d[1], d[2], m, ci, cl, stream=stream)
    warped = out_l.copy_to_host()
    # the area filter alone, on the unfiltered warp of the canvas path (DALI's labels)
    raw = cuda.device_array(labels.shape, np.int32)
    ca.launch_augment(d[0], d[1], d[2], d[3], cuda.device_array(images.shape, np.uint8), raw,
                      cuda.to_device(np.zeros((n, width), np.int32)), tmp, blur=False, clean=False, stream=stream)
    unfiltered = raw.copy_to_host()
    ca.launch_area_filter(raw, d[2], cuda.to_device(np.zeros((n, width), np.int32)), stream=stream)
    np.savez(out_path, images=out_i.copy_to_host(), labels=warped, canvas_i=ci.copy_to_host(),
             canvas_l=cl.copy_to_host(), unfiltered=unfiltered, filtered=raw.copy_to_host())


def test_cuda_kernels_match_the_cpu_kernels_bit_for_bit(tmp_path):
    from insmix_fast.augment import (P_BLUR_R, P_MAXID, P_MIN_AREA, P_R, area_filter, augment_batch_kernel,
                                     reflect_canvas)

    out = tmp_path / "sim.npz"
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1", PYTHONPATH=os.pathsep.join([os.path.dirname(HERE)] + sys.path))
    subprocess.run([sys.executable, __file__, str(out)], check=True, env=env, timeout=600)
    got = np.load(out)

    aug, images, labels, params, taps = _case()
    assert (params[:, P_BLUR_R] > 0).any() and (params[:, P_BLUR_R] == 0).any()  # some samples blur, some do not
    want_i = np.empty_like(images)
    want_l = np.empty(labels.shape, np.int32)
    augment_batch_kernel(images, labels, params, taps, want_i, want_l)
    np.testing.assert_array_equal(got["images"], want_i)
    np.testing.assert_array_equal(got["labels"], want_l)
    for k in range(len(images)):
        ci = np.empty(got["canvas_i"].shape[1:], np.uint8)
        cl = np.empty(got["canvas_l"].shape[1:], np.int32)
        reflect_canvas(images[k], labels[k], params[k, P_MAXID], params[k, P_R], 5, ci, cl)
        np.testing.assert_array_equal(got["canvas_i"][k], ci)
        np.testing.assert_array_equal(got["canvas_l"][k], cl)
        lab = got["unfiltered"][k].copy()
        area_filter(lab, params[k, P_MAXID], params[k, P_R], params[k, P_MIN_AREA])
        np.testing.assert_array_equal(got["filtered"][k], lab)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(HERE))
    _device(sys.argv[1])
