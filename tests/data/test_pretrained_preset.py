"""The CIFAR-10 preset of networks trained elsewhere: the whole train split with x-flips as the
references' set, held-out images from the test split; loaded offline from a hub-schema copy."""

from __future__ import annotations

import pytest
import torch

from lightning_pspc.data import ImageDataModule, TensorSource
from lightning_pspc.runs import build_datamodule, data_preset_section
from tests.helpers import REPO

PRESET = REPO / "configs" / "data_cifar10_pretrained.yaml"


def _rows(images: torch.Tensor) -> set[bytes]:
    return {x.numpy().tobytes() for x in images}


def test_the_preset_loads_offline_from_a_local_copy(tmp_path, hub_schema_dataset, rgb_images):
    import datasets

    splits = datasets.DatasetDict(
        {
            "train": hub_schema_dataset.select(range(12)),
            "test": hub_schema_dataset.select(range(12, 20)),
        }
    )
    splits.save_to_disk(str(tmp_path / "cifar_like"))
    section = data_preset_section(PRESET)
    assert section["source"]["init_args"]["path"] == "uoft-cs/cifar10"
    assert (section["num_train"], section["xflip"]) == (None, True)
    assert section["heldout_source"]["init_args"]["split"] == "test"
    for key in ("source", "heldout_source"):  # the hub id replaced by the local copy
        section[key]["init_args"]["path"] = str(tmp_path / "cifar_like")
    section["num_heldout"] = 5
    dm = build_datamodule(section)
    expected = rgb_images.float() / 127.5 - 1
    assert _rows(dm.train_images()) == _rows(expected[:12])  # every training image, none held out
    assert _rows(dm.heldout_images()) <= _rows(expected[12:]) and len(dm.heldout_images()) == 5
    reference = dm.reference_images()
    assert _rows(reference) == _rows(expected[:12]) | _rows(expected[:12].flip(-1))


def test_held_out_images_from_another_source_are_seeded_and_checked():
    gen = torch.Generator().manual_seed(0)
    train = torch.randint(0, 256, (6, 1, 4, 4), generator=gen, dtype=torch.uint8)
    other = torch.randint(0, 256, (9, 1, 4, 4), generator=gen, dtype=torch.uint8)

    def module(**kw) -> ImageDataModule:
        return ImageDataModule(TensorSource(train), heldout_source=TensorSource(other), **kw)

    a, b = module(num_train=None, num_heldout=4), module(num_train=None, num_heldout=4)
    assert a.train_images().shape[0] == 6
    assert torch.equal(a.heldout_images(), b.heldout_images())
    order = torch.randperm(9, generator=torch.Generator().manual_seed(0))[:4]
    assert torch.equal(a.heldout_images(), other[order].float() / 127.5 - 1)
    with pytest.raises(ValueError, match="num_heldout=10 but it holds 9 images"):
        module(num_train=None, num_heldout=10).setup()
    rgb = TensorSource(torch.zeros(3, 3, 4, 4, dtype=torch.uint8))
    with pytest.raises(ValueError, match="set channels"):
        ImageDataModule(
            TensorSource(train), num_train=None, heldout_source=rgb, num_heldout=2
        ).setup()
