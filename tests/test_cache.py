"""kitlib.cache: pixels equal a direct PIL decode, every image mode handled, the cache reused."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from builders import noise_png, png
from kitlib.data import cache
from kitlib.errors import KitError


@pytest.fixture(autouse=True)
def _cache_in_tmp(tmp_path, monkeypatch):
    monkeypatch.setenv("KIT_CACHE_DIR", str(tmp_path / "cache"))


def test_pixels_equal_a_direct_pil_decode_and_resize(tmp_path):
    paths = [noise_png(tmp_path / f"{i}.png", size, seed=i)
             for i, size in enumerate([(40, 30), (16, 16), (33, 65)])]
    decoded = cache.decode(paths, size=(24, 20), progress=False)
    assert decoded.images.shape == (3, 3, 24, 20) and decoded.images.dtype.is_floating_point is False
    assert decoded.masks is None
    for i, path in enumerate(paths):
        expected = np.asarray(Image.open(path).convert("RGB").resize((20, 24), Image.BILINEAR))
        assert np.array_equal(decoded.images[i].numpy().transpose(1, 2, 0), expected)


def test_second_load_hits_the_cache_and_a_touched_file_misses(tmp_path, monkeypatch, capsys):
    paths = [noise_png(tmp_path / f"{i}.png", (8, 8), seed=i) for i in range(4)]
    first = cache.decode(paths, size=8, progress=False)
    builds = []
    monkeypatch.setattr(cache, "_build", lambda *a, **k: builds.append(a))
    second = cache.decode(paths, size=8, progress=False)
    assert builds == [] and second.path == first.path
    assert capsys.readouterr().out.count("images: 4 x 3x8x8 uint8") == 1  # said once per process
    assert np.array_equal(first.images.numpy(), second.images.numpy())
    os.utime(paths[2], ns=(1, 1))  # a changed file must not be served from the old cache
    with pytest.raises(FileNotFoundError):  # the stubbed _build wrote nothing to load
        cache.decode(paths, size=8, progress=False)
    assert len(builds) == 1


def test_worker_processes_give_the_same_pixels(tmp_path):
    paths = [noise_png(tmp_path / f"{i}.png", (12, 9), seed=i) for i in range(600)]  # 3 chunks
    one = cache.decode(paths, size=8, workers=1, progress=False, cache=tmp_path / "c1")
    two = cache.decode(paths, size=8, workers=2, progress=False, cache=tmp_path / "c2")
    assert np.array_equal(one.images.numpy(), two.images.numpy())


def test_fit_modes_on_a_wide_image(tmp_path):
    image = np.zeros((10, 20, 3), np.uint8)
    image[:, :5] = 255  # the left quarter white
    Image.fromarray(image).save(tmp_path / "wide.png")
    path = [tmp_path / "wide.png"]
    pad = cache.decode(path, size=10, fit="pad", progress=False).images[0, 0].numpy()
    crop = cache.decode(path, size=10, fit="crop", progress=False).images[0, 0].numpy()
    squash = cache.decode(path, size=10, fit="squash", progress=False).images[0, 0].numpy()
    assert pad[:2].max() == 0 and pad[-2:].max() == 0 and pad[5, 0] == 255  # black bands top and bottom
    assert crop[:, 0].max() == 0  # the white left quarter was cropped away
    assert squash[:, 0].min() == 255 and squash[:, -1].max() == 0


def _saved(tmp_path, name: str, im: Image.Image, **save) -> str:
    im.save(tmp_path / name, **save)
    return tmp_path / name


def test_every_image_mode(tmp_path):
    gray = _saved(tmp_path, "gray.png", Image.new("L", (4, 4), 100))
    rgba = Image.new("RGBA", (4, 4), (200, 100, 50, 255))
    rgba.putpixel((0, 0), (255, 255, 255, 0))  # transparent: composited onto black
    rgba = _saved(tmp_path, "rgba.png", rgba)
    palette = Image.new("P", (4, 4), 1)
    palette.putpalette([0, 0, 0, 10, 20, 30] + [0] * 762)
    palette = _saved(tmp_path, "palette.png", palette)
    deep = _saved(tmp_path, "deep.png", Image.fromarray(np.full((4, 4), 32896, np.uint16)))
    assert Image.open(deep).mode.startswith("I")
    images = cache.decode([gray, rgba, palette, deep], size=4, progress=False).images
    assert images[0, :, 1, 1].tolist() == [100, 100, 100]
    assert images[1, :, 0, 0].tolist() == [0, 0, 0] and images[1, :, 1, 1].tolist() == [200, 100, 50]
    assert images[2, :, 1, 1].tolist() == [10, 20, 30]
    assert images[3, :, 1, 1].tolist() == [128, 128, 128]  # 32896 / 65535 * 255


def test_exif_orientation_is_applied(tmp_path):
    image = np.zeros((4, 8, 3), np.uint8)  # 8 wide, 4 high, the left half bright
    image[:, :4] = 255
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _saved(tmp_path, "rotated.jpg", Image.fromarray(image), exif=exif, quality=100)
    decoded = cache.decode([path], size=(8, 4), progress=False).images[0, 0].numpy()  # (H=8, W=4)
    assert decoded[:3].mean() > 200 and decoded[-3:].mean() < 50  # bright half is now on top


def test_phone_photos_stored_sideways_keep_their_displayed_shape(tmp_path):
    """Stored 48 wide x 32 high with "rotate 90": displayed 32 wide x 48 high, and decoded so (not squashed)."""
    image = np.zeros((32, 48, 3), np.uint8)
    image[12:20, 20:28] = 255  # an 8 x 8 marker in the middle
    exif = Image.Exif()
    exif[0x0112] = 6
    paths = [_saved(tmp_path, f"phone{i}.jpg", Image.fromarray(image), exif=exif, quality=100) for i in range(3)]
    assert cache.common_size(paths) == (48, 32)  # (H, W) as displayed
    decoded = cache.decode(paths, progress=False).images
    assert tuple(decoded.shape) == (3, 3, 48, 32)
    marker = decoded[0, 0].numpy() > 128
    rows, cols = np.flatnonzero(marker.any(1)), np.flatnonzero(marker.any(0))
    assert (rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1) == (8, 8)  # still square, not 14 x 6


def test_jpegs_take_the_batched_path_with_pils_pixels(tmp_path):
    rng = np.random.default_rng(0)
    noise = [Image.fromarray(rng.integers(0, 256, (24, 20, 3), dtype=np.uint8)) for _ in range(4)]
    paths = [_saved(tmp_path, "444.jpg", noise[0], quality=90, subsampling=0),
             _saved(tmp_path, "420.jpg", noise[1], quality=75, subsampling=2),
             _saved(tmp_path, "progressive.JPEG", noise[2], quality=90, progressive=True),
             _saved(tmp_path, "grey.jpg", noise[3].convert("L"), quality=90)]
    assert sorted(cache.read_jpegs([str(p) for p in paths], (24, 20))) == [0, 1, 2]  # grey: left to PIL
    decoded = cache.decode(paths, size=(24, 20), progress=False).images.numpy()
    for i, path in enumerate(paths):
        assert np.array_equal(decoded[i], np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1)), path
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(paths[0].read_bytes()[:300])
    with pytest.raises(KitError, match="1 file\\(s\\) could not be decoded: .*cut.jpg"):
        cache.decode(paths[:2] + [cut], size=(24, 20), progress=False)


def test_masks_follow_images_and_missing_masks_are_zero(tmp_path):
    images = [png(tmp_path / "img_0.png", size=(6, 6)), png(tmp_path / "img_1.png", size=(6, 6))]
    mask = np.zeros((6, 6), np.uint8)
    mask[:4] = 255  # nearest resize to 3 rows samples rows 1, 3, 5
    Image.fromarray(mask).save(tmp_path / "mask_0.png")
    decoded = cache.decode(images, size=3, mask_paths=[tmp_path / "mask_0.png", None], progress=False)
    assert decoded.masks.shape == (2, 1, 3, 3)
    assert decoded.masks[0, 0, :, 0].tolist() == [255, 255, 0] and decoded.masks[1].max() == 0


def test_a_mask_of_another_size_is_stretched_onto_its_image_and_said(tmp_path, capsys):
    # the course's cartoons, of any size, carried one and the same mask file: it decodes to the same pixels
    images = [png(tmp_path / "img_0.png", size=(6, 6)), png(tmp_path / "img_1.png", size=(8, 4))]
    mask = np.zeros((6, 6), np.uint8)
    mask[:4] = 255
    Image.fromarray(mask).save(tmp_path / "mask_0.png")
    decoded = cache.decode(images, size=3, mask_paths=[tmp_path / "mask_0.png"] * 2, progress=False)
    assert decoded.stretched == {1: "6x6 onto 8x4"}
    assert decoded.masks[0, 0, :, 0].tolist() == [255, 255, 0] and torch.equal(decoded.masks[0], decoded.masks[1])
    assert "masks: 1 not the size of their image, each stretched onto it: " \
        f"{tmp_path.name}/mask_0.png (6x6 onto 8x4)" in \
        capsys.readouterr().out
    assert cache.decode(images, size=3, mask_paths=[tmp_path / "mask_0.png"] * 2, progress=False).stretched == \
        {1: "6x6 onto 8x4"}  # kept in the cache's meta.json


def test_mixed_sizes_without_a_size_use_the_most_common(tmp_path, capsys):
    paths = [noise_png(tmp_path / f"{i}.png", (10, 6) if i < 3 else (7, 7), seed=i) for i in range(4)]
    assert cache.decode(paths, progress=False).images.shape == (4, 3, 6, 10)
    assert "images have 2 sizes; the most common is 10x6" in capsys.readouterr().out


def test_truncated_and_non_image_files_are_named(tmp_path):
    good = noise_png(tmp_path / "good.png", (32, 32))
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "notes.png").write_text("not an image")
    with pytest.raises(KitError) as info:
        cache.decode([good, tmp_path / "cut.png", tmp_path / "notes.png"], size=8, progress=False)
    message = str(info.value)
    assert message.startswith("2 file(s) could not be decoded:")
    assert "cut.png" in message and "notes.png" in message and "Replace or delete" in message
    assert not any((tmp_path / "cache" / "images").glob("*"))  # no half-built cache left behind


def test_big_caches_are_memory_mapped(tmp_path, monkeypatch, capsys):
    paths = [noise_png(tmp_path / f"{i}.png", (8, 8), seed=i) for i in range(3)]
    monkeypatch.setattr(cache, "total_ram", lambda: 100)  # pretend the machine has 100 bytes
    images = cache.decode(paths, size=8, progress=False).images
    assert "memory-mapped from disk (over half the RAM)" in capsys.readouterr().out
    assert images.shape == (3, 3, 8, 8) and int(images[0].sum()) > 0


def test_unknown_fit_lists_the_choices(tmp_path):
    with pytest.raises(KitError, match="fit='stretch': choose one of squash, pad, crop"):
        cache.decode([tmp_path / "x.png"], size=8, fit="stretch")
