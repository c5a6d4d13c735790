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


def _noisy_cifar(root, sparsity: str, noise: str):
    """(probs (50000, 10) float64, given labels, true labels) of the confident-learning benchmark."""
    import json

    labels = json.loads((root / f"noisy_labels__sparsity_{sparsity}__noise_{noise}.json").read_text())
    probs = np.load(root / f"pred_probs__sparsity_{sparsity}__noise_{noise}.npy").astype(np.float64)
    probs /= probs.sum(axis=1, keepdims=True)
    classes = sorted({path.split("/")[-2] for path in labels})
    truth = np.array([classes.index(path.split("/")[-2]) for path in labels])
    return probs, np.array(list(labels.values())), truth


def test_label_issues_on_the_confident_learning_benchmark(cl_noisy_root):
    from kitlib.audit import label_issues

    probs, given, truth = _noisy_cifar(cl_noisy_root, "0.0", "0.2")
    wrong = given != truth  # 9,957 of 50,000 labels were flipped
    flagged, score, suggested = label_issues(probs, given)
    assert int(wrong.sum()) == 9957 and int(flagged.sum()) == 9699
    assert round(float((flagged & wrong).sum() / flagged.sum()), 3) == 0.746  # precision
    assert round(float((flagged & wrong).sum() / wrong.sum()), 3) == 0.727  # recall
    # the user's way, the same number of highest losses, is as precise: what confident learning
    # adds is that number, chosen per class from the data instead of by eye
    loss = -np.log(probs[np.arange(len(given)), given])
    assert round(float(wrong[np.argsort(-loss)[:9699]].mean()), 3) == 0.756
    assert round(float((suggested[flagged & wrong] == truth[flagged & wrong]).mean()), 3) == 0.894


def test_no_cifar_image_looks_alien_in_pixels(cifar10_root):
    """The thumbnail half of the alien score: natural photos stay far below the threshold of 4.5."""
    from kitlib.audit import AuditConfig, pixel_z
    from kitlib.data import prepare

    data = prepare(load_competition(cifar10_root), val_fraction=0, progress=False)
    z = pixel_z(data.images[:20000], AuditConfig())
    assert z.max() < 3.0
