"""Apply step of the foreground: paste planned templates into image and label map
(records laid out as in :mod:`.records`)."""

from __future__ import annotations

from .jit import njit

from .records import R_CLASS, R_LABEL, R_TEMPLATE, R_X, R_Y


@njit(cache=True, nogil=True)
def copy_into(dst, src):
    """``dst[...] = src`` for C-contiguous arrays of one shape (a flat loop: Numba's
    multi-dimensional slice assignment is an order of magnitude slower)."""
    d = dst.reshape(-1)
    s = src.reshape(-1)
    for i in range(s.shape[0]):
        d[i] = s[i]


@njit(cache=True, nogil=True)
def fill_false(mask):
    m = mask.reshape(-1)
    for i in range(m.shape[0]):
        m[i] = False


@njit(cache=True, nogil=True)
def apply_pastes(image, labels, paste_mask, rec_i, n, bt, typed, types, lut=None, channel_first=None):
    """Template pixels replace image pixels inside Mt; the label map gets the new id there
    (and, when ``typed``, the type map the template's class, in a loop of its own so untyped
    calls run the loop they always ran).

    ``image`` is H×W×3 with any strides (a channel-first array seen through
    ``.transpose(1, 2, 0)`` works), or, when ``channel_first`` is not None, a C-contiguous
    3×H×W array indexed ``[channel, y, x]`` (the same pixels, written without the generic
    stride arithmetic of a transposed view). ``lut`` (256 values of the image's dtype) maps
    template values to image values for a float image; omitted, they are copied as they are.
    Both branches are removed at compile time when their argument is None, so the uint8
    channel-last specialisation is the plain copy it always was; so is the write of
    ``paste_mask`` when it is None (a caller that does not keep the mask)."""
    for j in range(n):
        t = rec_i[j, R_TEMPLATE]
        y0 = rec_i[j, R_Y]
        x0 = rec_i[j, R_X]
        lab = rec_i[j, R_LABEL]
        h = bt.hw[t, 0]
        w = bt.hw[t, 1]
        off = bt.offset[t]
        for y in range(h):
            for x in range(w):
                p = off + y * w + x
                if bt.masks[p]:
                    yy = y0 + y
                    xx = x0 + x
                    if channel_first is None:
                        if lut is None:
                            image[yy, xx, 0] = bt.pixels[3 * p]
                            image[yy, xx, 1] = bt.pixels[3 * p + 1]
                            image[yy, xx, 2] = bt.pixels[3 * p + 2]
                        else:
                            image[yy, xx, 0] = lut[bt.pixels[3 * p]]
                            image[yy, xx, 1] = lut[bt.pixels[3 * p + 1]]
                            image[yy, xx, 2] = lut[bt.pixels[3 * p + 2]]
                    else:
                        if lut is None:
                            image[0, yy, xx] = bt.pixels[3 * p]
                            image[1, yy, xx] = bt.pixels[3 * p + 1]
                            image[2, yy, xx] = bt.pixels[3 * p + 2]
                        else:
                            image[0, yy, xx] = lut[bt.pixels[3 * p]]
                            image[1, yy, xx] = lut[bt.pixels[3 * p + 1]]
                            image[2, yy, xx] = lut[bt.pixels[3 * p + 2]]
                    labels[yy, xx] = lab
                    if paste_mask is not None:
                        paste_mask[yy, xx] = True
        if typed:
            cls = rec_i[j, R_CLASS]
            for y in range(h):
                for x in range(w):
                    if bt.masks[off + y * w + x]:
                        types[y0 + y, x0 + x] = cls
