"""Streaming scanner: QuPath GeoJSON / HoVer-Net JSON → flat polygon arrays, bounded memory.

The file is read in chunks (8 MiB) into one byte buffer; a Numba state machine parses
the items of the ``features`` array (GeoJSON) or of the ``nuc`` object (HoVer-Net) one by
one, straight into flat output arrays (vertices, ring lengths, per-polygon ring counts,
class labels, bounding boxes) that the caller drains after each call — to a file for
the annotation store (:mod:`insmix_fast.wsi.store`), to memory for
:func:`~insmix_fast.wsi.annotations.read_geojson`. Memory is one chunk, one output batch
and the per-polygon arrays, whatever the file size; nothing is decoded into Python objects.
The JSON grammar is checked strictly everywhere (skipped values included), so a malformed
file is an error naming the byte offset and the feature, never a silently short result.

What is read:

* **GeoJSON** (QuPath "Export objects as GeoJSON"): a FeatureCollection, a top-level list
  of Features, or one Feature / geometry. Per feature: ``nucleusGeometry`` when present
  (QuPath cells) else ``geometry``; a Polygon is one nucleus (first ring the outline, the
  others holes); a MultiPolygon is one nucleus whose parts' rings are all its rings.
  Points / LineStrings (and their Multi forms) are *ignored* (counted). The class is
  ``properties.classification.name`` (or a ``classification`` string).
* **HoVer-Net** (``{"nuc": {"<id>": {"contour": [[x, y], ...], "type": t, ...}}}``): one
  polygon per entry, in file order; ``type`` (an integer, or null) is the class.

Bad features — no / null geometry, an unsupported geometry type (GeometryCollection),
malformed coordinates, a degenerate ring (:mod:`insmix_fast.data.polygons`: < 3
vertices, non-finite, beyond ±2³¹ px, zero area), a HoVer-Net ``type`` that is not a
non-negative integer — stop the scan with a :class:`~insmix_fast.errors.ReaderError`
naming the feature index (``on_error="raise"``) or are left out and counted
(``on_error="skip"``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numba
import numpy as np

from ..data.polygons import ABSURD, NON_FINITE, OK, TOO_FEW, ZERO_AREA, describe_problem, ring_problem
from ..errors import ReaderError

__all__ = ["GEOJSON", "HOVERNET", "ScanInfo", "scan_annotations", "class_table", "FORMAT_NAMES"]

GEOJSON, HOVERNET = 0, 1
FORMAT_NAMES = {GEOJSON: "geojson", HOVERNET: "hovernet"}

# scan status
_DONE, _MORE, _FULL, _SYNTAX, _BAD = 0, 1, 2, 3, 4
# state vector slots
(S_NPTS, S_NRINGS, S_NPOLYS, S_ITEM, S_NBAD, S_NIGNORED, S_PHASE, S_ERRCODE, S_ERRRING, S_ERRPT0, S_ERRPT1,
 S_ERRKEY0, S_ERRKEY1, S_NNAMES, S_NAMEBYTES, S_ERRPOS, S_LEN) = range(17)
# item phases inside the container
_AFTER_OPEN, _AFTER_ITEM, _AFTER_COMMA = 0, 1, 2
# bad-feature codes beyond the ring codes of insmix_fast.data.polygons (1..4)
NO_GEOMETRY, UNSUPPORTED_GEOMETRY, MALFORMED_COORDS, NOT_AN_OBJECT, NOT_A_FEATURE, BAD_TYPE, NO_CONTOUR, \
    TOO_MANY_CLASSES = 10, 11, 12, 13, 14, 15, 16, 17
# geometry type codes
_G_NONE, _G_POLYGON, _G_MULTIPOLYGON, _G_IGNORED, _G_OTHER = 0, 1, 2, 3, 4

_BAD_LOG = 64          # bad features remembered (index, code, ring) for the report
_MAX_NAMES = 32767     # distinct class names (int16 class ids)
_STACK = 512           # JSON nesting depth limit of skipped values

_LIT = {k: np.frombuffer(k.encode(), np.uint8).copy() for k in (
    "features", "nuc", "type", "geometry", "nucleusGeometry", "coordinates", "properties", "classification",
    "name", "contour", "Feature", "Polygon", "MultiPolygon", "Point", "MultiPoint", "LineString",
    "MultiLineString", "true", "false", "null", "NaN", "Infinity")}
K_FEATURES, K_NUC, K_TYPE, K_GEOMETRY, K_NUCGEOM, K_COORDS, K_PROPS, K_CLASS, K_NAME, K_CONTOUR, K_FEATURE, \
    K_POLYGON, K_MULTIPOLYGON, K_POINT, K_MULTIPOINT, K_LINESTRING, K_MULTILINESTRING, L_TRUE, L_FALSE, L_NULL, \
    L_NAN, L_INF = _LIT.values()


# ----------------------------------------------------------------------------- lexing
@numba.njit(cache=True, nogil=True, inline="always")
def _ws(buf, p, end):
    while p < end:
        c = buf[p]
        if c == 32 or c == 10 or c == 13 or c == 9:
            p += 1
        else:
            break
    return p


@numba.njit(cache=True, nogil=True, inline="always")
def _short(eof):
    """Status when the buffer ends before a token does."""
    return _SYNTAX if eof else _MORE


@numba.njit(cache=True, nogil=True)
def _eq(buf, s0, s1, lit):
    if s1 - s0 != lit.shape[0]:
        return False
    for i in range(lit.shape[0]):
        if buf[s0 + i] != lit[i]:
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _string(buf, p, end, eof):
    """``p`` at the opening quote → (content start, content end, position after, status)."""
    s0 = p + 1
    q = s0
    while q < end:
        c = buf[q]
        if c == 34:  # "
            return s0, q, q + 1, _DONE
        if c == 92:  # backslash: skip the escaped byte
            q += 2
        elif c < 32:
            return s0, q, q, _SYNTAX  # raw control character inside a string
        else:
            q += 1
    return s0, q, min(q, end), _short(eof)


@numba.njit(cache=True, nogil=True)
def _literal(buf, p, end, eof, lit):
    n = lit.shape[0]
    for i in range(n):
        if p + i >= end:
            return end, _short(eof)
        if buf[p + i] != lit[i]:
            return p, _SYNTAX
    return p + n, _DONE


_POW10 = np.array([10.0 ** k for k in range(23)])


@numba.njit(cache=True, nogil=True)
def _number(buf, p, end, eof):
    """A JSON number (or the literals NaN / Infinity / -Infinity) → (value, position after, status)."""
    q = p
    neg = False
    if q < end and buf[q] == 45:  # -
        neg = True
        q += 1
    if q >= end:
        return 0.0, p, _short(eof)
    c = buf[q]
    if c == 73:  # Infinity
        q2, s = _literal(buf, q, end, eof, L_INF)
        if s != _DONE:
            return 0.0, p, s
        return (-np.inf if neg else np.inf), q2, _DONE
    if c == 78 and not neg:  # NaN
        q2, s = _literal(buf, q, end, eof, L_NAN)
        if s != _DONE:
            return 0.0, p, s
        return np.nan, q2, _DONE
    if c < 48 or c > 57:
        return 0.0, p, _SYNTAX
    mant = 0
    nd = 0       # significant digits kept in mant
    exp10 = 0
    if c == 48:  # a leading 0 stands alone
        q += 1
    else:
        while q < end and 48 <= buf[q] <= 57:
            if nd < 18:
                mant = mant * 10 + (buf[q] - 48)
                if mant:
                    nd += 1
            else:
                exp10 += 1
            q += 1
    if q < end and buf[q] == 46:  # .
        q += 1
        if q >= end:
            return 0.0, p, _short(eof)
        if not 48 <= buf[q] <= 57:
            return 0.0, p, _SYNTAX
        while q < end and 48 <= buf[q] <= 57:
            if nd < 18:
                mant = mant * 10 + (buf[q] - 48)
                if mant:
                    nd += 1
                exp10 -= 1
            q += 1
    if q < end and (buf[q] == 101 or buf[q] == 69):  # e E
        q += 1
        eneg = False
        if q < end and (buf[q] == 43 or buf[q] == 45):
            eneg = buf[q] == 45
            q += 1
        if q >= end:
            return 0.0, p, _short(eof)
        if not 48 <= buf[q] <= 57:
            return 0.0, p, _SYNTAX
        e = 0
        while q < end and 48 <= buf[q] <= 57:
            if e < 100000:
                e = e * 10 + (buf[q] - 48)
            q += 1
        exp10 += -e if eneg else e
    if q >= end and not eof:
        return 0.0, end, _MORE  # the number may go on in the next chunk
    v = float(mant)
    if mant == 0:
        v = 0.0
    elif 0 <= exp10 <= 22:
        v = v * _POW10[exp10]
    elif -22 <= exp10 < 0:
        v = v / _POW10[-exp10]
    elif exp10 > 400:
        v = np.inf
    elif exp10 < -400:
        v = 0.0
    else:
        v = v * 10.0 ** exp10
    return (-v if neg else v), q, _DONE


@numba.njit(cache=True, nogil=True)
def _skip(buf, p, end, eof, stack):
    """Skip one JSON value (strict grammar) → (position after, status)."""
    depth = 0
    state = 0  # 0 value, 1 ',' or close, 2 key or '}', 3 key, 4 value or ']'
    while True:
        p = _ws(buf, p, end)
        if p >= end:
            return p, _short(eof)
        c = buf[p]
        if state == 0 or state == 4:
            if state == 4 and c == 93:  # ]
                depth -= 1
                p += 1
                if depth == 0:
                    return p, _DONE
                state = 1
                continue
            if c == 123 or c == 91:  # { [
                if depth == _STACK:
                    return p, _SYNTAX
                stack[depth] = c
                depth += 1
                p += 1
                state = 2 if c == 123 else 4
                continue
            if c == 34:
                _, _, p, s = _string(buf, p, end, eof)
            elif c == 116:
                p, s = _literal(buf, p, end, eof, L_TRUE)
            elif c == 102:
                p, s = _literal(buf, p, end, eof, L_FALSE)
            elif c == 110:
                p, s = _literal(buf, p, end, eof, L_NULL)
            else:
                _, p, s = _number(buf, p, end, eof)
            if s != _DONE:
                return p, s
            if depth == 0:
                return p, _DONE
            state = 1
        elif state == 1:
            top = stack[depth - 1]
            if c == 44:  # ,
                p += 1
                state = 3 if top == 123 else 0
            elif (c == 125 and top == 123) or (c == 93 and top == 91):
                depth -= 1
                p += 1
                if depth == 0:
                    return p, _DONE
            else:
                return p, _SYNTAX
        else:  # key
            if state == 2 and c == 125:
                depth -= 1
                p += 1
                if depth == 0:
                    return p, _DONE
                state = 1
                continue
            if c != 34:
                return p, _SYNTAX
            _, _, p, s = _string(buf, p, end, eof)
            if s != _DONE:
                return p, s
            p = _ws(buf, p, end)
            if p >= end:
                return p, _short(eof)
            if buf[p] != 58:  # :
                return p, _SYNTAX
            p += 1
            state = 0


@numba.njit(cache=True, nogil=True)
def _key(buf, p, end, eof):
    """At a key (after ws) → (key start, key end, position after the ':' and ws, status)."""
    if buf[p] != 34:
        return 0, 0, p, _SYNTAX
    k0, k1, p, s = _string(buf, p, end, eof)
    if s != _DONE:
        return k0, k1, p, s
    p = _ws(buf, p, end)
    if p >= end:
        return k0, k1, p, _short(eof)
    if buf[p] != 58:
        return k0, k1, p, _SYNTAX
    p = _ws(buf, p + 1, end)
    if p >= end:
        return k0, k1, p, _short(eof)
    return k0, k1, p, _DONE


@numba.njit(cache=True, nogil=True)
def _after_member(buf, p, end, eof, closer):
    """After an object member / array element → (position, 0 more members / 1 closed, status)."""
    p = _ws(buf, p, end)
    if p >= end:
        return p, 0, _short(eof)
    c = buf[p]
    if c == 44:
        p = _ws(buf, p + 1, end)
        if p >= end:
            return p, 0, _short(eof)
        return p, 0, _DONE
    if c == closer:
        return p + 1, 1, _DONE
    return p, 0, _SYNTAX


@numba.njit(cache=True, nogil=True)
def _open_object(buf, p, end, eof):
    """At a '{' → (position of the first key, status, 1 when the object is empty and consumed)."""
    p = _ws(buf, p + 1, end)
    if p >= end:
        return p, _short(eof), 0
    if buf[p] == 125:
        return p + 1, _DONE, 1
    return p, _DONE, 0


@numba.njit(cache=True, nogil=True)
def _member_end(buf, p, end, eof, s):
    """After an object member's value (parsed with status ``s``) → (p, 1 when the object closed, status)."""
    if s != _DONE:
        return p, 0, s
    return _after_member(buf, p, end, eof, 125)


# ----------------------------------------------------------------------------- coordinates
@numba.njit(cache=True, nogil=True)
def _coords(buf, p, end, eof, stack, pts, npts, ring_len, nrings, shift):
    """Nested coordinate arrays → vertices (+ ``shift``) appended to ``pts`` and one ring per array
    one level above the positions. Returns (p, status, npts, nrings, position depth, malformed)."""
    P = -1  # nesting depth of the numbers (positions' arrays)
    depth = 0
    malformed = False
    ncoord = 0
    x = 0.0
    arr_start = np.empty(16, np.int64)
    expect_value = True
    while True:
        p = _ws(buf, p, end)
        if p >= end:
            return p, _short(eof), npts, nrings, P, malformed
        c = buf[p]
        if c == 91:  # [
            if not expect_value:
                return p, _SYNTAX, npts, nrings, P, malformed
            if depth == 16:
                malformed = True
                p, s = _skip(buf, p, end, eof, stack)
                if s != _DONE:
                    return p, s, npts, nrings, P, malformed
                expect_value = False
                continue
            arr_start[depth] = npts
            depth += 1
            if depth == P:
                ncoord = 0
            p += 1
            expect_value = True
            # an empty array
            p = _ws(buf, p, end)
            if p >= end:
                return p, _short(eof), npts, nrings, P, malformed
            if buf[p] == 93:
                malformed = True
                depth -= 1
                p += 1
                expect_value = False
                if depth == 0:
                    return p, _DONE, npts, nrings, P, malformed
            continue
        if c == 93 or c == 44:
            if expect_value:
                return p, _SYNTAX, npts, nrings, P, malformed
            if c == 44:
                p += 1
                expect_value = True
                continue
            # close the array at `depth`
            if P < 0:
                malformed = True
            elif depth == P:
                if ncoord < 2:
                    malformed = True
            elif depth == P - 1:
                n = npts - arr_start[depth - 1]
                if n >= 2 and pts[npts - 1, 0] == pts[npts - n, 0] and pts[npts - 1, 1] == pts[npts - n, 1]:
                    npts -= 1  # closing vertex
                    n -= 1
                if nrings >= ring_len.shape[0]:
                    return p, _FULL, npts, nrings, P, malformed
                ring_len[nrings] = n
                nrings += 1
            depth -= 1
            p += 1
            if depth == 0:
                return p, _DONE, npts, nrings, P, malformed
            continue
        if not expect_value:
            return p, _SYNTAX, npts, nrings, P, malformed
        expect_value = False
        if c == 45 or 48 <= c <= 57 or c == 78 or c == 73:
            v, p, s = _number(buf, p, end, eof)
            if s != _DONE:
                return p, s, npts, nrings, P, malformed
            if depth == 0:
                return p, _DONE, npts, nrings, P, True  # a bare number
            if P < 0:
                P = depth
                ncoord = 0
            if depth != P:
                malformed = True
                continue
            if ncoord == 0:
                x = v
            elif ncoord == 1:
                if npts >= pts.shape[0]:
                    return p, _FULL, npts, nrings, P, malformed
                pts[npts, 0] = np.float32(x + shift)
                pts[npts, 1] = np.float32(v + shift)
                npts += 1
            ncoord += 1
            continue
        # a string, object or literal where a coordinate belongs
        malformed = True
        p, s = _skip(buf, p, end, eof, stack)
        if s != _DONE:
            return p, s, npts, nrings, P, malformed
        if depth == 0:
            return p, _DONE, npts, nrings, P, malformed


@numba.njit(cache=True, nogil=True)
def _geometry_code(buf, s0, s1):
    if _eq(buf, s0, s1, K_POLYGON):
        return _G_POLYGON
    if _eq(buf, s0, s1, K_MULTIPOLYGON):
        return _G_MULTIPOLYGON
    if (_eq(buf, s0, s1, K_POINT) or _eq(buf, s0, s1, K_MULTIPOINT) or _eq(buf, s0, s1, K_LINESTRING)
            or _eq(buf, s0, s1, K_MULTILINESTRING)):
        return _G_IGNORED
    return _G_OTHER


@numba.njit(cache=True, nogil=True)
def _geometry(buf, p, end, eof, stack, pts, npts, ring_len, nrings, slot):
    """A geometry value (object or null) → (p, status, npts, nrings); ``slot`` gets
    [present, null, type code, depth, malformed, pt0, pt1, ring0, ring1]."""
    slot[0] = 1
    slot[5] = npts
    slot[7] = nrings
    slot[2] = _G_NONE
    slot[3] = -1
    slot[4] = 0
    if buf[p] == 110:  # null
        p, s = _literal(buf, p, end, eof, L_NULL)
        slot[1] = 1
        slot[6] = npts
        slot[8] = nrings
        return p, s, npts, nrings
    slot[1] = 0
    if buf[p] != 123:
        slot[4] = 1
        p, s = _skip(buf, p, end, eof, stack)
        slot[6] = npts
        slot[8] = nrings
        return p, s, npts, nrings
    p, s, empty = _open_object(buf, p, end, eof)
    if s != _DONE or empty:
        slot[6] = npts
        slot[8] = nrings
        return p, s, npts, nrings
    seen_coords = False
    while True:
        k0, k1, p, s = _key(buf, p, end, eof)
        if s != _DONE:
            return p, s, npts, nrings
        if _eq(buf, k0, k1, K_TYPE) and buf[p] == 34:
            t0, t1, p, s = _string(buf, p, end, eof)
            slot[2] = _geometry_code(buf, t0, t1)
        elif _eq(buf, k0, k1, K_COORDS) and not seen_coords:
            seen_coords = True
            p, s, npts, nrings, P, bad = _coords(buf, p, end, eof, stack, pts, npts, ring_len, nrings, 0.0)
            slot[3] = P
            if bad:
                slot[4] = 1
        else:
            if _eq(buf, k0, k1, K_TYPE):  # a type that is not a string
                slot[2] = _G_OTHER
            p, s = _skip(buf, p, end, eof, stack)
        p, closed, s = _member_end(buf, p, end, eof, s)
        if s != _DONE:
            return p, s, npts, nrings
        if closed:
            break
    slot[6] = npts
    slot[8] = nrings
    return p, _DONE, npts, nrings


@numba.njit(cache=True, nogil=True)
def _string_member(buf, p, end, eof, stack, key, name, nested):
    """The object value at ``p`` → (p, status); the string value of its member ``key`` goes to
    ``name`` ([found, start, end]). ``nested``: an object value of ``key`` is searched for a
    string ``"name"`` member (``properties`` → ``classification`` → ``name``, QuPath).
    (Iterative on purpose: Numba cannot cache recursive functions.)"""
    if buf[p] != 123:
        return _skip(buf, p, end, eof, stack)
    p, s, empty = _open_object(buf, p, end, eof)
    if s != _DONE or empty:
        return p, s
    level = 0  # 1: inside the object value of `key`
    while True:
        k0, k1, p, s = _key(buf, p, end, eof)
        if s != _DONE:
            return p, s
        if _eq(buf, k0, k1, key if level == 0 else K_NAME) and buf[p] == 34:
            n0, n1, p, s = _string(buf, p, end, eof)
            name[0], name[1], name[2] = 1, n0, n1
        elif level == 0 and nested and _eq(buf, k0, k1, key) and buf[p] == 123:  # {"name": "Tumor", ...}
            p, s, empty = _open_object(buf, p, end, eof)
            if s == _DONE and not empty:
                level = 1
                continue
        else:
            p, s = _skip(buf, p, end, eof, stack)
        while True:  # end of the member; closing the inner object ends the outer member
            p, closed, s = _member_end(buf, p, end, eof, s)
            if s != _DONE:
                return p, s
            if not closed:
                break
            if level == 0:
                return p, _DONE
            level = 0


@numba.njit(cache=True, nogil=True)
def _class_id(buf, n0, n1, st, names, name_off):
    """Index+1 of the raw name bytes ``buf[n0:n1]`` in the name table (added when new), or -1 when full."""
    n = n1 - n0
    for k in range(st[S_NNAMES]):
        a, b = name_off[k], name_off[k + 1]
        if b - a != n:
            continue
        same = True
        for i in range(n):
            if names[a + i] != buf[n0 + i]:
                same = False
                break
        if same:
            return k + 1
    k = st[S_NNAMES]
    if k >= _MAX_NAMES or st[S_NAMEBYTES] + n > names.shape[0]:
        return -1
    a = st[S_NAMEBYTES]
    for i in range(n):
        names[a + i] = buf[n0 + i]
    name_off[k + 1] = a + n
    st[S_NAMEBYTES] = a + n
    st[S_NNAMES] = k + 1
    return k + 1


@numba.njit(cache=True, nogil=True)
def _move(pts, ring_len, src_pt0, src_pt1, src_r0, src_r1, dst_pt, dst_r):
    """Move a geometry's vertices and ring lengths down to ``dst`` (the feature's start)."""
    for i in range(src_pt1 - src_pt0):
        pts[dst_pt + i, 0] = pts[src_pt0 + i, 0]
        pts[dst_pt + i, 1] = pts[src_pt0 + i, 1]
    for i in range(src_r1 - src_r0):
        ring_len[dst_r + i] = ring_len[src_r0 + i]
    return dst_pt + (src_pt1 - src_pt0), dst_r + (src_r1 - src_r0)


@numba.njit(cache=True, nogil=True)
def _check_rings(pts, ring_len, pt0, r0, r1, st):
    """First problem of the rings ``r0:r1`` (vertices from ``pt0``): 0, or its code
    (ring index and vertex slice in the error slots)."""
    if r1 <= r0:
        return MALFORMED_COORDS
    a = pt0
    for r in range(r0, r1):
        b = a + ring_len[r]
        code = ring_problem(pts[a:b])
        if code != OK:
            st[S_ERRRING] = r - r0
            st[S_ERRPT0] = a
            st[S_ERRPT1] = b
            return code
        a = b
    return 0


@numba.njit(cache=True, nogil=True)
def _finish_polygon(pts, npts0, npts, nrings0, nrings, label, st, poly_nrings, poly_label, poly_bbox):
    k = st[S_NPOLYS]
    x0 = y0 = np.inf
    x1 = y1 = -np.inf
    for i in range(npts0, npts):
        x, y = pts[i, 0], pts[i, 1]
        x0 = min(x0, x)
        x1 = max(x1, x)
        y0 = min(y0, y)
        y1 = max(y1, y)
    poly_nrings[k] = nrings - nrings0
    poly_label[k] = label
    poly_bbox[k, 0] = x0
    poly_bbox[k, 1] = y0
    poly_bbox[k, 2] = x1
    poly_bbox[k, 3] = y1
    st[S_NPOLYS] = k + 1


@numba.njit(cache=True, nogil=True)
def _feature(buf, p, end, eof, stack, st, pts, ring_len, names, name_off):
    """One GeoJSON feature → (p, status, problem code, label, npts, nrings)."""
    npts0, nrings0 = st[S_NPTS], st[S_NRINGS]
    npts, nrings = npts0, nrings0
    geo = np.zeros(9, np.int64)
    nuc = np.zeros(9, np.int64)
    name = np.zeros(3, np.int64)
    problem = 0
    if buf[p] != 123:
        p, s = _skip(buf, p, end, eof, stack)
        return p, s, NOT_AN_OBJECT, 0, npts, nrings
    p, s, empty = _open_object(buf, p, end, eof)
    if s != _DONE:
        return p, s, 0, 0, npts, nrings
    if empty:
        return p, _DONE, NO_GEOMETRY, 0, npts, nrings
    while True:
        k0, k1, p, s = _key(buf, p, end, eof)
        if s != _DONE:
            return p, s, 0, 0, npts, nrings
        if _eq(buf, k0, k1, K_GEOMETRY) and geo[0] == 0:
            p, s, npts, nrings = _geometry(buf, p, end, eof, stack, pts, npts, ring_len, nrings, geo)
        elif _eq(buf, k0, k1, K_NUCGEOM) and nuc[0] == 0:
            p, s, npts, nrings = _geometry(buf, p, end, eof, stack, pts, npts, ring_len, nrings, nuc)
        elif _eq(buf, k0, k1, K_PROPS):
            p, s = _string_member(buf, p, end, eof, stack, K_CLASS, name, True)
        elif _eq(buf, k0, k1, K_TYPE):
            if buf[p] == 34:
                t0, t1, p, s = _string(buf, p, end, eof)
                if s == _DONE and not _eq(buf, t0, t1, K_FEATURE):
                    problem = NOT_A_FEATURE
            else:
                problem = NOT_A_FEATURE
                p, s = _skip(buf, p, end, eof, stack)
        else:
            p, s = _skip(buf, p, end, eof, stack)
        p, closed, s = _member_end(buf, p, end, eof, s)
        if s != _DONE:
            return p, s, 0, 0, npts, nrings
        if closed:
            break
    g = nuc if nuc[0] == 1 and nuc[1] == 0 else geo
    if problem == 0:
        if g[0] == 0 or g[1] == 1:
            problem = NO_GEOMETRY
        elif g[2] == _G_IGNORED and g[4] == 0:
            problem = -1  # ignored: not an area
        elif g[2] == _G_NONE or g[2] == _G_OTHER:
            problem = UNSUPPORTED_GEOMETRY
        elif g[4] == 1 or (g[2] == _G_POLYGON and g[3] != 3) or (g[2] == _G_MULTIPOLYGON and g[3] != 4):
            problem = MALFORMED_COORDS
    if problem != 0:
        return p, _DONE, problem, 0, npts0, nrings0
    if g[5] != npts0 or g[7] != nrings0:
        npts, nrings = _move(pts, ring_len, g[5], g[6], g[7], g[8], npts0, nrings0)
    else:
        npts, nrings = g[6], g[8]
    problem = _check_rings(pts, ring_len, npts0, nrings0, nrings, st)
    label = 0
    if problem == 0 and name[0] == 1:
        label = _class_id(buf, name[1], name[2], st, names, name_off)
        if label < 0:
            problem = TOO_MANY_CLASSES
    return p, _DONE, problem, label, npts, nrings


@numba.njit(cache=True, nogil=True)
def _nucleus(buf, p, end, eof, stack, st, pts, ring_len):
    """One HoVer-Net ``"id": {...}`` entry → (p, status, problem code, label, npts, nrings)."""
    npts0, nrings0 = st[S_NPTS], st[S_NRINGS]
    npts, nrings = npts0, nrings0
    k0, k1, p, s = _key(buf, p, end, eof)
    if s != _DONE:
        return p, s, 0, 0, npts, nrings
    st[S_ERRKEY0], st[S_ERRKEY1] = k0, k1
    if buf[p] != 123:
        p, s = _skip(buf, p, end, eof, stack)
        return p, s, NOT_AN_OBJECT, 0, npts, nrings
    p, s, empty = _open_object(buf, p, end, eof)
    if s != _DONE:
        return p, s, 0, 0, npts, nrings
    if empty:
        return p, _DONE, NO_CONTOUR, 0, npts, nrings
    problem = 0
    label = 0
    seen = False
    P = -1
    while True:
        j0, j1, p, s = _key(buf, p, end, eof)
        if s != _DONE:
            return p, s, 0, 0, npts, nrings
        if _eq(buf, j0, j1, K_CONTOUR) and not seen:
            seen = True
            # contour through boundary-pixel centres (integers) → edge convention (+0.5)
            p, s, npts, nrings, P, bad = _coords(buf, p, end, eof, stack, pts, npts, ring_len, nrings, 0.5)
            if s == _DONE and (bad or P != 2) and problem == 0:
                problem = MALFORMED_COORDS
        elif _eq(buf, j0, j1, K_TYPE):
            if buf[p] == 110:
                p, s = _literal(buf, p, end, eof, L_NULL)
            else:
                c = buf[p]
                if c == 45 or 48 <= c <= 57:
                    v, p, s = _number(buf, p, end, eof)
                    if s == _DONE:
                        if v >= 0 and v <= _MAX_NAMES - 2 and v == np.floor(v):
                            label = int(v) + 1
                        elif problem == 0:
                            problem = BAD_TYPE
                else:
                    p, s = _skip(buf, p, end, eof, stack)
                    if problem == 0:
                        problem = BAD_TYPE
        else:
            p, s = _skip(buf, p, end, eof, stack)
        p, closed, s = _member_end(buf, p, end, eof, s)
        if s != _DONE:
            return p, s, 0, 0, npts, nrings
        if closed:
            break
    if problem == 0 and not seen:
        problem = NO_CONTOUR
    if problem != 0:
        return p, _DONE, problem, 0, npts0, nrings0
    problem = _check_rings(pts, ring_len, npts0, nrings0, nrings, st)
    return p, _DONE, problem, label, npts, nrings


@numba.njit(cache=True, nogil=True)
def _scan_items(buf, p, end, eof, kind, skip_bad, st, stack, pts, ring_len, poly_nrings, poly_label, poly_bbox,
                names, name_off, bad_log):
    """Items of the features array (``kind`` 0, ``p`` after its '[') or of the ``nuc`` object
    (1, after its '{') → (p, status). The output arrays fill from the tails in ``st``; on
    _MORE / _FULL ``p`` is where the unfinished item starts (call again there)."""
    closer = 93 if kind == GEOJSON else 125
    while True:
        p = _ws(buf, p, end)
        if p >= end:
            return p, _short(eof)
        c = buf[p]
        phase = st[S_PHASE]
        if phase != _AFTER_COMMA and c == closer:
            st[S_PHASE] = _AFTER_ITEM
            return p + 1, _DONE
        if phase == _AFTER_ITEM:
            if c != 44:
                st[S_ERRPOS] = p
                return p, _SYNTAX
            st[S_PHASE] = _AFTER_COMMA
            p += 1
            continue
        if st[S_NPOLYS] >= poly_nrings.shape[0]:
            return p, _FULL
        start = p
        if kind == GEOJSON:
            p, s, problem, label, npts, nrings = _feature(buf, p, end, eof, stack, st, pts, ring_len, names, name_off)
        else:
            p, s, problem, label, npts, nrings = _nucleus(buf, p, end, eof, stack, st, pts, ring_len)
        if s != _DONE:
            if s == _SYNTAX:
                st[S_ERRPOS] = p
                return p, _SYNTAX
            return start, s  # _MORE / _FULL: again from the item's start
        st[S_PHASE] = _AFTER_ITEM
        if problem == -1:
            st[S_NIGNORED] += 1
        elif problem != 0:
            nb = st[S_NBAD]
            if nb < bad_log.shape[0]:
                bad_log[nb, 0] = st[S_ITEM]
                bad_log[nb, 1] = problem
                bad_log[nb, 2] = st[S_ERRRING] if problem <= ZERO_AREA else -1
            st[S_NBAD] = nb + 1
            if not skip_bad:
                st[S_ERRCODE] = problem
                st[S_ERRPOS] = start
                return p, _BAD
        else:
            _finish_polygon(pts, st[S_NPTS], npts, st[S_NRINGS], nrings, label, st, poly_nrings, poly_label,
                            poly_bbox)
            st[S_NPTS], st[S_NRINGS] = npts, nrings
        st[S_ITEM] += 1


@numba.njit(cache=True, nogil=True)
def _top_key(buf, p, end, eof):
    """At the top-level object: → (p, status, 0 '}' reached / 1 key, key start, key end)."""
    p = _ws(buf, p, end)
    if p >= end:
        return p, _short(eof), 0, 0, 0
    if buf[p] == 125:
        return p + 1, _DONE, 0, 0, 0
    k0, k1, p, s = _key(buf, p, end, eof)
    return p, s, 1, k0, k1


# ----------------------------------------------------------------------------- driver
_PROBLEMS = {
    NO_GEOMETRY: "has no geometry (missing or null)",
    UNSUPPORTED_GEOMETRY: "has an unsupported geometry type (only Polygon and MultiPolygon are areas; "
                          "Point/LineString features are ignored)",
    MALFORMED_COORDS: "has malformed coordinates (wrong nesting, a position without x and y, or an empty ring)",
    NOT_AN_OBJECT: "is not a JSON object",
    NOT_A_FEATURE: "is not a GeoJSON Feature (its 'type' is not \"Feature\")",
    BAD_TYPE: "has a 'type' that is not a non-negative integer (or null)",
    NO_CONTOUR: "has no 'contour'",
    TOO_MANY_CLASSES: f"has a classification beyond the {_MAX_NAMES} distinct class names supported",
}


def problem_text(code: int) -> str:
    if code in (TOO_FEW, NON_FINITE, ABSURD, ZERO_AREA):
        return "is degenerate: " + describe_problem(code)
    return _PROBLEMS.get(code, f"is bad (code {code})")


@dataclass
class ScanInfo:
    """What a scan found besides the polygons."""

    format: str                      # "geojson" | "hovernet"
    items: int = 0                   # features / nuclei read (kept, skipped and ignored)
    polygons: int = 0
    rings: int = 0
    points: int = 0
    skipped: int = 0                 # bad features left out (on_error="skip")
    ignored: int = 0                 # Point / LineString features
    skipped_examples: list = field(default_factory=list)  # [(item, text)], first 64
    raw_names: list = field(default_factory=list)        # decoded class names, raw label k ↔ raw_names[k-1]


class _Reader:
    """The byte buffer over the file: refilled and grown on demand."""

    def __init__(self, f, size: int, chunk: int, bar) -> None:
        self.f, self.size, self.bar = f, size, bar
        self.buf = np.empty(max(chunk, 1024), np.uint8)
        self.end = 0
        self.base = 0      # file offset of buf[0]
        self.eof = False
        self.refill(0)

    def refill(self, keep: int) -> int:
        """Drop ``buf[:keep]``, read more; returns the shift applied to positions (``keep``)."""
        n = self.end - keep
        if keep == 0 and n == len(self.buf):  # one item fills the buffer: grow it
            grown = np.empty(2 * len(self.buf), np.uint8)
            grown[:n] = self.buf[:n]
            self.buf = grown
        elif keep:
            self.buf[:n] = self.buf[keep:self.end]
        self.base += keep
        got = self.f.readinto(memoryview(self.buf)[n:])
        self.end = n + (got or 0)
        if self.end < len(self.buf):
            # short read: try once more (pipes, network file systems), then it is the end
            more = self.f.readinto(memoryview(self.buf)[self.end:]) if got else 0
            self.end += more or 0
            self.eof = not more
        if self.bar is not None:
            self.bar.update(max(min(self.base + self.end, self.size) - self.bar.n, 0))
        return keep


def _syntax(path, rd: _Reader, p: int, item: int, where: str) -> ReaderError:
    off = rd.base + p
    ctx = bytes(rd.buf[max(p - 30, 0):min(p + 30, rd.end)]).decode("utf-8", "replace")
    at = "unexpected end of file" if p >= rd.end and rd.eof else f"malformed JSON at byte {off}"
    return ReaderError(f"{path}: {at} ({where}, near feature {item}): …{ctx}…")


class _Batch:
    """Output arrays of one scanner call (drained by the sink after each call)."""

    def __init__(self, pts_cap: int, poly_cap: int) -> None:
        self.pts = np.empty((pts_cap, 2), np.float32)
        self.ring_len = np.empty(max(poly_cap, pts_cap // 8), np.int64)
        self.poly_nrings = np.empty(poly_cap, np.int64)
        self.poly_label = np.empty(poly_cap, np.int32)
        self.poly_bbox = np.empty((poly_cap, 4), np.float64)

    def grow(self) -> None:
        g = _Batch(2 * len(self.pts), 2 * len(self.poly_nrings))
        self.__dict__.update(g.__dict__)


def scan_annotations(path, sink, *, expect: str = "auto", on_error: str = "raise", chunk: int = 8 << 20,
                     batch: int = 1 << 21, progress=None) -> ScanInfo:
    """Scan a GeoJSON / HoVer-Net JSON file, calling ``sink(pts, ring_len, poly_nrings, poly_label, bbox)``
    with each batch of complete polygons (views, valid during the call only).

    ``expect``: ``"geojson"``, ``"hovernet"`` or ``"auto"`` (by the top-level keys).
    ``progress``: a tqdm-like bar (``total`` = file size) or None. Raises :class:`ReaderError`.
    """
    path = Path(os.fspath(path))
    skip = on_error == "skip"
    try:
        size = path.stat().st_size
        f = open(path, "rb")
    except OSError as e:
        raise ReaderError(f"cannot read annotations {path}: {e}") from e
    with f:
        rd = _Reader(f, size, chunk, progress)
        if rd.buf[:3].tobytes() == b"\xef\xbb\xbf":
            rd.refill(3)
        st = np.zeros(S_LEN, np.int64)
        stack = np.zeros(_STACK, np.uint8)
        out = _Batch(batch, max(batch // 16, 1024))
        names = np.zeros(1 << 16, np.uint8)
        name_off = np.zeros(_MAX_NAMES + 1, np.int64)
        bad_log = np.full((64, 3), -1, np.int64)
        info = ScanInfo(format=expect if expect != "auto" else "")

        def run_items(p: int, kind: int) -> int:
            st[S_PHASE] = _AFTER_OPEN
            while True:
                p, s = _scan_items(rd.buf, p, rd.end, rd.eof, kind, skip, st, stack, out.pts, out.ring_len,
                                   out.poly_nrings, out.poly_label, out.poly_bbox, names, name_off, bad_log)
                if st[S_NPOLYS] and (s != _MORE or st[S_NPTS] > len(out.pts) // 2):
                    sink(out.pts[:st[S_NPTS]], out.ring_len[:st[S_NRINGS]], out.poly_nrings[:st[S_NPOLYS]],
                         out.poly_label[:st[S_NPOLYS]], out.poly_bbox[:st[S_NPOLYS]])
                    info.polygons += int(st[S_NPOLYS])
                    info.rings += int(st[S_NRINGS])
                    info.points += int(st[S_NPTS])
                    st[S_NPTS] = st[S_NRINGS] = st[S_NPOLYS] = 0
                elif s == _FULL:
                    out.grow()  # one item larger than the whole batch
                if s == _DONE:
                    return p
                if s == _MORE:
                    p -= rd.refill(p)
                elif s == _SYNTAX:
                    raise _syntax(path, rd, int(st[S_ERRPOS]) if st[S_ERRPOS] else p, int(st[S_ITEM]),
                                  "in the 'features' array" if kind == GEOJSON else "in the 'nuc' object")
                elif s == _BAD:
                    raise _bad_item(path, rd, kind, st, out)

        def start(p: int, kind: int) -> int:
            if expect != "auto" and FORMAT_NAMES[kind] != expect:
                want = {"geojson": "a GeoJSON 'features' array", "hovernet": "a HoVer-Net 'nuc' object"}[expect]
                got = "a HoVer-Net 'nuc' object" if kind == HOVERNET else "GeoJSON features"
                raise ReaderError(f"{path}: expected {want}, found {got}")
            return run_items(p, kind)

        p = _ws(rd.buf, 0, rd.end)
        while p >= rd.end and not rd.eof:
            p -= rd.refill(p)
            p = _ws(rd.buf, p, rd.end)
        if p >= rd.end:
            raise ReaderError(f"{path} is empty")
        c = rd.buf[p]
        found = None
        if c == ord("["):
            found = GEOJSON
            p = start(p + 1, GEOJSON)
        elif c == ord("{"):
            p += 1
            first = True
            while True:
                q, s, has_key, k0, k1 = _top_key(rd.buf, p, rd.end, rd.eof)
                if s == _MORE:
                    p -= rd.refill(p)
                    continue
                if s != _DONE:
                    raise _syntax(path, rd, q, int(st[S_ITEM]), "in the top-level object")
                if not has_key:
                    if not first:
                        raise _syntax(path, rd, p, int(st[S_ITEM]), "a ',' before '}'")
                    p = q
                    break
                key = rd.buf[k0:k1].tobytes()
                c = rd.buf[q] if q < rd.end else 0
                if found is None and key == b"features" and c == ord("["):
                    found = GEOJSON
                    p = start(q + 1, GEOJSON)
                elif found is None and key == b"nuc" and c == ord("{"):
                    found = HOVERNET
                    p = start(q + 1, HOVERNET)
                else:
                    while True:
                        r, s = _skip(rd.buf, q, rd.end, rd.eof, stack)
                        if s != _MORE:
                            break
                        shift = rd.refill(p)
                        p, q = p - shift, q - shift
                    if s != _DONE:
                        raise _syntax(path, rd, r, int(st[S_ITEM]), f"in the value of top-level key {key!r}")
                    p = r
                while True:
                    r, closed, s = _after_member(rd.buf, p, rd.end, rd.eof, 125)
                    if s != _MORE:
                        break
                    p -= rd.refill(p)
                if s != _DONE:
                    raise _syntax(path, rd, r, int(st[S_ITEM]), "after a top-level value")
                p = r
                first = False
                if closed:
                    break
        else:
            raise ReaderError(f"{path} is not JSON (starts with {bytes(rd.buf[p:p + 20])!r})")
        # nothing but whitespace may follow
        while True:
            p = _ws(rd.buf, p, rd.end)
            if p < rd.end or rd.eof:
                break
            p -= rd.refill(p)
        if p < rd.end:
            raise _syntax(path, rd, p, int(st[S_ITEM]), "after the end of the document")
    if found is None:
        return _small_document(path, sink, expect, on_error)
    info.format = FORMAT_NAMES[found]
    info.items = int(st[S_ITEM])
    info.skipped = int(st[S_NBAD])
    info.ignored = int(st[S_NIGNORED])
    info.skipped_examples = [(int(i), problem_text(int(c)) + (f" (ring {int(r)})" if r > 0 else ""))
                             for i, c, r in bad_log[:min(info.skipped, len(bad_log))]]
    info.raw_names = [_decode_name(names[name_off[k]:name_off[k + 1]].tobytes()) for k in range(int(st[S_NNAMES]))]
    return info


def _decode_name(raw: bytes) -> str:
    try:
        return json.loads(b'"' + raw + b'"')
    except ValueError:
        return raw.decode("utf-8", "replace")


def _bad_item(path, rd: _Reader, kind: int, st, out: _Batch) -> ReaderError:
    code = int(st[S_ERRCODE])
    item = int(st[S_ITEM])
    if kind == GEOJSON:
        who = f"feature {item}"
    else:
        key = _decode_name(rd.buf[st[S_ERRKEY0]:st[S_ERRKEY1]].tobytes())
        who = f"nucleus {key!r} (entry {item} of 'nuc')"
    if code in (TOO_FEW, NON_FINITE, ABSURD, ZERO_AREA):
        ring = out.pts[st[S_ERRPT0]:st[S_ERRPT1]].astype(np.float64)
        what = f"is degenerate: {describe_problem(code, ring)}" + (f" in ring {int(st[S_ERRRING])}" if st[S_ERRRING] else "")
    else:
        what = problem_text(code)
    return ReaderError(f"{path}: {who} {what}; pass on_error='skip' to leave such features out")


def _small_document(path: Path, sink, expect: str, on_error: str) -> ScanInfo:
    """A document without a features array or nuc object: one Feature or one geometry
    (small by nature) — wrapped in a FeatureCollection and scanned like one."""
    if expect == "hovernet":
        raise ReaderError(f"{path} has no 'nuc' object (HoVer-Net JSON expected)")
    if path.stat().st_size > 64 << 20:
        raise ReaderError(f"{path}: no 'features' array or 'nuc' object at the top level")
    try:
        doc = json.loads(path.read_bytes())
    except ValueError as e:
        raise ReaderError(f"cannot read GeoJSON {path}: {e}") from e
    if isinstance(doc, dict) and doc.get("type") == "Feature":
        feats = [doc]
    elif isinstance(doc, dict) and doc.get("type") in ("Polygon", "MultiPolygon"):
        feats = [{"type": "Feature", "geometry": doc}]
    else:
        raise ReaderError(f"{path} is not a GeoJSON FeatureCollection, Feature or list of features, "
                          "nor a HoVer-Net JSON")
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d) / "wrapped.geojson"
        tmp.write_text(json.dumps({"type": "FeatureCollection", "features": feats}))
        try:
            return scan_annotations(tmp, sink, expect="geojson", on_error=on_error)
        except ReaderError as e:
            raise ReaderError(str(e).replace(str(tmp), str(path))) from None


def class_table(fmt: str, labels: np.ndarray, raw_names: list):
    """Raw scan labels → ``(types int16 per polygon, class_names tuple or None, source_types)``.

    GeoJSON: classes numbered 1.. in order of first appearance (names compared after JSON
    unescaping); unclassified polygons in a file that has classes are the class
    ``"Unclassified"``. No classification anywhere: untyped (``None``, types all 0).
    HoVer-Net: HoVer-Net's own type ids t ≥ 1 are the class ids (named ``"type_<t>"``; the
    annotation readers rename them from ``type_names``); type 0 nuclei (HoVer-Net's "no
    label") and null types in a typed file get their own class after the largest id. No
    type anywhere: untyped. ``source_types``: for HoVer-Net, the original type of each class.
    """
    labels = np.asarray(labels, np.int64)
    present = np.zeros(max(int(labels.max(initial=0)) + 1, 1), bool)
    present[labels] = True
    if not present[1:].any():
        return np.zeros(len(labels), np.int16), None, None
    lut = np.zeros(len(present), np.int64)
    if fmt == "geojson":
        names = ["background"]
        index = {}
        raws, first = np.unique(labels, return_index=True)
        for raw in raws[np.argsort(first)]:  # in order of first appearance
            nm = raw_names[raw - 1] if raw else "Unclassified"
            if nm not in index:
                index[nm] = len(names)
                names.append(nm)
            lut[raw] = index[nm]
        source_types = None
    else:
        ts = np.flatnonzero(present[1:])  # HoVer-Net types present (raw label - 1)
        top = int(max(ts.max(), 0))
        names = ["background"] + [f"type_{t}" for t in range(1, top + 1)]
        source_types = [None] + list(range(1, top + 1))
        for t in ts[ts >= 1]:
            lut[t + 1] = t
        if present[1]:  # HoVer-Net type 0: its own class
            lut[1] = len(names)
            names.append("type_0")
            source_types.append(0)
        if present[0]:  # null type in a typed file
            lut[0] = len(names)
            names.append("Unclassified")
            source_types.append(None)
    if len(names) > _MAX_NAMES:
        raise ReaderError(f"{len(names) - 1} classes: more than {_MAX_NAMES - 1} are not supported")
    return lut[labels].astype(np.int16), tuple(names), source_types
