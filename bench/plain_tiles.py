"""What a user writes without the kit: 64 px tiles where the mask is, a small CNN, tile votes averaged.

    python -m bench.plain_tiles COMPETITION OUT.csv SECONDS

A plain script of the kind the course's best teams wrote (PIL, NumPy, a few torch layers), given a
wall-clock budget that includes its own decoding. bench/slides.py runs it beside the kit.
"""

import sys
import time

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch import nn

T, STRIDE = 64, 32
start, (root, out, budget) = time.time(), sys.argv[1:4]
budget = float(budget)


def tiles(name, folder):
    """64 px windows on a 32 px grid whose mask covers at least half (all windows if none does)."""
    image = np.asarray(Image.open(f"{root}/{folder}/{name}").convert("RGB"))
    mask = np.asarray(Image.open(f"{root}/{folder}/{name.replace('img_', 'mask_')}").convert("L")) > 127
    found, every = [], []
    for y in range(0, image.shape[0] - T + 1, STRIDE):
        for x in range(0, image.shape[1] - T + 1, STRIDE):
            every.append(image[y:y + T, x:x + T])
            if mask[y:y + T, x:x + T].mean() >= 0.5:
                found.append(image[y:y + T, x:x + T])
    return np.stack(found or every)


train = pd.read_csv(f"{root}/train_labels.csv", dtype=str)
classes = sorted(set(train["label"]))
x, y = [], []
for name, label in zip(train["sample_index"], train["label"]):
    for tile in tiles(name, "train_data"):
        x.append(tile)
        y.append(classes.index(label))
x = torch.tensor(np.stack(x)).permute(0, 3, 1, 2).float() / 255
y = torch.tensor(y)
mean, std = x.mean((0, 2, 3), keepdim=True), x.std((0, 2, 3), keepdim=True)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))


model = nn.Sequential(block(3, 32), block(32, 64), block(64, 128), block(128, 256), nn.AdaptiveAvgPool2d(1),
                      nn.Flatten(), nn.Linear(256, len(classes)))
optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
test = pd.read_csv(f"{root}/sample_submission.csv", dtype=str)
while time.time() - start < 0.85 * budget:  # keep ~15 % for predicting the test set
    for batch in torch.randperm(len(x)).split(64):
        images = (x[batch] - mean) / std
        images = torch.where(torch.rand(len(batch), 1, 1, 1) < 0.5, images.flip(3), images)
        loss = nn.functional.cross_entropy(model(images), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if time.time() - start > 0.85 * budget:
            break
model.eval()
with torch.no_grad():
    for i, name in enumerate(test["sample_index"]):
        pixels = torch.tensor(tiles(name, "test_data")).permute(0, 3, 1, 2).float() / 255
        test.loc[i, "label"] = classes[int(model((pixels - mean) / std).softmax(1).mean(0).argmax())]
test.to_csv(out, index=False)
print(f"plain script: {len(x)} tiles, wrote {out} after {time.time() - start:.0f} s")
