"""ImageDataModule: nested deterministic selection, preprocessing, loaders, errors."""

from __future__ import annotations

import pytest
import torch

from lightning_pspc.data import (
    DigitsSource,
    EpochSampler,
    ImageDataModule,
    TensorSource,
    convert_channels,
    select_indices,
)


@pytest.fixture(scope="module")
def digits() -> DigitsSource:
    source = DigitsSource()
    source.load()
    return source


def _module(source, **kwargs) -> ImageDataModule:
    dm = ImageDataModule(source=source, **kwargs)
    dm.setup("fit")
    return dm


def test_selection_is_nested_deterministic_and_disjoint():
    small_train, small_held = select_indices(1000, 64, 100, None, seed=3)
    big_train, big_held = select_indices(1000, 256, 100, None, seed=3)
    assert torch.equal(big_train[:64], small_train) and torch.equal(small_held, big_held)
    assert len(set(big_train.tolist()) & set(big_held.tolist())) == 0
    a, held_a = select_indices(1000, None, 100, "a", seed=3)
    b, held_b = select_indices(1000, None, 100, "b", seed=3)
    assert torch.equal(held_a, big_held) and torch.equal(held_b, big_held)
    assert len(a) == len(b) == 450 and len(set(a.tolist()) & set(b.tolist())) == 0
    assert set(a.tolist()) | set(b.tolist()) | set(big_held.tolist()) == set(range(1000))
    assert torch.equal(select_indices(1000, 32, 100, "a", seed=3)[0], a[:32])
    assert not torch.equal(select_indices(1000, 64, 100, None, seed=4)[0], small_train)


def test_twin_subsets_are_the_halves_of_one_2n_set_and_fail_alike():
    # an odd pool (1000 - 101 = 899 images): both halves hold 449, its last image is in neither
    for n in (1, 64, 449):
        a = select_indices(1000, n, 101, "a", seed=2)[0].tolist()
        b = select_indices(1000, n, 101, "b", seed=2)[0].tolist()
        both = select_indices(1000, 2 * n, 101, None, seed=2)[0].tolist()
        assert len(a) == len(b) == n and set(a) | set(b) == set(both) and len(set(both)) == 2 * n
    for subset in ("a", "b"):
        assert len(select_indices(1000, None, 101, subset, seed=2)[0]) == 449
        with pytest.raises(ValueError, match=rf"subset '{subset}' holds at most 449 images"):
            select_indices(1000, 450, 101, subset, seed=2)


def test_train_images_are_the_selected_raw_images(digits):
    dm = _module(digits, num_train=64, num_heldout=100, seed=1)
    train_idx, held_idx = select_indices(1797, 64, 100, None, seed=1)
    raw = digits.load().float() / 127.5 - 1
    assert torch.allclose(dm.train_images(), raw[train_idx])
    assert torch.allclose(dm.heldout_images(), raw[held_idx])
    assert dm.train_images().dtype == torch.float32
    assert dm.image_shape == (1, 8, 8)
    assert dm.train_images().min() == -1 and dm.train_images().max() == 1


def test_subsets_a_and_b_are_disjoint_images():
    # Distinct images (pixel value = index) so that disjoint indices mean disjoint pixels.
    index = torch.arange(300)
    ids = torch.zeros(300, 1, 2, 2, dtype=torch.uint8)
    ids[:, 0, 0, 0], ids[:, 0, 1, 1] = index % 256, index // 256
    source = TensorSource(ids)
    a = _module(source, num_train=None, subset="a", num_heldout=20).train_images()
    b = _module(source, num_train=None, subset="b", num_heldout=20).train_images()
    held = _module(source, num_train=None, subset="a", num_heldout=20).heldout_images()
    assert a.shape[0] == b.shape[0] == 140
    rows = {tuple(x.flatten().tolist()) for x in torch.cat([a, b, held])}
    assert len(rows) == 300  # a, b and the held-out images are pairwise disjoint and cover all


def test_xflip_reference_images_append_mirrors(digits):
    dm = _module(digits, num_train=10, xflip=True)
    train = dm.train_images()
    assert train.shape == (10, 1, 8, 8)
    assert torch.equal(dm.reference_images(), torch.cat([train, train.flip(-1)]))
    assert torch.equal(_module(digits, num_train=10).reference_images(), train)


def test_resize_and_pad_to_32(digits):
    native = _module(digits, num_train=8).train_images()
    resized = _module(digits, num_train=8, resolution=32).train_images()
    assert resized.shape == (8, 1, 32, 32) and resized.min() >= -1 and resized.max() <= 1
    # Bilinear 4x upsampling of a constant image stays constant; means are nearly preserved.
    assert torch.allclose(resized.mean((1, 2, 3)), native.mean((1, 2, 3)), atol=0.05)
    padded = _module(digits, num_train=8, resolution=32, resize_mode="pad").train_images()
    assert padded.shape == (8, 1, 32, 32)
    assert torch.equal(padded[:, :, 12:20, 12:20], native)
    border = torch.ones_like(padded, dtype=torch.bool)
    border[:, :, 12:20, 12:20] = False
    assert (padded[border] == -1).all()
    with pytest.raises(ValueError, match="resolution=4 is smaller than the 8x8"):
        _module(digits, num_train=8, resolution=4, resize_mode="pad")
    constant = TensorSource(torch.full((300, 1, 8, 8), 200, dtype=torch.uint8))
    up = _module(constant, num_train=4, resolution=32).train_images()
    assert torch.allclose(up, torch.full_like(up, 200 / 127.5 - 1))


def test_channel_conversion(digits):
    grey = _module(digits, num_train=8).train_images()
    rgb = _module(digits, num_train=8, channels=3).train_images()
    assert rgb.shape == (8, 3, 8, 8)
    assert all(torch.equal(rgb[:, c], grey[:, 0]) for c in range(3))
    colour = torch.zeros(1, 3, 1, 1)
    colour[0, :, 0, 0] = torch.tensor([1.0, 0.5, -1.0])
    luma = convert_channels(colour, 1)
    assert torch.allclose(luma, torch.tensor(0.299 * 1 + 0.587 * 0.5 - 0.114).view(1, 1, 1, 1))


def test_train_loader_batches_flips_and_epoch_length(digits):
    dm = _module(digits, num_train=10, xflip=True, batch_size=4, epoch_length=25)
    batches = list(dm.train_dataloader())
    assert [b.shape[0] for b in batches] == [4] * 6 + [1]
    assert all(isinstance(b, torch.Tensor) and b.dtype == torch.float32 for b in batches)
    samples = torch.cat(batches)
    assert samples.min() >= -1 and samples.max() <= 1
    reference = dm.reference_images()  # [20, 1, 8, 8]
    matches = (samples[:, None] == reference[None]).flatten(2).all(-1)  # [25, 20]
    assert matches.any(1).all()  # every sample is a training image or its mirror
    torch.manual_seed(0)
    flips = torch.cat(list(dm.train_dataloader()))
    unflipped = (flips[:, None] == reference[None, :10]).flatten(2).all(-1).any(1)
    assert 0 < unflipped.sum() < 25  # some flipped, some not
    # Without flips each image appears 2 or 3 times in an epoch of 25 (cycled permutations).
    dm_plain = _module(digits, num_train=10, batch_size=4, epoch_length=25)
    plain = torch.cat(list(dm_plain.train_dataloader()))
    counts = (plain[:, None] == dm_plain.train_images()[None]).flatten(2).all(-1).sum(0)
    assert counts.sum() == 25 and counts.min() >= 2 and counts.max() <= 3
    assert len(dm_plain.train_dataloader()) == 7
    assert len(_module(digits, num_train=10, batch_size=4).train_dataloader()) == 3


def test_epoch_sampler_splits_one_epoch_over_the_processes():
    data = list(range(10))
    single = list(EpochSampler(data, 25, seed=3))
    shares = [list(EpochSampler(data, 25, num_replicas=2, rank=r, seed=3)) for r in (0, 1)]
    assert len(single) == 25 and [len(s) for s in shares] == [13, 13]  # 25 rounded up to 26
    # the processes take alternate elements of the same cycled permutations
    merged = [i for pair in zip(*shares) for i in pair]
    assert merged[:25] == single
    counts = torch.bincount(torch.tensor(merged[:20]), minlength=10)
    assert counts.tolist() == [2] * 10  # two full permutations, then the third begins
    # the order is fixed by (seed, epoch): replayed on resume, new each epoch
    sampler = EpochSampler(data, 25, seed=3)
    sampler.set_epoch(1)
    assert list(sampler) == list(sampler) != single


def test_val_loader_is_heldout_in_order(digits):
    dm = _module(digits, num_train=16, num_heldout=10, batch_size=4, xflip=True)
    assert torch.equal(torch.cat(list(dm.val_dataloader())), dm.heldout_images())
    assert _module(digits, num_train=16, num_heldout=0).val_dataloader() == []


def test_lazy_loading_and_idempotent_setup():
    class CountingSource(TensorSource):
        reads = 0

        def _read(self):
            CountingSource.reads += 1
            return super()._read()

    source = CountingSource(torch.zeros(20, 1, 4, 4, dtype=torch.uint8))
    dm = ImageDataModule(source=source, num_train=4, num_heldout=2)
    assert CountingSource.reads == 0
    dm.setup("fit")
    first = dm.train_images()
    dm.setup("validate")
    assert dm.train_images() is first and CountingSource.reads == 1


def test_clear_errors(digits):
    with pytest.raises(ValueError, match=r"num_train=5000 .* at most 1541 images"):
        _module(digits, num_train=5000)
    with pytest.raises(ValueError, match=r"subset 'b' holds at most 770"):
        _module(digits, num_train=771, subset="b")
    with pytest.raises(ValueError, match="DigitsSource"):
        _module(digits, num_train=5000)
    for kwargs, text in [
        ({"num_train": 0}, "num_train=0"),
        ({"subset": "c"}, "subset='c'"),
        ({"channels": 2}, "channels=2"),
        ({"resolution": 0}, "resolution=0"),
        ({"resize_mode": "crop"}, "resize_mode='crop'"),
    ]:
        with pytest.raises(ValueError, match=text):
            ImageDataModule(source=digits, **kwargs)
    with pytest.raises(ValueError, match="num_heldout=1797"):
        _module(digits, num_heldout=1797)


def test_default_source_is_fashion_mnist():
    from lightning_pspc.data import FASHION_MNIST_ROOT, IDXSource

    dm = ImageDataModule()
    assert isinstance(dm.source, IDXSource) and dm.source.root == FASHION_MNIST_ROOT
    assert dm._train is None  # nothing loaded in __init__


def test_lightning_cli_config_builds_the_data(local_copies, rgb_images):
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_class_arguments(ImageDataModule, "data")
    config = parser.parse_string(
        f"""
data:
  source:
    class_path: lightning_pspc.data.HFSource
    init_args: {{path: {local_copies["disk"]}, image_column: img}}
  num_train: 8
  num_heldout: 4
  channels: 1
  resolution: 16
"""
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    dm = instantiate(config).data
    assert dm.image_shape == (1, 16, 16)
    assert dm.source.image_column == "img"


def test_trainer_consumes_the_loaders(digits):
    import lightning

    class Mean(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.mu = torch.nn.Parameter(torch.zeros(1, 8, 8))
            self.seen: list[tuple[int, ...]] = []

        def training_step(self, batch, batch_idx):
            self.seen.append(tuple(batch.shape))
            return (batch - self.mu).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val", (batch - self.mu).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    model = Mean()
    dm = ImageDataModule(source=digits, num_train=16, num_heldout=8, batch_size=8, epoch_length=40)
    trainer = lightning.Trainer(
        max_epochs=1,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(model, datamodule=dm)
    assert model.seen == [(8, 1, 8, 8)] * 5
    assert "val" in trainer.callback_metrics
