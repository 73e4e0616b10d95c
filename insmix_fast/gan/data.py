"""Training data for the smooth-GAN: real tiles and pasted tiles with their masks.

Every training step needs

* two real tiles, the anchor ``x_a`` and the positive ``x_p`` (Eq. 3);
* a pasted tile ``u`` with its paste mask ``M`` (template pixels) and the
  original-instance mask ``O = (labels > 0) & ~M``.

``u`` comes from :func:`insmix_fast.insmix` (foreground only, background
perturbation off: the GAN only ever sees the pasted nuclei) with a bank built
from all training tiles, so templates usually come from tiles of another
stain. If ``insmix`` cannot be imported (or ``paste="simple"``), a simple
stand-in pastes whole instances of another tile at random free positions.

Tiles come from a directory (:func:`load_tiles_dir`) or from
:class:`insmix_fast.data.SyntheticNuclei` (``"synthetic"``, or
``"synthetic-two-stain"`` for tiles of two stains, :func:`two_stain_tiles`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import InputError
from ..validation import check_choice, check_int, check_sample

__all__ = ["PastedBatch", "TileSource", "load_tiles_dir", "simple_paste", "insmix_available", "two_stain_tiles",
           "OTHER_STAIN", "SYNTHETIC_SPECS"]

#: ``--data`` values that name built-in synthetic tiles instead of a directory.
SYNTHETIC_SPECS = ("synthetic", "synthetic-two-stain")

_IMG_EXT = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")
_LABEL_SUFFIXES = ("_label", "_labels", "_mask", "_inst", "_instances")


@dataclass
class PastedBatch:
    """One training batch, tensors N×C×H×W on one device; images in [−1, 1]."""

    anchor: torch.Tensor
    positive: torch.Tensor
    u: torch.Tensor
    paste_mask: torch.Tensor  # N×1×H×W float {0,1}
    original_mask: torch.Tensor  # N×1×H×W float {0,1}

    def to(self, device) -> "PastedBatch":
        return PastedBatch(*(t.to(device, non_blocking=True) for t in
                             (self.anchor, self.positive, self.u, self.paste_mask, self.original_mask)))


def insmix_available() -> bool:
    """True when the InsMix kernels can be imported (they need Numba)."""
    try:
        from ..core import insmix  # noqa: F401
    except ImportError:
        return False
    return True


def _read_labels(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    lab = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if lab is None:
        raise InputError(f"cannot read label file {path}")
    if lab.ndim == 3:  # colour-coded instance map → ids from unique colours
        flat = lab.reshape(-1, lab.shape[2]).astype(np.int64)
        key = (flat[:, 0] << 16) | (flat[:, 1] << 8) | flat[:, 2]
        _, inv = np.unique(key, return_inverse=True)
        ids = inv.reshape(lab.shape[:2]).astype(np.int32) + 1
        ids[key.reshape(lab.shape[:2]) == 0] = 0  # black = background
        lab = ids
    return lab


def load_tiles_dir(path: str | os.PathLike) -> list[tuple[np.ndarray, np.ndarray]]:
    """Read ``(image, labels)`` pairs from a directory.

    Layouts understood (first match wins for each image):

    * ``*.npz`` files with arrays ``image`` (H×W×3 uint8) and ``labels`` (H×W int);
    * ``images/NAME.png`` with ``labels/NAME.npy|.png|.tif`` (sibling folders);
    * ``NAME.png`` with ``NAME_label(s).npy|.png|.tif`` (or ``_mask``/``_inst``) beside it.

    Label maps are integer instance maps (0 = background); an RGB label image is
    read as a colour-coded instance map.
    """
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"--data {root}: not a directory (use 'synthetic' or 'synthetic-two-stain' for the "
                         "built-in data)")
    out: list[tuple[np.ndarray, np.ndarray]] = []
    for f in sorted(root.glob("*.npz")):
        z = np.load(f)
        if "image" not in z or "labels" not in z:
            raise InputError(f"{f}: an .npz tile needs arrays 'image' and 'labels'")
        out.append(check_sample(z["image"], z["labels"], name=str(f)))
    img_dir, lab_dir = (root / "images", root / "labels") if (root / "images").is_dir() else (root, root)
    for f in sorted(img_dir.iterdir()):
        if f.suffix.lower() not in _IMG_EXT or any(f.stem.endswith(s) for s in _LABEL_SUFFIXES):
            continue
        cands = []
        for ext in (".npy", ".png", ".tif", ".tiff"):
            if lab_dir != img_dir:
                cands.append(lab_dir / (f.stem + ext))
            cands += [lab_dir / (f.stem + s + ext) for s in _LABEL_SUFFIXES]
        lab_path = next((c for c in cands if c.is_file()), None)
        if lab_path is None:
            continue
        img = cv2.imread(str(f), cv2.IMREAD_COLOR)
        if img is None:
            raise InputError(f"cannot read image {f}")
        out.append(check_sample(np.ascontiguousarray(img[:, :, ::-1]), _read_labels(lab_path).astype(np.int64),
                                name=str(f)))
    if not out:
        raise InputError(f"--data {root}: no (image, labels) pairs found "
                         "(expected *.npz, images/+labels/, or NAME.png + NAME_label.npy)")
    return out


def simple_paste(image: np.ndarray, labels: np.ndarray, donor_image: np.ndarray, donor_labels: np.ndarray,
                 rng: np.random.Generator, max_pastes: int = 8, tries: int = 20):
    """Paste up to ``max_pastes`` whole donor instances at random free positions.

    A stand-in for :func:`insmix_fast.insmix` (no SSD constraints): an instance
    is placed only where it touches no existing nucleus. Returns
    ``(image, labels, paste_mask)``.
    """
    image = image.copy()
    labels = labels.astype(np.int32, copy=True)
    pm = np.zeros(labels.shape, bool)
    H, W = labels.shape
    ids = np.unique(donor_labels)
    ids = ids[ids > 0]
    rng.shuffle(ids)
    nxt = int(labels.max()) + 1
    done = 0
    for i in ids:
        if done >= max_pastes:
            break
        ys, xs = np.nonzero(donor_labels == i)
        y0, x0 = ys.min(), xs.min()
        h, w = ys.max() - y0 + 1, xs.max() - x0 + 1
        if (y0 == 0 or x0 == 0 or ys.max() == donor_labels.shape[0] - 1 or xs.max() == donor_labels.shape[1] - 1
                or h >= H - 2 or w >= W - 2):
            continue  # cut by the donor's border, or too large
        for _ in range(tries):
            ty, tx = int(rng.integers(1, H - h)), int(rng.integers(1, W - w))
            yy, xx = ys - y0 + ty, xs - x0 + tx
            region = labels[max(ty - 1, 0): ty + h + 1, max(tx - 1, 0): tx + w + 1]
            if (region > 0).any():
                continue
            image[yy, xx] = donor_image[ys, xs]
            labels[yy, xx] = nxt
            pm[yy, xx] = True
            nxt += 1
            done += 1
            break
    return image, labels, pm


class TileSource:
    """Real tiles plus an on-the-fly paste operator, seeded per step.

    ``batch(step, batch_size)`` is a pure function of ``(seed, step)``, so a
    resumed run sees exactly the batches it would have seen.
    """

    def __init__(self, tiles: list[tuple[np.ndarray, np.ndarray]], size: int, seed: int = 0, paste: str = "auto"):
        if len(tiles) < 3:
            raise InputError(f"the GAN needs at least 3 training tiles, got {len(tiles)}")
        if check_int("size", size, 32, error=InputError) % 4:
            raise InputError(f"size must be a multiple of 4 and ≥ 32, got {size}")
        small = [t[0].shape[:2] for t in tiles if min(t[0].shape[:2]) < size]
        if small:
            raise InputError(f"--size {size} is larger than some tiles (e.g. {small[0]})")
        self.tiles = tiles
        self.size = size
        self.seed = int(seed)
        check_choice("paste", paste, ("auto", "insmix", "simple"), error=InputError)
        if paste == "auto":
            paste = "insmix" if insmix_available() else "simple"
        self.paste = paste
        self._bank = None
        if paste == "insmix":
            from ..bank import InstanceBank
            from ..config import InsMixConfig

            self._bank = InstanceBank.from_samples(tiles, on_invalid="skip", progress=False)
            self._config = InsMixConfig(background=False)

    @classmethod
    def from_spec(cls, data: str, size: int, seed: int = 0, n_synthetic: int = 64, paste: str = "auto",
                  stain_jitter: float | None = None) -> "TileSource":
        """``data`` is a directory or one of :data:`SYNTHETIC_SPECS`.

        * ``"synthetic"``: ``n_synthetic`` tiles of :class:`SyntheticNuclei` (one stain, per-tile jitter);
        * ``"synthetic-two-stain"``: ``n_synthetic`` tiles alternating between the reference stain
          and :data:`OTHER_STAIN` (:func:`two_stain_tiles`), so about half of the pasted templates
          come from a tile of the other stain — the situation the smooth-GAN is for.
        """
        if data in SYNTHETIC_SPECS:
            kw = {} if stain_jitter is None else {"stain_jitter": stain_jitter}
            if data == "synthetic-two-stain":
                tiles, _ = two_stain_tiles(n_synthetic, size, seed=seed, **kw)
            else:
                from ..data.synthetic import SyntheticNuclei

                ds = SyntheticNuclei(seed=seed, size=size, length=n_synthetic, **kw)
                tiles = [ds[i] for i in range(len(ds))]
        else:
            tiles = load_tiles_dir(data)
        return cls(tiles, size=size, seed=seed, paste=paste)

    def __len__(self) -> int:
        return len(self.tiles)

    def _crop(self, k: int, rng: np.random.Generator):
        img, lab = self.tiles[k]
        H, W = lab.shape
        y = int(rng.integers(0, H - self.size + 1))
        x = int(rng.integers(0, W - self.size + 1))
        return img[y:y + self.size, x:x + self.size], lab[y:y + self.size, x:x + self.size]

    def pasted(self, k: int, rng: np.random.Generator, index: int):
        """(u uint8 H×W×3, paste_mask bool, original_mask bool) for tile ``k``."""
        img, lab = self._crop(k, rng)
        if self.paste == "insmix":
            from ..core import insmix

            res = insmix(img, lab, self._bank, self._config, seed=int(rng.integers(2**63)), index=index)
            u, labels, pm = np.asarray(res.image), np.asarray(res.labels), np.asarray(res.paste_mask, bool)
        else:
            donor = int(rng.integers(len(self.tiles) - 1))
            donor += donor >= k
            dimg, dlab = self._crop(donor, rng)
            n_orig = len(np.unique(lab)) - 1
            u, labels, pm = simple_paste(img, lab, dimg, dlab, rng, max_pastes=max(1, n_orig // 2))
        return u, pm, (labels > 0) & ~pm

    def batch(self, step: int, batch_size: int) -> PastedBatch:
        rng = np.random.default_rng([self.seed, 7, int(step)])
        n = len(self.tiles)
        a = rng.integers(0, n, batch_size)
        p = (a + rng.integers(1, n, batch_size)) % n  # positive ≠ anchor
        c = rng.integers(0, n, batch_size)
        xa = np.stack([self._crop(int(k), rng)[0] for k in a])
        xp = np.stack([self._crop(int(k), rng)[0] for k in p])
        us, pms, oms = zip(*(self.pasted(int(k), rng, index=j) for j, k in enumerate(c)))
        return PastedBatch(_to_unit(xa), _to_unit(xp), _to_unit(np.stack(us)),
                           torch.from_numpy(np.stack(pms)[:, None].astype(np.float32)),
                           torch.from_numpy(np.stack(oms)[:, None].astype(np.float32)))


def _to_unit(images: np.ndarray) -> torch.Tensor:
    """N×H×W×3 uint8 → N×3×H×W float in [−1, 1]."""
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


#: A second stain for "tiles of another stain" (Ruifrok & Johnston's H&E vectors,
#: a different scanner/lab than :data:`insmix_fast.data.synthetic.HE_REFERENCE`),
#: with the hematoxylin vector pushed towards blue-grey to widen the gap.
OTHER_STAIN = np.array([[0.35, 0.55, 0.76], [0.07, 0.99, 0.11]], dtype=np.float64)


def two_stain_tiles(n: int, size: int, seed: int = 0, stain_b: np.ndarray | None = None,
                    **synthetic_kwargs) -> tuple[list[tuple[np.ndarray, np.ndarray]], np.ndarray]:
    """``n`` synthetic tiles, alternately of the reference stain (0) and of ``stain_b`` (1).

    Returns ``(tiles, stain_ids)``. Used by the tests and by ``docs/gan_colour_gap.py``.
    """
    from ..data.synthetic import SyntheticNuclei

    stain_b = OTHER_STAIN if stain_b is None else np.asarray(stain_b, np.float64)
    a = SyntheticNuclei(seed=seed, size=size, length=(n + 1) // 2, **synthetic_kwargs)
    b = SyntheticNuclei(seed=seed + 1, size=size, length=n // 2, stain=stain_b, **synthetic_kwargs)
    tiles, ids = [], []
    for i in range(n):
        tiles.append(a[i // 2] if i % 2 == 0 else b[i // 2])
        ids.append(i % 2)
    return tiles, np.array(ids)
