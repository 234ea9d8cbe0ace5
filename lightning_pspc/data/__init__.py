"""Image data: raw sources (IDX, digits, Hugging Face) and the Lightning data module."""

from .datamodule import EpochSampler, ImageDataModule, ImageTensorDataset, collate_images
from .sources import (
    FASHION_MNIST_ROOT,
    DigitsSource,
    HFSource,
    IDXSource,
    ImageSource,
    TensorSource,
    read_idx_images,
)
from .transforms import convert_channels, resize_images, select_indices, to_signed_unit

__all__ = [
    "FASHION_MNIST_ROOT",
    "DigitsSource",
    "EpochSampler",
    "HFSource",
    "IDXSource",
    "ImageDataModule",
    "ImageSource",
    "ImageTensorDataset",
    "TensorSource",
    "collate_images",
    "convert_channels",
    "read_idx_images",
    "resize_images",
    "select_indices",
    "to_signed_unit",
]
