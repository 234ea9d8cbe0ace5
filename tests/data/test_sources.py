"""Image sources: exact IDX parsing, digits, Hugging Face local layouts and offline failures."""

from __future__ import annotations

import gzip
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from lightning_pspc.data import FASHION_MNIST_ROOT, DigitsSource, HFSource, IDXSource
from lightning_pspc.data import hub as hub_module

HAS_FASHION = Path(FASHION_MNIST_ROOT).is_dir()


def _idx_bytes(images: np.ndarray) -> bytes:
    """IDX3 uint8 encoding of ``images [M, H, W]`` written by hand from the format spec."""
    header = bytes([0, 0, 0x08, 3]) + b"".join(int(d).to_bytes(4, "big") for d in images.shape)
    return header + images.astype(np.uint8).tobytes()


@pytest.mark.skipif(not HAS_FASHION, reason="apt-get install dataset-fashion-mnist")
def test_fashion_mnist_train_and_test_splits():
    train = IDXSource().load()
    assert train.shape == (60000, 1, 28, 28) and train.dtype == torch.uint8
    # Fashion-MNIST's published training mean is 0.2860 of full scale.
    assert abs(train.float().mean().item() / 255 - 0.2860) < 1e-3
    test = IDXSource(split="test").load()
    assert test.shape == (10000, 1, 28, 28) and test.dtype == torch.uint8
    assert not torch.equal(train[:100], test[:100])


@pytest.mark.parametrize("compressed", [False, True])
def test_hand_written_idx_parsed_exactly(tmp_path, compressed):
    images = np.arange(3 * 2 * 4, dtype=np.uint8).reshape(3, 2, 4) * 10
    data = _idx_bytes(images)
    name = "t10k-images-idx3-ubyte" + (".gz" if compressed else "")
    (tmp_path / name).write_bytes(gzip.compress(data) if compressed else data)
    source = IDXSource(root=str(tmp_path), split="test")
    loaded = source.load()
    assert loaded.shape == (3, 1, 2, 4) and loaded.dtype == torch.uint8
    assert torch.equal(loaded[:, 0], torch.from_numpy(images))
    assert source.load() is loaded  # cached


def test_corrupt_idx_files_raise_clear_errors(tmp_path):
    good = _idx_bytes(np.zeros((2, 3, 3), dtype=np.uint8))
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(b"\x12\x34" + good[2:])
    with pytest.raises(ValueError, match="magic bytes 1234"):
        IDXSource(root=str(tmp_path)).load()
    path.write_bytes(good[:-1])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        IDXSource(root=str(tmp_path)).load()
    path.unlink()
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="cannot read IDX file"):
        IDXSource(root=str(tmp_path)).load()


def test_missing_idx_folder_and_bad_split(tmp_path):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as err:
        IDXSource(root=str(tmp_path / "nowhere")).load()
    assert "IDXSource(root=...)" in str(err.value)
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        IDXSource(root=str(tmp_path)).load()
    with pytest.raises(ValueError, match="split='val'"):
        IDXSource(split="val")


def test_digits_shape_and_range():
    from sklearn.datasets import load_digits

    digits = DigitsSource().load()
    assert digits.shape == (1797, 1, 8, 8) and digits.dtype == torch.uint8
    assert digits.min() == 0 and digits.max() == 255
    expected = np.rint(load_digits().images * 255 / 16).astype(np.uint8)
    assert torch.equal(digits[:, 0], torch.from_numpy(expected))


@pytest.mark.parametrize("layout", ["disk", "parquet_dir", "parquet_file", "imagefolder"])
def test_hf_local_layouts_load_exact_pixels(local_copies, rgb_images, layout):
    source = HFSource(str(local_copies[layout]), cache_dir=str(local_copies["cache"]))
    loaded = source.load()
    assert loaded.dtype == torch.uint8 and torch.equal(loaded, rgb_images)


def test_hf_dataset_dict_split_and_named_column(local_copies, rgb_images):
    path = str(local_copies["disk_dict"])
    test = HFSource(path, split="test", image_column="img").load()
    assert torch.equal(test, rgb_images[:2])
    with pytest.raises(ValueError, match=r"available splits: \['test', 'train'\]"):
        HFSource(path, split="validation").load()


def test_hf_wrong_image_column_lists_columns(local_copies):
    path = str(local_copies["disk"])
    with pytest.raises(ValueError, match=r"image_column='image'.*\['img', 'label'\]"):
        HFSource(path, image_column="image").load()
    with pytest.raises(ValueError, match="holds int, not images"):
        HFSource(path, image_column="label").load()


def test_hf_image_modes_and_sizes(tmp_path):
    import datasets
    from PIL import Image

    rgba = np.random.default_rng(0).integers(0, 256, (4, 5, 6, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    pil = [Image.fromarray(a, mode="RGBA") for a in rgba]
    ds = datasets.Dataset.from_dict(
        {"picture": pil}, features=datasets.Features({"picture": datasets.Image()})
    )
    ds.save_to_disk(str(tmp_path / "rgba"))
    loaded = HFSource(str(tmp_path / "rgba")).load()
    assert torch.equal(loaded, torch.from_numpy(rgba[..., :3]).permute(0, 3, 1, 2))

    grey = [Image.fromarray(a[..., 0], mode="L") for a in rgba]
    grey_ds = datasets.Dataset.from_dict({"x": grey}).with_format("numpy")  # format is saved too
    grey_ds.save_to_disk(str(tmp_path / "grey"))
    assert torch.equal(
        HFSource(str(tmp_path / "grey")).load()[:, 0], torch.from_numpy(rgba[..., 0])
    )

    mixed = [Image.new("RGB", (8, 8), (10, 20, 30)), Image.new("RGB", (6, 9), (10, 20, 30))]
    datasets.Dataset.from_dict({"x": mixed}).save_to_disk(str(tmp_path / "mixed"))
    with pytest.raises(ValueError, match=r"differing sizes \(8x8, 9x6\).*resolution="):
        HFSource(str(tmp_path / "mixed")).load()
    resized = HFSource(str(tmp_path / "mixed"), resolution=4).load()
    assert resized.shape == (2, 3, 4, 4)
    assert torch.equal(resized[:, :, 0, 0], torch.tensor([[10, 20, 30]] * 2, dtype=torch.uint8))


def test_hf_missing_local_path_named(tmp_path):
    missing = str(tmp_path / "no_such_dir")
    with pytest.raises(FileNotFoundError, match="no_such_dir"):
        HFSource(missing).load()


def _assert_fast_offline_failure(source: HFSource) -> None:
    start = time.monotonic()
    with pytest.raises(ConnectionError) as err:
        source.load()
    assert time.monotonic() - start < 10
    message = str(err.value)
    assert "'uoft-cs/cifar10'" in message
    for alternative in ("save_to_disk", "image folder", "parquet", "IDXSource", "DigitsSource"):
        assert alternative in message


def test_hf_hub_id_offline_flag_fails_fast(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub_module, "hub_reachable", lambda: pytest.fail("no probe offline"))
    _assert_fast_offline_failure(HFSource("uoft-cs/cifar10", cache_dir=str(tmp_path)))


def test_hf_hub_id_unreachable_hub_fails_fast_and_restores_flags(monkeypatch, tmp_path):
    import datasets
    import huggingface_hub

    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_module, "hub_reachable", lambda: False)
    _assert_fast_offline_failure(HFSource("uoft-cs/cifar10", cache_dir=str(tmp_path)))
    assert datasets.config.HF_HUB_OFFLINE is False
    assert huggingface_hub.constants.HF_HUB_OFFLINE is False


def test_hub_reachability_probe_times_out_quickly(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    start = time.monotonic()
    assert hub_module.hub_reachable(timeout=3.0) is False
    assert time.monotonic() - start < 5
