"""The data layer on the real data sets of ../shared/data (skipped when it is absent)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from kitlib.data import eda
from kitlib.data.cache import decode_table
from kitlib.data import load_competition


def test_cifar10_as_imagefolder(cifar10_root, tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path))
    comp = load_competition(cifar10_root)
    assert comp.layout == "imagefolder"
    assert (len(comp.samples), len(comp.test), len(comp.classes)) == (50000, 10000, 10)
    assert comp.classes[:3] == ["airplane", "automobile", "bird"]
    assert comp.test["label"].value_counts().to_dict() == {c: 1000 for c in comp.classes}
    decoded = decode_table(comp.test, size=32, progress=False)
    assert decoded.images.shape == (10000, 3, 32, 32)
    for i in range(0, 10000, 97):  # JPEGs at their own size (the batched libjpeg path): exactly PIL's decode
        expected = np.asarray(Image.open(comp.test["image"][i]).convert("RGB")).transpose(2, 0, 1)
        assert np.array_equal(decoded.images[i].numpy(), expected)
    assert decode_table(comp.test, size=32, progress=False).path == decoded.path  # the second load hits


def test_tiny_imagenet_in_its_own_layout(tiny_imagenet_root):
    comp = load_competition(tiny_imagenet_root)
    assert comp.layout == "tinyimagenet"
    assert len(comp.classes) == 100
    assert comp.samples["split"].value_counts().to_dict() == {"train": 10000, "val": 5000}
    assert "African elephant, Loxodonta africana" in comp.classes  # names from words.txt, commas kept
    assert comp.samples.groupby("split")["label"].nunique().to_dict() == {"train": 100, "val": 100}
    label = comp.samples.set_index("sample_index")["label"]
    assert (label["val_1.JPEG"], label["val_3.JPEG"]) == ("reel", "bathtub, bathing tub, bath, tub")


def test_eda_figures_on_tiny_imagenet(tiny_imagenet_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))
    shown = []
    monkeypatch.setattr(eda.plt.Figure, "suptitle", lambda self, text, **k: shown.append(text))
    paths = eda.run_eda(load_competition(tiny_imagenet_root), tmp_path / "images", progress=False)
    assert [p.name for p in paths] == ["eda_class_counts.png", "eda_samples.png", "eda_sizes.png",
                                       "eda_channels.png", "eda_train_vs_test.png"]
    assert all(Image.open(p).size[0] > 500 for p in paths)
    assert "Training samples per class (first 12 of 100 classes)" in shown  # no silent cut
    assert "most common image sizes (w, h) of 5000 training images: [((64, 64), 5000)]" in capsys.readouterr().out
