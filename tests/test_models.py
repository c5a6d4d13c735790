"""kitlib.models and kitlib.resnet: every registered model runs, weights load offline, freezing holds."""

from __future__ import annotations

import json
import math
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision import models as tvm

from kitlib import models
from kitlib.models import resnet
from kitlib.errors import KitError


def _ids(model: nn.Module) -> set[int]:
    return {id(p) for p in model.parameters()}


@pytest.mark.parametrize("name", models.names())
def test_every_model_runs_and_is_fully_described(name):
    torch.manual_seed(0)
    model = models.create(name, 5)
    size = models.input_size(name, pretrained=False) or 64  # ViT needs its 224 px, the rest run at 64
    out = model(torch.randn(2, 3, size, size))  # train mode: batch norms normalize the random input
    assert out.shape == (2, 5) and torch.isfinite(out).all()
    assert [m for m in models.head(model).modules() if isinstance(m, nn.Linear)][-1].out_features == 5
    # stages and head split the parameters; param_groups places each exactly once
    parts = models.stages(model)
    assert len(parts) >= 4
    in_stages = set().union(*(_ids(s) for s in parts))
    assert in_stages.isdisjoint(_ids(models.head(model))) and in_stages | _ids(models.head(model)) == _ids(model)
    grouped = [id(p) for g in models.param_groups(model, 0.1, weight_decay=5e-4) for p in g["params"]]
    assert sorted(grouped) == sorted(_ids(model))
    models.freeze(model, backbone=True)  # only the head trains
    assert {id(p) for p in model.parameters() if p.requires_grad} == _ids(models.head(model))


def test_names_put_the_kit_presets_first_and_reject_unknown_ones():
    assert models.names()[:3] == ["resnet_small", "resnet_medium", "resnet_large"]
    assert {"resnet18", "mobilenet_v3_small", "efficientnet_b0", "convnext_tiny", "vit_b_16"} <= set(models.names())
    with pytest.raises(KitError, match="unknown model 'resnet_17'.*resnet_small, resnet_medium"):
        models.create("resnet_17", 10)
    with pytest.raises(KitError, match="norm 'batchnorm': choose one of batch, group, layer, instance"):
        models.create("resnet_small", 10, norm="batchnorm")
    with pytest.raises(KitError, match="unknown option.*width.*valid ones are widths, depths"):
        models.create("resnet_small", 10, width=64)
    with pytest.raises(KitError, match="keeps torchvision's own normalization"):
        models.create("resnet18", 10, norm="group")
    with pytest.raises(KitError, match="has no pretrained weights"):
        models.create("resnet_small", 10, pretrained=True)


def test_the_small_preset_has_the_documented_size_and_any_input_size_works():
    model = models.create("resnet_small", 10)
    assert sum(p.numel() for p in model.parameters()) == 308_650
    assert sum(p.numel() for p in models.create("resnet_large", 10).parameters()) == 11_173_962  # CIFAR ResNet-18
    for px in (32, 40, 64, 96):  # global pooling: no size is baked into the head
        assert model(torch.randn(2, 3, px, px)).shape == (2, 10)


@pytest.mark.parametrize("norm", resnet.NORMS)
def test_each_norm_trains_at_batch_size_one(norm):
    torch.manual_seed(0)
    model = models.create("resnet_small", 3, norm=norm, widths=(8, 16), depths=(1, 2), stem_width=8)
    norms = [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))]
    assert len(norms) == 8  # stem 1, stage 0: 2, stage 1: 2 + projection 1 + 2
    x = torch.randn(1, 3, 32, 32)
    loss = F.cross_entropy(model(x), torch.tensor([2]))
    loss.backward()
    assert torch.isfinite(loss) and model.stem[0].weight.grad.abs().sum() > 0


def test_projection_blocks_and_options_rebuild_the_same_model():
    model = models.create("resnet_small", 10, norm="group", widths=[16, 32, 64], act="gelu", dropout=0.1)
    block = model.stages[1][0]  # 16 -> 32 channels at half the size: a projection shortcut
    assert block(torch.randn(2, 16, 8, 8)).shape == (2, 32, 4, 4)
    assert isinstance(block.shortcut[0], torch.nn.Conv2d) and block.shortcut[0].stride == (2, 2)
    # a checkpoint stores (name, num_classes, norm, options) as JSON: lists come back, same model
    options = json.loads(json.dumps({"widths": [16, 32, 64], "act": "gelu", "dropout": 0.1}))
    again = models.create("resnet_small", 10, norm="group", **options)
    again.load_state_dict(model.state_dict())
    assert again.config == model.config and again.config.widths == (16, 32, 64)


def _cifar_batch(root: Path, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first n/10 training images of each CIFAR-10 class, standardized: (n, 3, 32, 32), (n,)."""
    classes = sorted(p.name for p in (root / "train").iterdir())
    files = [(f, i) for i, c in enumerate(classes) for f in sorted((root / "train" / c).iterdir())[: n // 10]]
    x = torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])).permute(0, 3, 1, 2)
    x = x.float() / 255
    x = (x - x.mean((0, 2, 3), keepdim=True)) / x.std((0, 2, 3), keepdim=True)
    return x, torch.tensor([i for _, i in files])


@pytest.mark.slow
def test_small_net_starts_at_ln_k_and_fits_real_cifar_images(cifar10_root):
    x, y = _cifar_batch(cifar10_root, 100)
    torch.manual_seed(0)
    model = models.create("resnet_small", 10)
    loss = F.cross_entropy(model(x), y)
    assert abs(loss.item() - math.log(10)) < 0.02  # the small head init gives uniform predictions
    groups = models.param_groups(model, 0.4, weight_decay=0.0, early_lr_factor=1.0)
    opt = torch.optim.SGD(groups, momentum=0.9, nesterov=True)
    for _ in range(30):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25  # 100 real images memorized: gradients reach every stage


def test_input_size_normalization_and_default_names():
    assert models.normalization("resnet18", pretrained=True) == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert models.normalization("resnet18", pretrained=False) is None
    assert models.normalization("resnet_small", pretrained=False) is None
    assert models.input_size("resnet18", pretrained=True) == 224
    assert models.input_size("efficientnet_b3", pretrained=True) == 300
    assert models.input_size("efficientnet_v2_s", pretrained=True) == 384
    assert models.input_size("vit_b_16", pretrained=False) == 224
    assert models.input_size("resnet18", pretrained=False) is None
    assert models.default_name(32, "cpu") == "resnet_small"
    assert models.default_name(32, "cuda") == "resnet_large"
    assert models.default_name(64, "cuda") == "resnet_medium"
    assert models.default_name(224, "cuda") == "resnet50"
    assert models.default_name(224, "cpu") == "mobilenet_v3_small"
    assert models.default_name(32, "cpu", pretrained=True) == "mobilenet_v3_small"  # the kit's nets have no weights


# --- offline weights ----------------------------------------------------------------------


@pytest.fixture()
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME: the hub cache is TORCH_HOME/hub/checkpoints."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv("KIT_OFFLINE", raising=False)
    return tmp_path / "torch"


def test_weights_load_from_the_cache_and_from_a_file_with_identical_outputs(torch_home, tmp_path):
    name = "mobilenet_v3_small"
    cached = models.cached_weights_path(name)
    assert cached == torch_home / "hub" / "checkpoints" / "mobilenet_v3_small-047dcff4.pth"
    torch.manual_seed(1)
    source = tvm.get_model(name, weights=None).eval()  # stands in for the ImageNet weights
    cached.parent.mkdir(parents=True)
    torch.save(source.state_dict(), cached)
    torch.save({"state_dict": source.state_dict()}, tmp_path / "mine.pth")

    from_cache = models.create(name, 5, pretrained=True).eval()
    from_file = models.create(name, 5, weights=tmp_path / "mine.pth").eval()
    models.head(from_file).load_state_dict(models.head(from_cache).state_dict())  # new heads are random
    reference = models.create(name, 5).eval()
    reference.load_state_dict(from_cache.state_dict())
    source.classifier[-1] = models.head(from_cache)[-1]
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(from_cache(x), source(x))
        assert torch.equal(from_file(x), source(x))
        assert torch.equal(reference(x), source(x))
    assert models.head(from_cache)[-1].out_features == 5


def test_missing_weights_offline_name_the_file_the_url_and_the_fix(torch_home, monkeypatch):
    monkeypatch.setenv("KIT_OFFLINE", "1")
    with pytest.raises(KitError) as err:
        models.create("resnet18", 10, pretrained=True)
    message = str(err.value)
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert str(torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "KIT_OFFLINE=1" in message and "\n" not in message
    assert "--weights /path/to/resnet18-f37072fd.pth (weights= in Python)" in message


def test_a_failed_download_gives_the_same_error(torch_home, monkeypatch):
    def no_network(url, dst, hash_prefix=None, progress=True):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    with pytest.raises(KitError, match=r"download failed \(URLError.*put it at .*resnet18-f37072fd.pth"):
        models.create("resnet18", 10, pretrained=True)


def test_bad_weights_arguments_are_explained(torch_home, tmp_path):
    with pytest.raises(KitError, match="no such file; pass a weights file or one of IMAGENET1K_V1, DEFAULT"):
        models.create("resnet18", 10, weights=tmp_path / "nope.pth")
    torch.save(tvm.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(KitError, match="does not fit resnet34"):
        models.create("resnet34", 10, weights=tmp_path / "r18.pth")


# --- freezing and learning rates ----------------------------------------------------------


def _step(model: nn.Module) -> None:
    """One SGD step on random data in train mode (what the training loop does)."""
    model.train()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 3])).backward()
    opt.step()


def test_freeze_backbone_and_last_stages():
    torch.manual_seed(0)
    model = models.create("resnet18", 5)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    models.freeze(model, backbone=True)
    assert models.freeze_summary(model) == {"frozen_params": 11_176_512, "trainable_params": 2565, "frozen_bn": 20}
    models.freeze(model, train_last=2)  # layer3, layer4 and the head train
    _step(model)
    after = model.state_dict()
    assert torch.equal(after["layer2.1.bn2.running_mean"], fresh["layer2.1.bn2.running_mean"])
    assert torch.equal(after["layer2.1.conv2.weight"], fresh["layer2.1.conv2.weight"])
    assert not torch.equal(after["layer4.1.conv2.weight"], fresh["layer4.1.conv2.weight"])
    assert not torch.equal(after["layer4.1.bn2.running_mean"], fresh["layer4.1.bn2.running_mean"])
    assert not model.layer2[1].bn2.training and model.layer4[1].bn2.training
    with pytest.raises(KitError, match="train_last=6: ResNet has 5 stages, choose 0..5"):
        models.freeze(model, train_last=6)


def test_freeze_bn_stats_survives_train_and_unfreezing_restores_everything():
    torch.manual_seed(0)
    model = models.create("resnet_small", 5)
    fresh = {k: v.clone() for k, v in model.state_dict().items()}
    models.freeze(model, bn_stats=True)
    _step(model)  # calls model.train() first: the batch norms must stay in eval mode
    after = model.state_dict()
    bn_keys = [k for k in fresh if "running" in k or k.endswith("num_batches_tracked")]
    assert len(bn_keys) == 27 and all(torch.equal(after[k], fresh[k]) for k in bn_keys)
    assert torch.equal(after["stem.1.weight"], fresh["stem.1.weight"])  # affine parameters frozen too
    assert not torch.equal(after["stem.0.weight"], fresh["stem.0.weight"])  # convolutions train
    assert models.freeze_summary(model)["frozen_bn"] == 9
    models.freeze(model)  # unfreeze all: plain BatchNorm2d again, same state-dict keys
    model.train()
    assert all(type(m) is nn.BatchNorm2d and m.training for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert models.freeze_summary(model) == {"frozen_params": 0, "trainable_params": 308_005, "frozen_bn": 0}
    models.create("resnet_small", 5).load_state_dict(model.state_dict())


def test_param_groups_rise_geometrically_and_skip_decay_on_norms_and_biases():
    model = models.create("resnet_small", 10)
    groups = models.param_groups(model, 1.0, weight_decay=5e-4)
    lrs = {g["name"]: round(g["lr"], 4) for g in groups}
    assert lrs == {
        "stage0": 0.1, "stage0/no_decay": 0.1, "stage1": 0.2154, "stage1/no_decay": 0.2154,
        "stage2": 0.4642, "stage2/no_decay": 0.4642, "stage3": 1.0, "stage3/no_decay": 1.0,
        "head": 1.0, "head/no_decay": 1.0,
    }  # fmt: skip
    for g in groups:
        assert all(p.ndim > 1 for p in g["params"]) == (g["weight_decay"] == 5e-4)
    vit_stem = models.param_groups(models.create("vit_b_16", 3), 1.0, weight_decay=0.05)[:2]
    assert [g["name"] for g in vit_stem] == ["stage0", "stage0/no_decay"]
    assert [tuple(p.shape) for p in vit_stem[1]["params"]] == [(1, 1, 768), (1, 197, 768), (768,)]
