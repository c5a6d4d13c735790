"""Models by name: the kit's ResNet presets and torchvision classifiers, their heads, stages,
pretrained weights (offline too), freezing and layer-wise learning rates.

    model = create("resnet_small", 10)                         # the kit's net, for 32-96 px
    model = create("efficientnet_b0", 200, pretrained=True)    # ImageNet weights, new 200-way head
    freeze(model, train_last=2)                                # train the last 2 stages + head
    optimizer = torch.optim.SGD(param_groups(model, 0.01, weight_decay=5e-4), momentum=0.9)

A model is rebuilt from (name, num_classes, norm, options) alone; checkpoints store those.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import pickle
import socket
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision import models as tvm

from kitlib.models import resnet
from kitlib.errors import KitError
from kitlib.files import file_kind, first_sentence

TORCHVISION = (
    "resnet18", "resnet34", "resnet50", "resnet101", "resnext50_32x4d",
    "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_v2_s", "convnext_tiny", "convnext_small",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "vit_b_16",
)  # fmt: skip
NO_DECAY = ("class_token", "pos_embedding", "layer_scale")  # parameter names kept out of weight decay
DOWNLOAD_TIMEOUT_S = 30  # a silent network (Kaggle without internet) fails after this, never hangs


def names() -> list[str]:
    """Every registered model name, the kit's presets first."""
    return [*resnet.PRESETS, *TORCHVISION]


def default_name(image_size: int, device_type: str, pretrained: bool = False) -> str:
    """A sensible model for `image_size` px images on `device_type` ('cpu', 'cuda', 'mps').

    Up to 96 px, from scratch, the kit's ResNet (small on CPU; on a GPU large up to 48 px, else
    medium); larger images, or pretrained weights, get a torchvision net meant to be fine-tuned: on
    CPU mobilenet_v3_small, ~3x the training speed of mobilenet_v3_large at 224 px (budgets are short there).
    """
    if image_size <= 96 and not pretrained:
        if device_type == "cpu":
            return "resnet_small"
        return "resnet_large" if image_size <= 48 else "resnet_medium"
    return "mobilenet_v3_small" if device_type == "cpu" else "resnet50"


def _check_name(name: str) -> None:
    if name not in resnet.PRESETS and name not in TORCHVISION:
        raise KitError(f"unknown model {name!r}: choose one of {', '.join(names())}")


# --- pretrained weights ------------------------------------------------------------------


def normalization(name: str, pretrained: bool) -> tuple[tuple, tuple] | None:
    """(mean, std) the pretrained weights expect; None (use the training set's statistics) otherwise."""
    _check_name(name)
    if not pretrained or name in resnet.PRESETS:
        return None
    t = tvm.get_model_weights(name).DEFAULT.transforms()
    return tuple(t.mean), tuple(t.std)


def input_size(name: str, pretrained: bool) -> int | None:
    """The square image size (px) the model needs: the pretrained weights' crop, 224 for ViT; else None (any)."""
    _check_name(name)
    if name in resnet.PRESETS:
        return None
    if pretrained:
        return tvm.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    return 224 if name.startswith("vit_") else None


def cached_weights_path(name: str, weights: str = "DEFAULT") -> Path:
    """Where torch keeps the downloaded file of `name`'s weights: TORCH_HOME's hub/checkpoints/<file>."""
    _check_name(name)
    enum = tvm.get_model_weights(name)
    if weights not in enum.__members__:
        raise KitError(f"weights {weights!r} for {name}: choose one of {', '.join(enum.__members__)}")
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(enum[weights].url).path)


@contextlib.contextmanager
def _socket_timeout(seconds: float):
    """Every socket opened inside times out after `seconds` of silence (urllib has no default)."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _weights_file(name: str, pretrained: bool, weights: str | Path | None) -> Path | None:
    """The local state-dict file to load into `name`, downloading it to the cache if allowed."""
    if weights is None and not pretrained:
        return None
    if name in resnet.PRESETS:
        raise KitError(f"{name} is the kit's own net and has no pretrained weights: drop --pretrained and --weights "
                       "(pretrained=False, weights=None in Python)")
    enum = tvm.get_model_weights(name)
    choice = "DEFAULT" if weights is None else weights.name if isinstance(weights, enum) else str(weights)
    if choice not in enum.__members__:
        path = Path(choice).expanduser()
        if not path.is_file():
            raise KitError(
                f"weights {choice!r} for {name}: no such file; pass a weights file or one of "
                f"{', '.join(enum.__members__)}"
            )
        return path
    path = cached_weights_path(name, choice)
    if path.is_file():
        return path
    url = enum[choice].url
    if os.environ.get("KIT_OFFLINE") == "1":
        reason = "KIT_OFFLINE=1 forbids downloading"
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            digest = torch.hub.HASH_REGEX.search(path.name)  # files are named <model>-<sha256 prefix>.pth
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
                torch.hub.download_url_to_file(url, str(path), digest.group(1) if digest else None)
            return path
        except (OSError, RuntimeError, http.client.HTTPException) as e:  # no network, timeout, bad hash
            reason = f"the download failed ({type(e).__name__}: {e})"
    raise KitError(
        f"pretrained weights for {name} are not on this machine and {reason}: download {url} "
        f"and put it at {path} (the TORCH_HOME cache), or pass --weights /path/to/{path.name} (weights= in Python) "
        f"(on Kaggle: add the file as a dataset and use its /kaggle/input/... path)"
    )


def _load(model: nn.Module, name: str, path: Path) -> None:
    """Load the state dict in `path` (torchvision's file, or a dict holding it) into `model`.

    KitError naming the file and what it seems to be when it is no weights file (an HTML page from
    a failed download, a cut-off file, a Git LFS pointer) or does not fit the model.
    """
    kind = file_kind(path)
    again = f"Download it again ({name}'s weights from torchvision), or pass another file to --weights (weights=)."
    if not kind.startswith(("a PyTorch file", "a ZIP archive", "a Python pickle")):
        raise KitError(f"weights file {path}: {kind}, not a PyTorch weights file. {again}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError, zipfile.BadZipFile,
            AttributeError, ImportError, IndexError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise KitError(f"weights file {path}: {kind} that torch cannot read as weights ({first_sentence(e)}): cut "
                       f"off, damaged, or not a state dict. {again}") from e
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise KitError(f"weights file {path}: holds {type(state).__name__}, not a state dict of tensors. {again}")
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        detail = str(e).splitlines()[1].strip() if "\n" in str(e) else str(e)
        raise KitError(f"weights file {path} does not fit {name} (options must match the weights'): {detail}") from e


# --- creating models --------------------------------------------------------------------


def create(
    name: str,
    num_classes: int,
    *,
    pretrained: bool = False,
    weights: str | Path | None = None,
    norm: str = "batch",
    in_channels: int = 3,
    **options,
) -> nn.Module:
    """Model `name` with a new `num_classes`-way head, optionally from pretrained weights.

    `weights` is a state-dict file, a torchvision weights name ('DEFAULT', 'IMAGENET1K_V2') or
    enum member (ResNet50_Weights.IMAGENET1K_V2); giving it implies pretrained. Weights come from
    the file, else the TORCH_HOME cache, else a download (never with KIT_OFFLINE=1); when none
    works, one KitError names the file, its URL and where to put it. `norm` picks the kit nets'
    normalization (torchvision nets keep their own: only 'batch' is accepted there). `options` go
    to resnet.ResNetConfig for the kit's nets, to the torchvision builder otherwise (dropout=0.3).
    `in_channels` > 3 widens the first convolution (e.g. 4: the mask as an extra channel); the extra
    input channels start with zero weights, so pretrained features are unchanged at the start.
    """
    _check_name(name)
    if num_classes < 1:
        raise KitError(f"num_classes {num_classes}: need at least 1")
    if in_channels < 3:
        raise KitError(f"in_channels {in_channels}: the models take RGB images, plus extra channels (>= 3).")
    path = _weights_file(name, pretrained, weights)
    if name in resnet.PRESETS:
        return widen_input(resnet.build(name, num_classes, norm=norm, **options), in_channels)
    if norm != "batch":
        raise KitError(
            f"norm {norm!r}: {name} keeps torchvision's own normalization layers; use norm='batch' (for "
            f"small batches: freeze(model, bn_stats=True)) or a kit net ({', '.join(resnet.PRESETS)})"
        )
    try:
        model = tvm.get_model(name, weights=None, **options)
    except TypeError as e:
        raise KitError(f"option(s) {', '.join(options)} not accepted by torchvision's {name}: {e}") from e
    if path is not None:
        _load(model, name, path)
    _replace_head(model, num_classes)
    return widen_input(model, in_channels)


def widen_input(model: nn.Module, in_channels: int) -> nn.Module:
    """The model with its first convolution taking `in_channels` inputs: RGB weights kept, the extra ones zero."""
    conv_name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))
    if conv.in_channels == in_channels:
        return model
    wider = nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      conv.groups, conv.bias is not None, conv.padding_mode)
    with torch.no_grad():
        wider.weight.zero_()
        wider.weight[:, :conv.in_channels] = conv.weight
        if conv.bias is not None:
            wider.bias.copy_(conv.bias)
    parent, _, child = conv_name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, wider)
    return model


def _head_name(model: nn.Module) -> str:
    """The attribute holding the classifier of a supported model."""
    for kinds, attr in (
        ((resnet.ResNet,), "head"),
        ((tvm.ResNet, tvm.RegNet), "fc"),
        ((tvm.MobileNetV2, tvm.MobileNetV3, tvm.EfficientNet, tvm.ConvNeXt), "classifier"),
        ((tvm.VisionTransformer,), "heads"),
    ):
        if isinstance(model, kinds):
            return attr
    raise KitError(f"{type(model).__name__} is not a model kitlib.models knows: create it with models.create")


def _replace_head(model: nn.Module, num_classes: int) -> None:
    """Swap the last linear layer of the classifier for a new `num_classes`-way one."""
    attr = _head_name(model)
    linears = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    path = [n for n in linears if n == attr or n.startswith(attr + ".")][-1]
    parent_name, _, child = path.rpartition(".")
    parent = model.get_submodule(parent_name)
    new = nn.Linear(parent.get_submodule(child).in_features, num_classes)
    # small logits at the start: the first loss is ln(num_classes), as for the kit's nets
    nn.init.normal_(new.weight, std=0.01)
    nn.init.zeros_(new.bias)
    setattr(parent, child, new)


def head(model: nn.Module) -> nn.Module:
    """The classifier: the layers after the last stage, whose final linear layer is new."""
    return getattr(model, _head_name(model))


class _Group(nn.Module):
    """Existing layers and parameters seen as one stage: it shares them and adds nothing."""

    def __init__(self, *layers: nn.Module, **params: nn.Parameter):
        super().__init__()
        for i, layer in enumerate(layers):
            self.add_module(str(i), layer)
        for key, p in params.items():
            self.register_parameter(key, p)


def stages(model: nn.Module) -> list[nn.Module]:
    """The backbone's stages, input side first (the head is not among them)."""
    _head_name(model)  # raise for unsupported models
    if isinstance(model, resnet.ResNet):
        return [model.stem, *model.stages]
    if isinstance(model, tvm.ResNet):
        return [_Group(model.conv1, model.bn1), model.layer1, model.layer2, model.layer3, model.layer4]
    if isinstance(model, tvm.RegNet):
        return [model.stem, *model.trunk_output]
    if isinstance(model, tvm.VisionTransformer):
        enc = model.encoder
        stem = _Group(model.conv_proj, class_token=model.class_token, pos_embedding=enc.pos_embedding)
        return [stem, *enc.layers[:-1], _Group(enc.layers[-1], enc.ln)]
    return list(model.features)  # MobileNetV2/V3, EfficientNet, ConvNeXt: stem, blocks, last conv


# --- freezing and learning rates --------------------------------------------------------


class _FrozenBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that stays in eval mode: model.train() cannot restart its statistics."""

    def train(self, mode: bool = True):
        return super().train(False)


class _FrozenBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d that stays in eval mode: model.train() cannot restart its statistics."""

    def train(self, mode: bool = True):
        return super().train(False)


_FROZEN = {nn.BatchNorm1d: _FrozenBatchNorm1d, nn.BatchNorm2d: _FrozenBatchNorm2d}
_THAWED = {v: k for k, v in _FROZEN.items()}
_BATCH_NORMS = (*_FROZEN, *_THAWED)


def freeze(model: nn.Module, *, backbone: bool = False, train_last: int | None = None,
           bn_stats: bool = False) -> None:
    """Set what trains: all stages frozen (`backbone`), all but the last `train_last`, and/or every
    batch norm's statistics (`bn_stats`). Each call sets the whole state: freeze(model) unfreezes all.

    Frozen parameters get requires_grad=False. Batch norms in frozen stages (and all of them with
    `bn_stats`) keep their running statistics and affine parameters fixed and stay in eval mode
    through later model.train() calls (a BatchNorm1d/2d becomes a subclass whose train()
    keeps eval), so the training loop needs no re-application each epoch. Other norms (layer,
    group) have no statistics: `bn_stats` leaves them training.
    """
    parts = stages(model)
    if backbone:
        train_last = 0
    if train_last is not None and not 0 <= train_last <= len(parts):
        kind = type(model).__name__
        raise KitError(f"train_last={train_last}: {kind} has {len(parts)} stages, choose 0..{len(parts)}")
    frozen = parts[: len(parts) - train_last] if train_last is not None else []
    for p in model.parameters():
        p.requires_grad_(True)
    frozen_norms = set()
    for stage in frozen:
        stage.requires_grad_(False)
        frozen_norms.update(m for m in stage.modules() if type(m) in _BATCH_NORMS)
    for m in model.modules():
        if type(m) in _BATCH_NORMS:
            stop = bn_stats or m in frozen_norms
            m.__class__ = (_FROZEN if stop else _THAWED).get(type(m), type(m))
            m.requires_grad_(not stop)
            m.train(model.training)


def freeze_summary(model: nn.Module) -> dict[str, int]:
    """Counts of frozen and trainable parameters (elements) and of batch norms with fixed statistics."""
    n_frozen = sum(p.numel() for p in model.parameters() if not p.requires_grad)
    return {
        "frozen_params": n_frozen,
        "trainable_params": sum(p.numel() for p in model.parameters()) - n_frozen,
        "frozen_bn": sum(type(m) in _THAWED for m in model.modules()),
    }


def param_groups(model: nn.Module, lr: float, *, weight_decay: float,
                 early_lr_factor: float = 0.1) -> list[dict]:
    """Optimizer groups: the head at `lr`, stage i of K at lr * early_lr_factor**((K-1-i)/(K-1))
    (the first stage at lr * early_lr_factor, rising geometrically to lr at the last); no weight
    decay on biases, norm parameters, ViT tokens/position embeddings and layer scales.

    Frozen parameters are included (they get no gradient) so that unfreezing later needs no new
    optimizer. Training from scratch (the kit's nets), pass early_lr_factor=1.0: one lr for all.
    """
    parts = stages(model)
    k = len(parts)
    placed: set[int] = set()
    groups = []

    def add(tag: str, named: list[tuple[str, nn.Parameter]], group_lr: float) -> None:
        named = [(n, p) for n, p in named if id(p) not in placed]
        placed.update(id(p) for _, p in named)
        no_decay = {id(p) for n, p in named if p.ndim <= 1 or n.rsplit(".", 1)[-1] in NO_DECAY}
        for suffix, wd, exempt in (("", weight_decay, False), ("/no_decay", 0.0, True)):
            params = [p for _, p in named if (id(p) in no_decay) == exempt]
            if params:
                groups.append({"params": params, "lr": group_lr, "weight_decay": wd, "name": tag + suffix})

    for i, stage in enumerate(parts):
        add(f"stage{i}", list(stage.named_parameters()), lr * early_lr_factor ** ((k - 1 - i) / max(k - 1, 1)))
    add("head", list(model.named_parameters()), lr)  # the head and anything outside the stages
    return groups
