"""The decoded-image cache: every image decoded once, resized, held as one uint8 tensor.

Training then reads pixels from memory instead of decoding files every epoch. The array is
built by worker processes writing straight into a memory-mapped .npy file (no pickling of pixels),
kept in the kit's cache folder (never the data folder), and keyed by the file list, sizes and
modification times, the output size and the fit mode: the second load is a file read.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import shutil
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image

from kitlib.data.images import image_size, open_image, oriented_size, upright, upright_like
from kitlib.errors import KitError
from kitlib.progress import progress_bar
from kitlib.runtime import cache_dir as default_cache_dir, cpu_count

try:  # deprecated in torchvision 0.29 in favour of torchcodec; PIL decodes everything without it
    from torchvision.io import decode_jpeg
except ImportError:
    decode_jpeg = None

FITS = ("squash", "pad", "crop")
CACHE_VERSION = 1  # bump when decoding changes, so old caches are not reused
CHUNK = 256  # images per worker task: small enough for a smooth progress bar
JPEG_SUFFIXES = (".jpg", ".jpeg")


@dataclass(frozen=True)
class Decoded:
    """A decoded data set: pixels as stored on disk, in the file order given."""

    images: torch.Tensor
    """(N, 3, H, W) uint8."""
    masks: torch.Tensor | None
    """(N, 1, H, W) uint8, zeros where an image has no mask; None when no image has one."""
    path: Path
    """The cache folder it was read from."""
    stretched: dict[int, str] = field(default_factory=dict)
    """{row: "208x208 onto 250x180"}: the masks that were not their image's size, stretched onto it."""


def decode(paths: Sequence[str | Path], *, size: int | tuple[int, int] | None = None,
           fit: str = "squash", mask_paths: Sequence[str | Path | None] | None = None,
           cache: str | Path | None = None, workers: int | None = None,
           progress: bool = True, ready: dict[int, tuple] | None = None) -> Decoded:
    """Decode images (and masks) once into uint8 tensors at `size`, reusing the cache when valid.

    `size` is (H, W) or one int for squares; None keeps the most common size of the images.
    `fit` says how other shapes reach it: 'squash' (stretch), 'pad' (letterbox in black) or
    'crop' (cover, then center-crop). `ready`: {row: (image, mask or None, stretched or None)} already
    decoded at this size and fit exactly as read_image would (kitlib.data.tiles, cutting slides at native
    resolution, makes them on the way): a cache built now copies those rows instead of reading the files.
    """
    if fit not in FITS:
        raise KitError(f"fit={fit!r}: choose one of {', '.join(FITS)}.")
    paths = [os.fspath(p) for p in paths]  # plain strings: 60,000 Path objects cost a second
    if not paths:
        raise KitError("no images to decode: the table is empty.")
    has_masks = mask_paths is not None and any(m is not None and m == m for m in mask_paths)
    masks = [os.fspath(m) if isinstance(m, (str, Path)) else None for m in mask_paths] if has_masks else None
    height, width = _resolve_size(size, paths)
    folder = Path(cache or default_cache_dir("images")) / _key(paths, masks, (height, width), fit)
    if not (folder / "meta.json").exists():
        _build(folder, paths, masks, (height, width), fit, workers or cpu_count(), progress, ready or {})
    decoded = _load(folder)
    if decoded.stretched and (folder, "stretched") not in _ANNOUNCED:
        _ANNOUNCED.add((folder, "stretched"))
        named = ", ".join(f"{Path(masks[r]).parent.name}/{Path(masks[r]).name} ({how})"
                          for r, how in list(decoded.stretched.items())[:3])
        print(f"masks: {len(decoded.stretched)} not the size of their image, each stretched onto it: {named}"
              f"{' ...' if len(decoded.stretched) > 3 else ''} (the audit lists them in checks.csv as mask_size)")
    return decoded


def decode_table(table, **options) -> Decoded:
    """`decode` the `image` and `mask` columns of a sample or test table."""
    return decode(list(table["image"]), mask_paths=list(table["mask"]), **options)


def _resolve_size(size, paths: list[str]) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if size is not None:
        return int(size[0]), int(size[1])
    return common_size(paths)


def common_size(paths: Sequence[str | Path]) -> tuple[int, int]:
    """(H, W) most common among the images, read from the headers of ~200 spread over the list."""
    step = max(1, len(paths) // 200)
    sizes = Counter()
    for path in list(paths)[::step]:
        sizes[image_size(path)] += 1  # as displayed: a photo stored sideways counts upright
    (w, h), count = sizes.most_common(1)[0]
    if len(sizes) > 1:
        print(f"images have {len(sizes)} sizes; the most common is {w}x{h} "
              f"({count} of {sum(sizes.values())} sampled); --decode-size (decode_size=) chooses")
    return h, w


def _key(paths, masks, size, fit) -> str:
    """A digest of everything the pixels depend on: files (path, bytes, mtime), size, fit."""
    return files_key(paths + (masks or []), [CACHE_VERSION, list(size), fit])


def files_key(paths: Sequence[str | None], params: list) -> str:
    """A 20-hex digest of `params` (JSON) and every file's absolute path, size and mtime (None: no file)."""
    lines = [json.dumps(params)]
    for path in paths:
        if path is None:
            lines.append("-")
            continue
        stat = os.stat(path)  # the floor of a reload: one system call per file (~4 us here)
        name = path if os.path.isabs(path) else os.path.abspath(path)
        lines.append(f"{name}\t{stat.st_size}\t{stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(lines).encode()).hexdigest()[:20]


# ---------------------------------------------------------------------------------------------
# Decoding one image: any mode PIL reads, EXIF orientation, then the fit geometry.

def to_rgb(im: Image.Image) -> Image.Image:
    """8-bit RGB from any mode: 16-bit scaled down, transparency composited onto black."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        array = np.asarray(im)
        top = 65535.0 if im.mode.startswith("I;16") or array.max() > 255 else 255.0
        im = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        rgba = im.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return im if im.mode == "RGB" else im.convert("RGB")


def to_mask(im: Image.Image) -> Image.Image:
    """Masks keep their values: palette indices stay indices, 16-bit is scaled to 8-bit."""
    if im.mode in ("L", "P"):
        return im if im.mode == "L" else Image.fromarray(np.asarray(im), "L")
    if im.mode.startswith("I") or im.mode == "F":
        return to_rgb(im).convert("L")
    return im.convert("L")


def _fit(im: Image.Image, size: tuple[int, int], fit: str, resample: int) -> Image.Image:
    height, width = size
    w, h = im.size
    if (w, h) == (width, height):
        return im
    if fit == "squash":
        return im.resize((width, height), resample)
    scale = min(width / w, height / h) if fit == "pad" else max(width / w, height / h)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    im = im.resize(new, resample)
    left, top = (new[0] - width) // 2, (new[1] - height) // 2
    if fit == "crop":
        return im.crop((left, top, left + width, top + height))
    canvas = Image.new(im.mode, (width, height))
    canvas.paste(im, (-left, -top))
    return canvas


def _draft(im: Image.Image, size: tuple[int, int]) -> None:
    """Let a large JPEG decode at a reduced scale, still >= 2x `size` (draft takes the stored, unrotated size)."""
    w, h = oriented_size(im)
    if im.format == "JPEG" and w >= 4 * size[1] and h >= 4 * size[0]:
        im.draft("RGB", (2 * size[1], 2 * size[0]) if (w, h) == im.size else (2 * size[0], 2 * size[1]))


def read_image(path: str | Path, size: tuple[int, int], fit: str,
               mask_path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray | None, str | None]:
    """One image as (3, H, W) uint8 and its mask as (1, H, W) uint8 (None without a mask file), exactly as the
    cache stores them; and, for a mask that is not its image's size, how it was stretched onto it
    ("208x208 onto 250x180"; None otherwise). The image file is opened once for both: the mask needs the
    image's EXIF orientation, which Pillow finds in a PNG only by decoding all of it (eXIf may follow the pixels)."""
    with open_image(path) as im:
        mask, stretched = (None, None) if mask_path is None else _mask_of(im, mask_path, size, fit)
        _draft(im, size)  # after the mask: draft() changes the image's size
        return fit_image(to_rgb(upright(im)), size, fit), mask, stretched


def read_mask(path: str | Path, size: tuple[int, int], fit: str, image_path: str | Path) -> tuple[np.ndarray, str | None]:
    """One mask as (1, H, W) uint8 and how it was stretched onto its image (None: it has the image's size);
    for an image whose pixels come from elsewhere (read_jpegs)."""
    with open_image(image_path) as image:
        return _mask_of(image, path, size, fit)


def _mask_of(image: Image.Image, path: str | Path, size: tuple[int, int], fit: str) -> tuple[np.ndarray, str | None]:
    """The mask file `path` of the open `image` (before any draft), as fit_mask gives it."""
    with open_image(path) as im:
        # drawn on the stored pixels or on the displayed ones
        return fit_mask(to_mask(upright_like(im, image)), oriented_size(image), size, fit)


def fit_mask(mask: Image.Image, shown: tuple[int, int], size: tuple[int, int], fit: str) -> tuple[np.ndarray, str | None]:
    """An upright mask (to_mask) of an image displayed at `shown` (w, h), as the cache stores it: (1, H, W) uint8
    resized with nearest neighbour so labels stay labels; and how it was stretched onto its image ("208x208
    onto 250x180"), for a mask of another size than its image (None otherwise): the course challenge's
    cartoons carried one mask file whatever their size."""
    stretched = None
    if mask.size != shown:
        stretched = "{}x{} onto {}x{}".format(*mask.size, *shown)
        if fit != "squash":  # squash maps the whole mask onto the whole output, from any size alike
            mask = mask.resize(shown, Image.NEAREST)
    return np.asarray(_fit(mask, size, fit, Image.NEAREST))[None], stretched


def fit_image(image: Image.Image, size: tuple[int, int], fit: str) -> np.ndarray:
    """An upright RGB image (to_rgb), not drafted, as the cache stores it: (3, H, W) uint8."""
    return np.asarray(_fit(image, size, fit, Image.BILINEAR)).transpose(2, 0, 1)


def read_jpegs(paths: Sequence[str], size: tuple[int, int]) -> dict[int, np.ndarray]:
    """{position: (3, H, W) uint8} for the colour JPEGs among `paths` whose pixels are already (H, W).

    torchvision decodes the whole list in C++ (libjpeg-turbo with the defaults Pillow uses, so the
    pixels are identical: tested), ~2.3x PIL's per-image path for small files. Everything else
    (grey or CMYK JPEGs, other sizes, a file that fails) is left out, for read_image to handle.
    """
    chosen = [i for i, path in enumerate(paths) if path.lower().endswith(JPEG_SUFFIXES)]
    if not chosen or decode_jpeg is None:
        return {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            first = decode_jpeg(_file_bytes(paths[chosen[0]]), apply_exif_orientation=True)
            if tuple(first.shape) != (3, *size):  # photos to shrink: PIL's reduced-scale decode does better
                return {}
            rest = [_file_bytes(paths[i]) for i in chosen[1:]]
            decoded = [first, *(decode_jpeg(rest, apply_exif_orientation=True) if rest else [])]
    # one broken file fails the whole list (PIL then names it); TypeError: a torchvision before 0.19
    except (OSError, RuntimeError, ValueError, TypeError):
        return {}
    return {i: image.numpy() for i, image in zip(chosen, decoded) if tuple(image.shape) == (3, *size)}


def _file_bytes(path: str) -> torch.Tensor:
    return torch.from_numpy(np.fromfile(path, dtype=np.uint8))


# ---------------------------------------------------------------------------------------------
# Building: worker processes fill a memory-mapped .npy; the finished file is renamed into place.

_JOB: dict = {}  # the build job, inherited by forked workers or passed to spawned ones


def _init_worker(job: dict) -> None:
    _JOB.update(job)


def _decode_chunk(start: int) -> tuple[int, list[str], list[tuple[int, str]]]:
    """Decode images [start, start+CHUNK) into the partial files; return the count, the failures (one line each,
    naming the file) and the masks stretched onto their images (row, how)."""
    job, errors, stretched = _JOB, [], []
    stop = min(start + CHUNK, len(job["paths"]))
    # plain ndarray views of the memory maps: np.memmap's per-item bookkeeping costs ~10 us an image
    images = np.load(job["images"], mmap_mode="r+").view(np.ndarray)
    masks = np.load(job["masks"], mmap_mode="r+").view(np.ndarray) if job["masks"] else None
    fast = read_jpegs(job["paths"][start:stop], job["size"])
    for i in range(start, stop):
        if i in job["ready"]:
            continue
        path, mask_path = job["paths"][i], job["mask_paths"][i] if masks is not None else None
        try:
            if i - start in fast:
                images[i], (mask, how) = fast[i - start], (None, None)
                if mask_path is not None:
                    mask, how = read_mask(mask_path, job["size"], job["fit"], path)
            else:
                images[i], mask, how = read_image(path, job["size"], job["fit"], mask_path)
            if mask is not None:
                masks[i] = mask
            if how:
                stretched.append((i, how))
        except KitError as error:  # open_image's message already names the file
            errors.append(str(error).removesuffix(". Replace or delete it."))
        except (OSError, ValueError, SyntaxError) as error:  # PIL's errors for broken files
            errors.append(f"{path}{f' or its mask {mask_path}' if mask_path else ''} ({error or type(error).__name__})")
    # no flush: the pages are shared with the page cache, where the parent reads them; an msync per
    # chunk forced a disk write each time and cost a third of the build
    return stop - start, errors, stretched


def _build(folder: Path, paths, masks, size, fit, workers: int, progress: bool, ready: dict) -> None:
    tmp = folder.with_name(folder.name + f".partial{os.getpid()}")
    tmp.mkdir(parents=True, exist_ok=True)
    n, (h, w) = len(paths), size
    job = {"paths": paths, "mask_paths": masks, "size": size, "fit": fit, "ready": set(ready),
           "images": str(tmp / "images.npy"), "masks": str(tmp / "masks.npy") if masks else None}
    started, errors, stretched = time.perf_counter(), [], []
    images = np.lib.format.open_memmap(job["images"], mode="w+", dtype=np.uint8, shape=(n, 3, h, w))
    decoded = np.lib.format.open_memmap(job["masks"], mode="w+", dtype=np.uint8, shape=(n, 1, h, w)) if masks else None
    for row, (image, mask, how) in ready.items():  # decoded on the way by another reader of the files
        images[row] = image
        if decoded is not None and mask is not None:
            decoded[row] = mask
        stretched += [(row, how)] if how else []
    images.flush()
    del images
    if decoded is not None:
        decoded.flush()
        del decoded
    starts = [s for s in range(0, n, CHUNK) if any(i not in ready for i in range(s, min(s + CHUNK, n)))]
    bar = progress_bar(total=n, desc=f"decoding {n} images to {h}x{w}", unit="img", disable=not progress)
    bar.update(n - sum(min(CHUNK, n - s) for s in starts))  # whole chunks decoded already
    workers = min(workers, len(starts))
    try:
        if workers <= 1:
            _init_worker(job)
            results = map(_decode_chunk, starts)
            _consume(results, bar, errors, stretched)
        else:
            # fork shares the job for free on Linux; spawn (macOS, Windows) pickles it once per worker
            context = mp.get_context("fork" if sys.platform == "linux" else "spawn")
            with context.Pool(workers, initializer=_init_worker, initargs=(job,)) as pool:
                _consume(pool.imap_unordered(_decode_chunk, starts), bar, errors, stretched)
    finally:
        bar.close()
        _JOB.clear()
    if errors:
        shutil.rmtree(tmp)
        listed = "; ".join(sorted(errors)[:5])
        raise KitError(f"{len(errors)} file(s) could not be decoded: {listed}"
                       f"{' ...' if len(errors) > 5 else ''}. Replace or delete each file "
                       "(and its row in the labels CSV).")
    seconds = time.perf_counter() - started
    meta = {"count": n, "size": [h, w], "fit": fit, "masks": bool(masks), "seconds": seconds,
            "version": CACHE_VERSION, "first": str(paths[0]), "stretched": dict(sorted(stretched))}
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    if folder.exists():  # another process finished the same cache first
        shutil.rmtree(tmp)
    else:
        tmp.rename(folder)
    if ready:
        read = n - len(ready)
        print(f"decoded {n} images into {folder}: {len(ready)} while cutting their tiles"
              + (f", {read} more in {seconds:.1f} s" if read else ""))
    else:
        print(f"decoded {n} images in {seconds:.1f} s ({n / max(seconds, 1e-6):.0f} images/s) into {folder}")


def _consume(results, bar, errors, stretched) -> None:
    for count, failed, stretched_here in results:
        bar.update(count)
        errors.extend(failed)
        stretched.extend(stretched_here)


def total_ram() -> int:
    """Bytes of physical memory (2**40 where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # no sysconf (Windows): assume plenty
        return 1 << 40


_ANNOUNCED: set = set()
"""Cache entries whose "images: ..." line (folder) and "masks: ... stretched" line ((folder, "stretched")) this
process has printed (`all` loads the test set's twice: for the audit's checks and for prediction; said once)."""


def _load(folder: Path) -> Decoded:
    """Read a finished cache: into memory, or memory-mapped when it exceeds half the RAM."""
    arrays = []
    stretched = {int(row): how for row, how in json.loads((folder / "meta.json").read_text()).get("stretched", {}).items()}
    for name in ("images", "masks"):
        file = folder / f"{name}.npy"
        if name == "masks" and not file.exists():
            arrays.append(None)
            continue
        nbytes, big = file.stat().st_size, file.stat().st_size > total_ram() // 2
        # copy-on-write mapping: torch gets a writable array, nothing is ever written back
        array = np.load(file, mmap_mode="c") if big else np.load(file)
        arrays.append(torch.from_numpy(array))
        if name == "images" and folder not in _ANNOUNCED:
            _ANNOUNCED.add(folder)
            where = "memory-mapped from disk (over half the RAM)" if big else "in memory"
            print(f"images: {array.shape[0]} x {array.shape[1]}x{array.shape[2]}x{array.shape[3]} "
                  f"uint8 = {nbytes / 2**20:.0f} MiB, {where} ({folder})")
    return Decoded(arrays[0], arrays[1], folder, stretched)
