"""Shared fixtures: small local copies of an image data set in the hub (CIFAR-10) schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lightning_pspc.data import DigitsSource


@pytest.fixture(scope="session")
def rgb_images() -> torch.Tensor:
    """20 distinct RGB 8x8 images, uint8 [20, 3, 8, 8]: digits with differently scaled channels."""
    grey = DigitsSource().load()[:20].int()  # [20, 1, 8, 8]
    rgb = torch.cat([grey, 255 - grey, (grey * 7) % 256], dim=1)
    return rgb.to(torch.uint8)


@pytest.fixture(scope="session")
def hub_schema_dataset(rgb_images):
    """A ``datasets.Dataset`` with features ``{"img": Image(), "label": ClassLabel}``."""
    import datasets
    from PIL import Image

    features = datasets.Features(
        {"img": datasets.Image(), "label": datasets.ClassLabel(names=[str(i) for i in range(10)])}
    )
    pil = [Image.fromarray(x.permute(1, 2, 0).numpy(), mode="RGB") for x in rgb_images]
    labels = [i % 10 for i in range(len(pil))]
    return datasets.Dataset.from_dict({"img": pil, "label": labels}, features=features)


@pytest.fixture(scope="session")
def local_copies(tmp_path_factory, hub_schema_dataset, rgb_images) -> dict[str, Path]:
    """The same 20 images as save_to_disk folders (Dataset, DatasetDict), parquet, imagefolder."""
    import datasets
    from PIL import Image

    root = tmp_path_factory.mktemp("hf")
    hub_schema_dataset.save_to_disk(str(root / "disk"))
    split = datasets.DatasetDict(
        {"train": hub_schema_dataset, "test": hub_schema_dataset.select([0, 1])}
    )
    split.save_to_disk(str(root / "disk_dict"))
    (root / "parquet").mkdir()
    hub_schema_dataset.to_parquet(str(root / "parquet" / "train-00000.parquet"))
    folder = root / "imagefolder" / "train"
    folder.mkdir(parents=True)
    for i, image in enumerate(rgb_images):
        Image.fromarray(image.permute(1, 2, 0).numpy(), mode="RGB").save(folder / f"{i:03d}.png")
    return {
        "disk": root / "disk",
        "disk_dict": root / "disk_dict",
        "parquet_dir": root / "parquet",
        "parquet_file": root / "parquet" / "train-00000.parquet",
        "imagefolder": root / "imagefolder",
        "cache": root / "cache",
    }
