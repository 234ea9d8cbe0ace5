"""LightningDataModule: a deterministic N-image training set plus held-out images."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Literal

import lightning
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from .sources import IDXSource, ImageSource
from .transforms import convert_channels, resize_images, select_indices, to_signed_unit


class ImageTensorDataset(Dataset):
    """Rows of a float ``[N, C, H, W]`` tensor, optionally x-flipped with probability 1/2 each.

    ``__getitems__`` fetches a whole batch with one indexing op, so the loader's collate gets a
    ready ``[B, C, H, W]`` tensor.
    """

    def __init__(self, images: Tensor, xflip: bool = False) -> None:
        self.images, self.xflip = images, xflip

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: list[int]) -> Tensor:
        batch = self.images[torch.as_tensor(indices, dtype=torch.long)]  # [B, C, H, W]
        if self.xflip:
            flip = torch.rand(batch.shape[0]) < 0.5  # [B]
            batch[flip] = batch[flip].flip(-1)
        return batch


class EpochSampler(DistributedSampler):
    """``epoch_length`` indices per epoch in total, split over ``num_replicas`` processes.

    The epoch is a sequence of fresh random permutations of the ``N`` indices, cut at
    ``epoch_length`` (each index appears ``epoch_length / N`` times, +- 1); process ``rank`` takes
    every ``num_replicas``-th element of it from position ``rank``, so the processes see disjoint
    parts of one epoch. The length is rounded up to a multiple of ``num_replicas`` (DDP needs
    equal shares). The order depends only on ``seed`` and the epoch set by ``set_epoch`` (the
    Trainer calls it), so a resumed run replays it.

    Being a ``DistributedSampler``, Lightning keeps it under DDP instead of replacing it with one
    over the ``N`` images (which would shrink the epoch to ``N`` samples).
    """

    def __init__(
        self,
        dataset: Dataset,
        epoch_length: int,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
    ) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed)
        self.num_samples = math.ceil(epoch_length / num_replicas)  # per process
        self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        gen = torch.Generator().manual_seed(hash((self.seed, self.epoch)) & (2**63 - 1))
        cycles = math.ceil(self.total_size / n)
        order = torch.cat([torch.randperm(n, generator=gen) for _ in range(cycles)])
        return iter(order[self.rank : self.total_size : self.num_replicas].tolist())


def collate_images(batch: Tensor | list[Tensor]) -> Tensor:
    """Pass a batched ``[B, C, H, W]`` tensor through; stack a list of ``[C, H, W]``."""
    return batch if isinstance(batch, Tensor) else torch.stack(batch)


class ImageDataModule(lightning.LightningDataModule):
    """``num_train`` training images (nested across N for one seed) and ``num_heldout`` held out.

    Images come from ``source`` (default: Fashion-MNIST IDX files), are mapped to float32 in
    [-1, 1], converted to ``channels`` and resized or padded to ``resolution``. The held-out
    images are carved out of ``source`` (:func:`~lightning_pspc.data.select_indices`), or, with
    ``heldout_source`` (e.g. the test split, for networks trained on a whole train split), are
    ``num_heldout`` images of it chosen by ``seed`` while every image of ``source`` can train. Training batches
    are plain float32 ``[B, C, H, W]`` tensors, shuffled, randomly x-flipped when ``xflip``; an
    epoch is ``epoch_length`` samples (the N images cycled) so epochs compare across N.
    Data are loaded lazily in ``setup``.
    """

    def __init__(
        self,
        source: ImageSource | None = None,
        num_train: int | None = 1024,
        subset: Literal["a", "b"] | None = None,
        resolution: int | None = None,
        resize_mode: Literal["resize", "pad"] = "resize",
        channels: int | None = None,
        xflip: bool = False,
        num_heldout: int = 256,
        seed: int = 0,
        batch_size: int = 64,
        epoch_length: int | None = None,
        num_workers: int = 0,
        heldout_source: ImageSource | None = None,
    ) -> None:
        super().__init__()
        _check(num_train is None or num_train >= 1, f"num_train={num_train} must be >= 1 or None")
        _check(subset in (None, "a", "b"), f"subset={subset!r} must be None, 'a' or 'b'")
        _check(resolution is None or resolution >= 1, f"resolution={resolution} must be >= 1")
        _check(resize_mode in ("resize", "pad"), f"resize_mode={resize_mode!r}: use resize/pad")
        _check(channels in (None, 1, 3), f"channels={channels} must be 1, 3 or None (native)")
        _check(num_heldout >= 0, f"num_heldout={num_heldout} must be >= 0")
        _check(batch_size >= 1, f"batch_size={batch_size} must be >= 1")
        _check(epoch_length is None or epoch_length >= 1, f"epoch_length={epoch_length} >= 1")
        _check(num_workers >= 0, f"num_workers={num_workers} must be >= 0")
        self.source = source if source is not None else IDXSource()
        self.heldout_source = heldout_source
        self.num_train, self.subset, self.seed = num_train, subset, seed
        self.resolution, self.resize_mode, self.channels = resolution, resize_mode, channels
        self.xflip, self.num_heldout = xflip, num_heldout
        self.batch_size, self.epoch_length, self.num_workers = batch_size, epoch_length, num_workers
        self._train: Tensor | None = None
        self._heldout: Tensor | None = None

    def setup(self, stage: str | None = None) -> None:
        """Load the source, select the images and preprocess them; runs once."""
        if self._train is not None:
            return
        raw = self.source.load()  # uint8 [M, C, H, W]
        carved = 0 if self.heldout_source is not None else self.num_heldout
        try:
            train_idx, heldout_idx = select_indices(
                raw.shape[0], self.num_train, carved, self.subset, self.seed
            )
        except ValueError as err:
            raise ValueError(f"{self.source.describe()}: {err}") from None
        self._train = self._preprocess(raw[train_idx])
        if self.heldout_source is None:
            self._heldout = self._preprocess(raw[heldout_idx])
        else:
            self._heldout = self._preprocess(self._other_heldout())
            if self._heldout.shape[1:] != self._train.shape[1:]:
                raise ValueError(
                    f"{self.heldout_source.describe()} gives images {list(self._heldout.shape[1:])}"
                    f" but {self.source.describe()} {list(self._train.shape[1:])}; set channels "
                    "and resolution so that both match."
                )

    def _other_heldout(self) -> Tensor:
        """``num_heldout`` images of ``heldout_source``: the first of a permutation seeded by
        ``seed`` (uint8 ``[num_heldout, C, H, W]``)."""
        raw = self.heldout_source.load()
        if self.num_heldout > raw.shape[0]:
            raise ValueError(
                f"{self.heldout_source.describe()}: num_heldout={self.num_heldout} but it holds "
                f"{raw.shape[0]} images; lower num_heldout."
            )
        order = torch.randperm(raw.shape[0], generator=torch.Generator().manual_seed(self.seed))
        return raw[order[: self.num_heldout]]

    def _preprocess(self, raw: Tensor) -> Tensor:
        """uint8 ``[n, C, H, W]`` -> float32 ``[n, channels, resolution, resolution]``."""
        images = convert_channels(to_signed_unit(raw), self.channels)
        return resize_images(images, self.resolution, self.resize_mode).contiguous()

    def train_images(self) -> Tensor:
        """The N training images, float32 ``[N, C, H, W]`` in [-1, 1], no flipped copies."""
        self.setup()
        return self._train

    def heldout_images(self) -> Tensor:
        """The held-out images, float32 ``[num_heldout, C, H, W]`` in [-1, 1]."""
        self.setup()
        return self._heldout

    def reference_images(self) -> Tensor:
        """The training set as the network sees it, for closed-form denoisers.

        float32 ``[N, C, H, W]``, or ``[2N, C, H, W]`` with the x-flipped copies appended when
        ``xflip`` (reference code of Niedoba et al. / EDM augments with x-flips).
        """
        train = self.train_images()
        return torch.cat([train, train.flip(-1)]) if self.xflip else train

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` after preprocessing (loads the data if needed)."""
        return tuple(self.train_images().shape[1:])

    def train_dataloader(self) -> DataLoader:
        """Shuffled float32 ``[B, C, H, W]`` batches; ``epoch_length`` samples per epoch in total.

        Under DDP every process loads its own share of the epoch (:class:`EpochSampler`), so an
        epoch is ``epoch_length`` samples whatever the number of processes.
        """
        dataset = ImageTensorDataset(self.train_images(), self.xflip)
        world, rank = _process_group(self.trainer)
        sampler = EpochSampler(
            dataset, self.epoch_length or len(dataset), world, rank, seed=_order_seed(world)
        )
        return self._loader(dataset, sampler=sampler)

    def val_dataloader(self) -> DataLoader | list:
        """Held-out float32 ``[B, C, H, W]`` batches, in order, no flips ([] when none)."""
        heldout = self.heldout_images()
        if heldout.shape[0] == 0:
            return []
        return self._loader(ImageTensorDataset(heldout), shuffle=False)

    def _loader(self, dataset: Dataset, **kwargs) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=self.batch_size,
            num_workers=self.num_workers,
            collate_fn=collate_images,
            persistent_workers=self.num_workers > 0,
            **kwargs,
        )


def _process_group(trainer: lightning.Trainer | None) -> tuple[int, int]:
    """``(world size, global rank)`` of the Trainer (or of torch.distributed, or ``(1, 0)``)."""
    if trainer is not None:
        return trainer.world_size, trainer.global_rank
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


def _order_seed(world_size: int) -> int:
    """Seed of the training order: ``seed_everything``'s (shared by the DDP processes).

    Without one, a random seed in a single process; under DDP 0, as Lightning's own sampler.
    """
    seed = os.environ.get("PL_GLOBAL_SEED")
    if seed is not None:
        return int(seed)
    return int(torch.randint(2**62, ())) if world_size == 1 else 0


def _check(ok: bool, message: str) -> None:
    if not ok:
        raise ValueError(f"ImageDataModule: {message}.")
