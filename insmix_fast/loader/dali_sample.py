"""The CPU DALI graph's one operator: a sample's augmentation, InsMix and normalisation in one
compiled call.

Why one operator: DALI runs CPU operators one at a time ("CPU operators cannot run in parallel
with each other") and a ``python_function`` holds the GIL, so a graph of an augmentation
operator followed by a Python InsMix stage kept only about 1.5 of 2 cores busy (the stage's
Python part waited for the main thread's GIL; its 16 tiles ran on Numba's pool with an uneven
tail). Here everything a sample needs runs in one DALI ``numba_function``: a C callback that
DALI calls once per sample on its own thread pool, without the GIL, so samples spread over
DALI's threads while the main thread reads the next batches. The arithmetic is the Numba
kernels' (:func:`~insmix_fast.augment.augment_sample`, ``insmix_tile``, the loader's
normalisation): the batches equal the PyTorch backend's bit for bit.

Per sample, DALI passes six inputs — image (c×c×3 uint8), labels (c×c int32), the augmentation's
parameter row and blur taps (int64; stand-ins without augmentation), the *row* (int64, laid out by
the ``R_*`` constants: InsMix key and coin, the InsMix configuration's scalars, the
normalisation, and for a typed source the crop's class of each id) and the *bank descriptor*
(int64: address and shape of each array of the bank's table and class table, :func:`bank_descriptor`;
the arrays stay alive with the loader's feed) — and takes back the normalised image (3×c×c
float32), the labels (int64), for a typed source the type map (int64), and a *status* row
(``fill_class_lut``'s verdict layout: code 0 when fine, else the class problem, which the
loader raises as the functional call would).

Who uses it: ``InsMixLoader(backend="dali")`` on the CPU with ``dali_ops="kernels"`` (the CPU
default), unless a smooth-GAN blender or ``template_source="self"`` needs the Python stages
(:mod:`.pipeline`).
"""

from __future__ import annotations

import threading

import numpy as np
from numba import carray, njit
from numba import types as nbtypes
from numba.core import cgutils
from numba.extending import intrinsic

from ..augment import augment_sample
from ..classes import TYPES_OUTSIDE
from ..kernels.classes import TEMPLATE_ANY, ClassTable
from ..kernels.instances import DENSE_ID_LIMIT
from ..kernels.pipeline import insmix_tile
from ..kernels.records import N_REC_I, N_REC_F
from ..kernels.tables import Params, Table
from .stages import crop_class, normalise_into

__all__ = ["sample_operator", "bank_descriptor", "sample_rows", "sample_kernel", "R_HEADER", "STATUS_WIDTH",
           "STATUS_ID_LIMIT", "DESC_LENGTH"]

# ---------------------------------------------------------------------- the row's layout (int64)
R_SEED, R_INDEX, R_COIN, R_AUGMENT, R_MAXID, R_TYPED, R_N_CLASSES, R_SOURCE = range(8)
# (R_INDEX: the sample's position, InsMix's key; R_N_CLASSES: the largest class a type may be; R_SOURCE: the
# source index, for messages)
R_FLOATS = 8       # 7 float64 (bit patterns): eps, rho, delta, gamma, p_paste, max_occlusion, alpha
R_INTS = 15        # 9: n_tries, patch, max_draws, max_crop, template_class, foreground, background, ssd, diagonal
R_NORM = 24        # 6 float64 (bit patterns): 255·mean per channel, then 1 / (255·std)
R_HEADER = 30      # a typed source's class of each id of the crop follows (id 0 … maxid)
STATUS_WIDTH = 7   # code, row, column, id, class, other (``fill_class_lut``'s verdict), source index
#: Status code of a tile whose ids exceed the dense id tables (the reader renumbers crops so
#: that this cannot happen; reported rather than computed wrongly).
STATUS_ID_LIMIT = 100
_INITIAL_RECORDS = 256
_N_TABLE = len(Table._fields)
_N_CLASS_TABLE = len(ClassTable._fields)
#: Length of a bank descriptor (address, rows, columns of each array).
DESC_LENGTH = 3 * (_N_TABLE + _N_CLASS_TABLE)


@intrinsic
def _as_pointer(typingctx, address):
    """An int64 address as a ``void*`` (what ``numba.carray`` takes)."""
    sig = nbtypes.voidptr(address)

    def codegen(context, builder, signature, args):
        return builder.inttoptr(args[0], cgutils.voidptr_t)

    return sig, codegen


@njit(cache=True, nogil=True, inline="always")
def _vector(desc, k, dtype):
    return carray(_as_pointer(desc[3 * k]), (desc[3 * k + 1],), dtype)


@njit(cache=True, nogil=True, inline="always")
def _matrix(desc, k, dtype):
    return carray(_as_pointer(desc[3 * k]), (desc[3 * k + 1], desc[3 * k + 2]), dtype)


@njit(cache=True, nogil=True)
def _bank_tables(desc):
    """The bank's ``Table`` and ``ClassTable`` as views of the arrays ``desc`` points to."""
    bt = Table(_vector(desc, 0, np.int64), _matrix(desc, 1, np.int32), _matrix(desc, 2, np.int32),
               _vector(desc, 3, np.int64), _vector(desc, 4, np.uint8), _vector(desc, 5, np.uint8),
               _matrix(desc, 6, np.uint64), _vector(desc, 7, np.bool_))
    ct = ClassTable(_vector(desc, 8, np.int32), _vector(desc, 9, np.int64), _vector(desc, 10, np.int64),
                    _vector(desc, 11, np.int64), _vector(desc, 12, np.float64))
    return bt, ct


_DTYPES = [np.int64, np.int32, np.int32, np.int64, np.uint8, np.uint8, np.uint64, np.bool_,
           np.int32, np.int64, np.int64, np.int64, np.float64]


def bank_descriptor(table, class_table) -> tuple[np.ndarray, list]:
    """``(desc, keep)``: the int64 descriptor of a bank's ``Table`` + ``ClassTable`` (address,
    rows, columns of each array) and the arrays it points to, which the caller must keep alive
    while any operator may read them. Checks each array's dtype and layout against what
    :func:`_bank_tables` reads."""
    arrays = list(table) + list(class_table)
    if len(arrays) != _N_TABLE + _N_CLASS_TABLE:
        raise AssertionError("bank table layout changed: update insmix_fast.loader.dali_sample")
    keep = [np.zeros(8, np.uint8)]  # what an empty array points to (never read: it has no rows)
    desc = np.zeros(DESC_LENGTH, np.int64)
    for k, (a, dt) in enumerate(zip(arrays, _DTYPES)):
        a = np.ascontiguousarray(a)
        if a.dtype != dt or a.ndim not in (1, 2):
            raise AssertionError(f"bank array {k}: {a.dtype} {a.shape}, expected {np.dtype(dt)}")
        keep.append(a)
        desc[3 * k] = a.ctypes.data if a.size else keep[0].ctypes.data
        desc[3 * k + 1] = a.shape[0]
        desc[3 * k + 2] = a.shape[1] if a.ndim == 2 else 0
    return desc, keep


def sample_rows(n: int, *, seed: int, positions, sources, coin, augment: bool, params, n_classes: int, mean, inv,
                classes=None, maxid=None) -> np.ndarray:
    """The N rows of one batch (layout ``R_*``). ``params``: the kernels' ``Params`` of the
    InsMix configuration (or None without InsMix); ``classes`` (N×L int32) and ``maxid`` (N):
    a typed source's class of each crop id (:meth:`SampleProgram.prepare`)."""
    width = R_HEADER + (classes.shape[1] if classes is not None else 0)
    rows = np.zeros((n, width), np.int64)
    rows[:, R_SEED] = np.array([seed], np.uint64).view(np.int64)[0]
    rows[:, R_INDEX] = positions
    rows[:, R_SOURCE] = sources
    rows[:, R_COIN] = coin
    rows[:, R_AUGMENT] = bool(augment)
    rows[:, R_N_CLASSES] = n_classes
    if params is not None:
        rows[:, R_FLOATS:R_FLOATS + 7] = np.array(params[:7], np.float64).view(np.int64)
        rows[:, R_INTS:R_INTS + 9] = np.array([int(v) for v in params[7:]], np.int64)
    rows[:, R_NORM:R_NORM + 6] = np.array(list(mean) + list(inv), np.float64).view(np.int64)
    if classes is not None:
        rows[:, R_TYPED] = 1
        rows[:, R_MAXID] = maxid
        rows[:, R_HEADER:] = classes
    return rows


@njit(cache=True, nogil=True)
def _params(row):
    f = row[R_FLOATS:R_FLOATS + 7].copy().view(np.float64)
    i = row[R_INTS:R_INTS + 9]
    return Params(f[0], f[1], f[2], f[3], f[4], f[5], f[6], i[0], i[1], i[2], i[3], i[4],
                  i[5] != 0, i[6] != 0, i[7] != 0, i[8] != 0)


@njit(cache=True, nogil=True)
def sample_kernel(out_image, out_labels, out_types, status, image, labels, prm, taps, row, desc):
    """One sample: augmentation (if the row says so) → type map (typed rows) → InsMix (if the
    coin says so) → normalised image, int64 labels and types. ``out_types`` None: untyped."""
    h, w = labels.shape
    lab = np.empty((h, w), np.int32)
    img = np.empty((h, w, 3), np.uint8)
    if row[R_AUGMENT] != 0:
        augment_sample(image, labels, prm, taps, img, lab, True, True)
    else:
        img[:] = image
        lab[:] = labels
    for j in range(status.shape[0]):
        status[j] = 0
    status[STATUS_WIDTH - 1] = row[R_SOURCE]
    typed = row[R_TYPED] != 0
    coin = row[R_COIN] != 0
    types = np.zeros((h, w) if typed else (1, 1), np.int32)
    top = 0
    classes = row[R_HEADER:]
    for y in range(h):
        for x in range(w):
            v = lab[y, x]
            top = max(top, v)
            if typed and v > 0:
                c = crop_class(classes, v, row[R_MAXID])
                types[y, x] = c
                if coin and c > row[R_N_CLASSES] and status[0] == 0:  # (checked where InsMix runs)
                    status[0], status[1], status[2], status[3], status[4] = TYPES_OUTSIDE, y, x, v, c
    if coin and status[0] == 0:
        if top > DENSE_ID_LIMIT:
            status[0], status[3] = STATUS_ID_LIMIT, top
        else:
            _insmix(img, lab, types, typed, top, row, desc)
    normalise_into(img, row[R_NORM:R_NORM + 6].copy().view(np.float64).astype(np.float32), out_image)
    ol = out_labels.reshape(h * w)
    sl = lab.reshape(h * w)
    for i in range(h * w):
        ol[i] = sl[i]
    if out_types is not None:
        ot = out_types.reshape(h * w)
        st = types.reshape(h * w)
        for i in range(h * w):
            ot[i] = st[i]


@njit(cache=True, nogil=True)
def _insmix(img, lab, types, typed, top, row, desc):
    """``insmix_tile`` in place on ``img`` / ``lab`` / ``types`` (what ``insmix_batch_into``
    runs per tile), with record tables grown until the plan fits; no paste or shuffle masks
    (the loader keeps none: compiled out of the kernel)."""
    h, w = lab.shape
    bt, ct = _bank_tables(desc)
    P = _params(row)
    out_types = np.empty_like(types)
    moves = np.zeros((max((h // P.patch) * (w // P.patch), 1), 2), np.int64)
    seed = np.uint64(row[R_SEED])
    # room for one paste per instance never runs out; a crowded tile starts smaller and, if its plan does
    # not fit, plans again from its labels (a plan that runs out has already written some pastes into them)
    cap = top + 1 if top < _INITIAL_RECORDS else _INITIAL_RECORDS
    backup = lab.copy() if cap <= top else lab[:0, :0]
    while True:
        rec_i = np.zeros((cap, N_REC_I), np.int64)
        rec_f = np.zeros((cap, N_REC_F), np.float64)
        if P.template_class != TEMPLATE_ANY:  # a class choice: the class of each id present (class_luts;
            id_class = np.zeros(top + 1, np.int32)  # zeros for an untyped tile, as insmix_batch passes)
            if typed:
                for y in range(h):
                    for x in range(w):
                        if lab[y, x] > 0:
                            id_class[lab[y, x]] = types[y, x]
            n, _ = insmix_tile(None, None, bt, ct, P, seed, row[R_INDEX], rec_i, rec_f, moves, img, lab, None,
                               None, top, typed, types, out_types, id_class, None, False, None)
        else:
            n, _ = insmix_tile(None, None, bt, ct, P, seed, row[R_INDEX], rec_i, rec_f, moves, img, lab, None,
                               None, top, typed, types, out_types, None, None, False, None)
        if n >= 0:
            break
        lab[:] = backup  # (the image is untouched until the plan fits)
        cap = top + 1
    if typed:
        types[:] = out_types


def _run_untyped(out_image, out_labels, out_status, image, labels, prm, taps, row, desc):
    sample_kernel(out_image, out_labels, None, out_status, image, labels, prm, taps, row, desc)


def _run_typed(out_image, out_labels, out_types, out_status, image, labels, prm, taps, row, desc):
    sample_kernel(out_image, out_labels, out_types, out_status, image, labels, prm, taps, row, desc)


def _setup(outs, ins):
    """Output shapes: image 3×H×W, labels (and types) H×W, status STATUS_WIDTH."""
    n_out = len(outs)
    for i in range(len(outs[0])):
        outs[0][i][0] = 3
        outs[0][i][1] = ins[1][i][0]
        outs[0][i][2] = ins[1][i][1]
        for k in range(1, n_out - 1):
            outs[k][i][0] = ins[1][i][0]
            outs[k][i][1] = ins[1][i][1]
        outs[n_out - 1][i][0] = STATUS_WIDTH


_OPERATORS: dict = {}
_OPERATORS_LOCK = threading.Lock()


def sample_operator(typed: bool):
    """DALI's ``numba_function`` operator running :func:`sample_kernel` per sample, made once per
    process and kind (compiling its C callback takes seconds even with Numba's cache warm; the
    operator serves every pipeline). Outputs: image, labels[, types], status."""
    with _OPERATORS_LOCK:
        return _make_operator(typed)


def _make_operator(typed: bool):
    op = _OPERATORS.get(typed)
    if op is None:
        from nvidia.dali import types
        from nvidia.dali.plugin.numba import NumbaFunction

        maps = [types.INT64, types.INT64] if typed else [types.INT64]
        op = NumbaFunction(run_fn=_run_typed if typed else _run_untyped, setup_fn=_setup,
                           out_types=[types.FLOAT] + maps + [types.INT64],
                           in_types=[types.UINT8, types.INT32, types.INT64, types.INT64, types.INT64, types.INT64],
                           outs_ndim=[3] + [2] * len(maps) + [1], ins_ndim=[3, 2, 1, 1, 1, 1])
        _OPERATORS[typed] = op
    return op
