"""The zoo: torchvision-exact parameters and keys, any input size, checkpoints, the registry."""

import json

import pytest
import torch

import models
from models.summary import count_params
from tests.conftest import REFERENCE

TORCHVISION = json.loads((REFERENCE / "torchvision_state_dicts.json").read_text())
CIFAR = {"preact_resnet164", "preact_resnet1001", "wrn28_10"}


def test_registry_lists_every_family() -> None:
    names = set(models.list_models())
    assert set(TORCHVISION) <= names
    assert {"resnet50d", "plain18", "plain34", "preact_resnet1001", "wrn28_10"} <= names


def test_unknown_model_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="resnet50"):
        models.create("resnet51")


@pytest.mark.parametrize("name", sorted(TORCHVISION))
def test_torchvision_params_and_state_dict(name: str) -> None:
    with torch.device("meta"):
        model = models.create(name)
    ref = TORCHVISION[name]
    assert count_params(model) == ref["num_params"]
    ours = [[k, list(v.shape)] for k, v in model.state_dict().items()]
    assert ours == ref["state_dict"]


def _shapes(name: str) -> list[tuple[int, int, int]]:
    if name in CIFAR:
        return [(1, 32, 32), (3, 17, 45), (1, 64, 48)]
    return [(1, 224, 224), (3, 97, 301), (1, 512, 384)]


@pytest.mark.parametrize("name", models.list_models())
def test_forward_any_size(name: str) -> None:
    torch.manual_seed(0)
    model = models.create(name, num_classes=7).eval()
    with torch.no_grad():
        for batch, h, w in _shapes(name):
            assert model(torch.randn(batch, 3, h, w)).shape == (batch, 7)
        smallest = model.min_input_size
        feats = model.forward_features(torch.randn(1, 3, smallest, smallest))
        assert feats.shape[-2:] == (1, 1), "min_input_size must give a 1×1 final feature map"
        assert feats.shape[1] == model.num_features == model.get_classifier().in_features


def test_densenet_fails_below_its_minimum() -> None:
    model = models.create("densenet121", num_classes=3).eval()
    with torch.no_grad(), pytest.raises(RuntimeError):
        model(torch.randn(1, 3, 16, 16))


def test_plain_net_has_no_shortcuts() -> None:
    plain = models.create("plain18")
    assert not any("downsample" in k for k in plain.state_dict())
    assert count_params(plain) < count_params(models.create("resnet18"))


def test_resnet_d_uses_average_pool_shortcut() -> None:
    ds = models.create("resnet50d").layer2[0].downsample
    assert isinstance(ds[0], torch.nn.AvgPool2d) and ds[1].stride == (1, 1)


def test_preact_1001_depth() -> None:
    with torch.device("meta"):
        net = models.create("preact_resnet1001")
    convs = [m for m in net.modules() if isinstance(m, torch.nn.Conv2d) and m.kernel_size != (1, 1)]
    weighted = sum(isinstance(m, torch.nn.Conv2d) for m in net.modules())
    shortcuts = sum(1 for n, _ in net.named_modules() if n.endswith("shortcut"))
    # 1 stem + 3·111 blocks × 3 convs + fc = 1001 weighted layers (shortcut projections not counted)
    assert weighted - shortcuts + 1 == 1001 and len(convs) == 1 + 3 * 111


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_checkpoint_roundtrip(tmp_path, suffix: str) -> None:
    torch.manual_seed(1)
    src = models.create("resnet18", num_classes=5).eval()
    path = tmp_path / f"ckpt{suffix}"
    models.save_checkpoint(src, path)
    dst = models.load_checkpoint(models.create("resnet18", num_classes=5).eval(), path)
    x = torch.randn(2, 3, 64, 80)
    with torch.no_grad():
        assert torch.equal(src(x), dst(x))


def test_mismatched_checkpoint_names_the_problem(tmp_path) -> None:
    path = tmp_path / "r18.pth"
    models.save_checkpoint(models.create("resnet18", num_classes=5), path)
    with pytest.raises(models.CheckpointMismatch, match=r"fc\.weight: checkpoint \(5, 512\)"):
        models.load_checkpoint(models.create("resnet18", num_classes=10), path)
    with pytest.raises(models.CheckpointMismatch, match=r"96 missing: layer1\.2\.conv1\.weight"):
        models.load_checkpoint(models.create("resnet34", num_classes=5), path)


def test_densenet_legacy_keys_are_remapped(tmp_path) -> None:
    src = models.create("densenet121", num_classes=4)
    legacy = {
        k.replace("norm1.", "norm.1.").replace("conv2.", "conv.2.") if "denselayer" in k else k: v
        for k, v in src.state_dict().items()
    }
    assert any(".norm.1." in k for k in legacy)
    torch.save(legacy, tmp_path / "legacy.pth")
    dst = models.load_checkpoint(models.create("densenet121", num_classes=4), tmp_path / "legacy.pth")
    assert torch.equal(dst.classifier.weight, src.classifier.weight)


def test_pickled_code_is_refused(tmp_path) -> None:
    path = tmp_path / "evil.pth"
    torch.save({"weights": object()}, path)
    with pytest.raises(models.CheckpointMismatch, match="not a readable torch checkpoint"):
        models.load_checkpoint(models.create("resnet18"), path)


def test_readme_model_table_is_generated_from_the_registry() -> None:
    from models.summary import table
    from tests.conftest import ROOT

    assert table() in (ROOT / "README.md").read_text(), "regenerate with: python -m models.summary"
