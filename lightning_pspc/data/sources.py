"""Where raw images come from: IDX files, scikit-learn digits, Hugging Face ``datasets``.

Every source returns the whole data set as one uint8 tensor ``[M, C, H, W]`` (``C`` = 1 or 3),
loaded on the first ``load()`` call and cached; preprocessing lives in the data module.
"""

from __future__ import annotations

import abc
import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from . import hub

FASHION_MNIST_ROOT = "/usr/share/datasets/fashion-mnist"
_IDX_STEMS = {"train": "train-images", "test": "t10k-images"}
_OFFLINE_ALTERNATIVES = (
    "a folder written by Dataset.save_to_disk / DatasetDict.save_to_disk "
    "(HFSource(path='/data/cifar10_disk')), an image folder (HFSource(path='/data/imgs')), "
    "parquet file(s) (HFSource(path='/data/cifar10/train-*.parquet')), "
    "IDXSource() for Fashion-MNIST (apt-get install dataset-fashion-mnist) or DigitsSource()"
)


class ImageSource(abc.ABC):
    """A data set of raw images; ``load()`` returns uint8 ``[M, C, H, W]``, cached."""

    _images: Tensor | None = None

    def load(self) -> Tensor:
        """All images as uint8 ``[M, C, H, W]`` with ``C`` in {1, 3}; read once, then cached."""
        if self._images is None:
            self._images = self._read()
        return self._images

    @abc.abstractmethod
    def _read(self) -> Tensor:
        """Read the images from storage: uint8 ``[M, C, H, W]``."""

    @abc.abstractmethod
    def describe(self) -> str:
        """Short human-readable name for logs and error messages."""

    def __repr__(self) -> str:
        return self.describe()


class TensorSource(ImageSource):
    """Images already in memory (tests, notebooks): uint8 ``[M, C, H, W]``."""

    def __init__(self, images: Tensor, name: str = "tensor") -> None:
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(
                f"TensorSource needs uint8 [M, C, H, W] with C in {{1, 3}}, got "
                f"{images.dtype} {tuple(images.shape)}."
            )
        self.images, self.name = images, name

    def _read(self) -> Tensor:
        return self.images

    def describe(self) -> str:
        return f"TensorSource({self.name}, {tuple(self.images.shape)})"


class IDXSource(ImageSource):
    """MNIST-style IDX image files (plain or ``.gz``), e.g. the Debian ``dataset-fashion-mnist``.

    ``split="train"`` reads ``train-images-idx3-ubyte[.gz]``, ``"test"`` reads
    ``t10k-images-idx3-ubyte[.gz]`` in ``root``.
    """

    def __init__(self, root: str = FASHION_MNIST_ROOT, split: str = "train") -> None:
        if split not in _IDX_STEMS:
            raise ValueError(f"IDXSource split={split!r} is not valid; use 'train' or 'test'.")
        self.root, self.split = root, split

    def describe(self) -> str:
        return f"IDXSource(root={self.root!r}, split={self.split!r})"

    def file(self) -> Path:
        """The IDX file for this split (plain preferred over ``.gz``)."""
        root, stem = Path(self.root).expanduser(), _IDX_STEMS[self.split]
        if not root.is_dir():
            raise FileNotFoundError(
                f"IDX folder {str(root)!r} does not exist. For Fashion-MNIST run "
                f"`apt-get install dataset-fashion-mnist` (files in {FASHION_MNIST_ROOT}), or "
                f"point IDXSource(root=...) at a folder holding {stem}-idx3-ubyte[.gz]."
            )
        for name in (f"{stem}-idx3-ubyte", f"{stem}-idx3-ubyte.gz", f"{stem}.idx3-ubyte"):
            if (root / name).is_file():
                return root / name
        present = sorted(p.name for p in root.iterdir())
        raise FileNotFoundError(
            f"no {stem}-idx3-ubyte[.gz] in {str(root)!r} (found: {present}); point "
            f"IDXSource(root=...) at the folder holding the {self.split} split."
        )

    def _read(self) -> Tensor:
        path = self.file()
        opener = gzip.open if path.suffix == ".gz" else open
        try:
            with opener(path, "rb") as f:
                data = f.read()
        except (OSError, EOFError) as err:
            raise ValueError(f"cannot read IDX file {str(path)!r}: {err}") from err
        return read_idx_images(data, str(path))


def read_idx_images(data: bytes, name: str = "<bytes>") -> Tensor:
    """Parse an IDX3 uint8 image file (LeCun's MNIST format) -> uint8 ``[M, 1, H, W]``.

    Header: two zero bytes, type code 0x08 (unsigned byte), number of dimensions (3), then the
    dimensions ``M, H, W`` as big-endian int32, then ``M * H * W`` pixel bytes.
    """
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08 or data[3] != 3:
        raise ValueError(
            f"{name!r} is not an IDX3 uint8 image file (magic bytes {data[:4].hex() or 'empty'}, "
            f"expected 00000803); the file is corrupt or not IDX: re-download it or reinstall "
            f"dataset-fashion-mnist."
        )
    if len(data) < 16:
        raise ValueError(
            f"{name!r}: truncated IDX header ({len(data)} bytes); the file is corrupt."
        )
    count, height, width = (int.from_bytes(data[i : i + 4], "big") for i in (4, 8, 12))
    expected = 16 + count * height * width
    if len(data) != expected:
        raise ValueError(
            f"{name!r}: IDX header says {count}x{height}x{width} images ({expected} bytes) but "
            f"the file has {len(data)} bytes; the file is corrupt or truncated."
        )
    pixels = np.frombuffer(data, dtype=np.uint8, offset=16).reshape(count, 1, height, width)
    return torch.from_numpy(pixels.copy())


class DigitsSource(ImageSource):
    """scikit-learn's bundled digits: 1797 grey 8x8 images, values 0..16 rescaled to 0..255."""

    def describe(self) -> str:
        return "DigitsSource()"

    def _read(self) -> Tensor:
        from sklearn.datasets import load_digits

        images = load_digits().images  # [1797, 8, 8] float, 0..16
        return torch.from_numpy(np.rint(images * (255.0 / 16.0)).astype(np.uint8)).unsqueeze(1)


class HFSource(ImageSource):
    """Images from Hugging Face ``datasets``: a hub id or a local copy in any common layout.

    ``path`` may be a hub id (``"uoft-cs/cifar10"``), a ``save_to_disk`` folder, an image folder,
    or parquet file(s) / a folder of parquet files. The image column is the first
    ``datasets.Image`` column unless ``image_column`` names it. ``resolution`` resizes every
    image to ``resolution x resolution`` on load (needed when the sizes differ).
    Offline (``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` or hub unreachable), a hub id that is
    not in the local cache fails at once.
    """

    def __init__(
        self,
        path: str,
        split: str = "train",
        image_column: str | None = None,
        name: str | None = None,
        resolution: int | None = None,
        cache_dir: str | None = None,
    ) -> None:
        if resolution is not None and resolution < 1:
            raise ValueError(f"HFSource resolution={resolution} must be >= 1 (or None).")
        self.path, self.split, self.image_column = path, split, image_column
        self.name, self.resolution, self.cache_dir = name, resolution, cache_dir

    def describe(self) -> str:
        return f"HFSource(path={self.path!r}, split={self.split!r})"

    def _read(self) -> Tensor:
        dataset = self._load_dataset()
        column = self._find_image_column(dataset)
        return self._decode(dataset, column)

    def _load_dataset(self):  # -> datasets.Dataset
        import datasets

        local = Path(self.path).expanduser()
        if local.is_dir():
            return self._load_local_dir(local)
        if local.is_file() or (("*" in self.path) and local.parent.is_dir()):
            files = str(local) if local.is_file() else self.path
            return datasets.load_dataset(
                "parquet",
                data_files={self.split: files},
                split=self.split,
                cache_dir=self.cache_dir,
            )
        if self.path.startswith(("/", ".", "~")) or self.path.endswith((".parquet", ".arrow")):
            raise FileNotFoundError(
                f"HFSource path {self.path!r} does not exist; give an existing save_to_disk "
                f"folder, image folder or parquet file(s), or a Hugging Face hub id."
            )
        return self._load_hub()

    def _load_local_dir(self, folder: Path):  # -> datasets.Dataset
        import datasets

        if (folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file():
            loaded = datasets.load_from_disk(str(folder))
            if isinstance(loaded, datasets.DatasetDict):
                if self.split not in loaded:
                    raise ValueError(
                        f"split={self.split!r} is not in {str(folder)!r}; available splits: "
                        f"{sorted(loaded)}."
                    )
                return loaded[self.split]
            return loaded
        builder = "parquet" if any(folder.rglob("*.parquet")) else "imagefolder"
        return datasets.load_dataset(
            builder, data_dir=str(folder), split=self.split, cache_dir=self.cache_dir
        )

    def _load_hub(self):  # -> datasets.Dataset
        import datasets

        offline = hub.offline_flagged() or not hub.hub_reachable()
        if not offline:
            return datasets.load_dataset(
                self.path, name=self.name, split=self.split, cache_dir=self.cache_dir
            )
        try:
            with hub.forced_offline():
                return datasets.load_dataset(
                    self.path, name=self.name, split=self.split, cache_dir=self.cache_dir
                )
        except OSError as err:  # ConnectionError / FileNotFoundError: not in the local cache
            raise ConnectionError(
                f"Hugging Face hub data set {self.path!r} is not in the local cache and the hub "
                f"is offline or unreachable. Use a local copy instead: {_OFFLINE_ALTERNATIVES}."
            ) from err

    def _find_image_column(self, dataset) -> str:
        import datasets

        features = dataset.features
        if self.image_column is not None:
            if self.image_column not in features:
                raise ValueError(
                    f"image_column={self.image_column!r} is not a column of {self.describe()}; "
                    f"available columns: {list(features)}."
                )
            return self.image_column
        for column, feature in features.items():
            if isinstance(feature, datasets.Image):
                return column
        raise ValueError(
            f"{self.describe()} has no datasets.Image column; name the image column with "
            f"image_column=... (available columns: {list(features)})."
        )

    def _decode(self, dataset, column: str) -> Tensor:
        dataset = dataset.select_columns([column]).with_format(None)  # PIL images, any saved format
        arrays = list(self._iter_arrays(dataset, column))
        if not arrays:
            raise ValueError(f"{self.describe()} holds no images.")
        sizes = {a.shape[:2] for a in arrays}
        if len(sizes) > 1:
            shown = ", ".join(f"{h}x{w}" for h, w in sorted(sizes)[:4])
            raise ValueError(
                f"{self.describe()} has images of differing sizes ({shown}); pass "
                f"HFSource(..., resolution=R) to resize all of them to RxR on load (the data "
                f"module's resolution= applies only after loading)."
            )
        if len({a.shape[2] for a in arrays}) > 1:  # mixed grey and colour: make all RGB
            arrays = [np.repeat(a, 3, axis=2) if a.shape[2] == 1 else a for a in arrays]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()

    def _iter_arrays(self, dataset, column: str) -> Iterator[np.ndarray]:
        """Decoded images as uint8 ``[H, W, C]`` arrays (grey -> C=1, everything else RGB)."""
        from PIL import Image

        for batch in dataset.iter(batch_size=1000):
            for image in batch[column]:
                if not isinstance(image, Image.Image):
                    raise ValueError(
                        f"column {column!r} of {self.describe()} holds {type(image).__name__}, "
                        f"not images; name the image column with image_column=..."
                    )
                mode = "L" if image.mode in ("1", "L", "LA", "I", "I;16", "F") else "RGB"
                if image.mode != mode:
                    image = image.convert(mode)
                if self.resolution is not None:
                    size = (self.resolution, self.resolution)
                    image = image.resize(size, Image.Resampling.BILINEAR)
                array = np.asarray(image, dtype=np.uint8)
                yield array[:, :, None] if array.ndim == 2 else array
