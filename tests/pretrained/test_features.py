"""Feature extractors of ``--features``: the documented preprocessing, TorchScript and timm files,
and the feature-space twin and agreement figures."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightning_pspc.evaluation import EvalData, Evaluation
from lightning_pspc.evaluation.members import Agreement
from lightning_pspc.evaluation.twin_runs import twin_feature_record
from lightning_pspc.metrics import paired_cosine_similarity
from lightning_pspc.pretrained import PretrainedError, load_features

# torch.jit.script is deprecated in favour of torch.export, but SSCD ships TorchScript files
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")


class Pool(nn.Module):
    """Means of a 2x2 grid of regions of each channel: a 12-dim descriptor (scriptable)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(x, 2).flatten(1)


@pytest.fixture
def torchscript(tmp_path):
    path = tmp_path / "pool.torchscript.pt"
    torch.jit.script(Pool()).save(str(path))
    return path


def test_preprocessing_is_grey_to_rgb_resize_and_imagenet_normalisation(torchscript):
    ext = load_features(str(torchscript), size=4)
    grey = torch.rand(2, 1, 8, 8) * 2 - 1
    x = ((grey + 1) / 2).repeat(1, 3, 1, 1)
    x = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False, antialias=True)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(ext.preprocess(grey), (x - mean) / std)
    torch.testing.assert_close(ext(grey), Pool()((x - mean) / std))
    assert load_features(str(torchscript)).size == 288  # SSCD's evaluation size by default


def test_feature_twin_record_is_plain_cosine_of_descriptors(torchscript):
    ext = load_features(str(torchscript), size=8)
    gen = torch.Generator().manual_seed(0)
    train_a, train_b = (torch.rand(6, 1, 8, 8, generator=gen) * 2 - 1 for _ in range(2))
    samples_a = train_a[:3].clone()  # twin a copies its training images
    samples_b = train_a[:3] + 0.01 * torch.randn(3, 1, 8, 8, generator=gen)
    rec = twin_feature_record(ext, train_a, train_b, samples_a, samples_b, threshold=0.6)
    twin = paired_cosine_similarity(ext(samples_a), ext(samples_b))
    assert rec["feature_twin_cos_median"] == pytest.approx(float(twin.median()), abs=1e-6)
    assert rec["feature_reproducibility"] == pytest.approx(float((twin > 0.6).double().mean()))
    assert rec["feature_threshold"] == 0.6
    # twin a's samples are its training images: their nearest training descriptor is themselves
    assert rec["feature_train_cos_q75"] == pytest.approx(1.0, abs=1e-6)


def test_agreement_reports_feature_cosines_next_to_pixel_figures(torchscript):
    ext = load_features(str(torchscript), size=8)
    gen = torch.Generator().manual_seed(0)
    images = torch.rand(8, 1, 8, 8, generator=gen) * 2 - 1
    data = EvalData(images, images[:2], images)
    member = Agreement(("empirical",), num_samples=3, num_steps=3)
    ev = Evaluation(data, [member], references=("empirical",), features=ext)
    shrunk = lambda z, sigma: 0.5 * z  # noqa: E731 - a denoiser other than the references
    result = ev.evaluate(shrunk)["agreement"]
    stats = result.stats["empirical"]
    cos = paired_cosine_similarity(ext(result.network), ext(result.samples["empirical"]))
    assert stats["feature_cosine_median"] == pytest.approx(float(cos.median()), abs=1e-9)
    assert {"pearson_median", "mse_median", "cosine_median"} <= set(stats)
    nested = result.to_json()["agreement"]["empirical"]
    assert set(nested["feature_cosine"]) == {"mean", "median", "q25", "q75"}
    plain = Evaluation(data, [Agreement(("empirical",), 3, 3)], references=("empirical",))
    assert "feature_cosine_median" not in plain.evaluate(shrunk)["agreement"].stats["empirical"]


def test_a_timm_model_loads_its_local_weights(tmp_path):
    import timm

    reference = timm.create_model("test_resnet", pretrained=False).eval()  # random, with head
    weights = tmp_path / "test_resnet.pth"
    torch.save(reference.state_dict(), weights)
    ext = load_features(f"timm:test_resnet:{weights}", size=32)
    assert (ext.size, tuple(ext.mean.flatten().tolist())) == (32, (0.5, 0.5, 0.5))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    with torch.no_grad():
        pooled = reference.forward_head(reference.forward_features(ext.preprocess(images)), True)
    torch.testing.assert_close(ext(images), pooled)


def test_bad_feature_specs_give_one_clear_line(tmp_path):
    not_script = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(1)}, not_script)
    cases = {
        str(tmp_path / "absent.pt"): "no such file",
        str(not_script): "not a TorchScript file",
        "timm:test_resnet": "timm:<model name>:<local weights file>",
        f"timm:test_resnet:{tmp_path / 'none.pth'}": "does not exist",
    }
    for spec, why in cases.items():
        with pytest.raises(PretrainedError) as err:
            load_features(spec)
        assert why in str(err.value) and "\n" not in str(err.value)
