"""Datasets for the payload: synthetic, scikit-learn digits, an image folder, a .npz file.

Real data is indexed by a *list* of indices (one call per batch), so a DataLoader with
``batch_size=None`` over a batch sampler moves whole batches: no per-sample collate.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, Sampler

if __package__:
    from .datasize import scan_folder, train_folder
else:  # run as a script: the siblings sit next to this file
    from datasize import scan_folder, train_folder  # type: ignore[no-redef]


class DataError(Exception):
    """The dataset is missing or malformed; the payload exits 2 with this one-line message."""


@dataclass
class Data:
    train: Any
    eval: Any | None
    name: str
    in_memory: bool


class TensorData:
    """In-memory (x, y); ``data[[i, j, ...]]`` returns a batch."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x.contiguous(), y.long().contiguous()

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        i = torch.as_tensor(idx, dtype=torch.long)
        return self.x[i], self.y[i]


class ImageFolderData:
    """Files decoded on demand (in DataLoader workers), resized to a square."""

    def __init__(self, files: list[str], labels: list[int], image_size: int, in_channels: int):
        self.files, self.labels = files, labels
        self.size, self.channels = image_size, in_channels

    def __len__(self) -> int:
        return len(self.files)

    def load(self, path: str) -> torch.Tensor:
        from PIL import Image

        with Image.open(path) as im:
            im = im.convert("L" if self.channels == 1 else "RGB").resize((self.size, self.size), Image.BILINEAR)
            arr = np.asarray(im, dtype=np.uint8)
        t = torch.from_numpy(arr.copy()).float().div_(127.5).sub_(1.0)  # [-1, 1]
        t = t.unsqueeze(0) if t.ndim == 2 else t.permute(2, 0, 1)
        return _fit_channels(t.unsqueeze(0), self.channels, path)[0]

    def __getitem__(self, idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.stack([self.load(self.files[i]) for i in idx])
        return x, torch.tensor([self.labels[i] for i in idx], dtype=torch.long)


def _fit_channels(x: torch.Tensor, channels: int, where: str) -> torch.Tensor:
    """NCHW with C adapted: gray is repeated, colour averaged to gray when C=1."""
    c = x.shape[1]
    if c == channels:
        return x
    if c == 1:
        return x.expand(-1, channels, -1, -1).contiguous()
    if channels == 1:
        return x.mean(dim=1, keepdim=True)
    raise DataError(f"{where}: images have {c} channels but in_channels is {channels}")


def _resize(x: torch.Tensor, size: int) -> torch.Tensor:
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)


def synthetic_batch(batch: int, in_channels: int, image_size: int, num_classes: int, device: torch.device,
                    seed: int, channels_last: bool, shape: tuple | None = None,
                    label_shape: tuple = (), vocab: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """One random batch made on the device itself: no host->device copy in the step loop.

    shape: one sample's shape (default [in_channels, image_size, image_size]); label_shape: the
    labels' shape per sample beyond the batch (() for a classifier, [H, W] for a segmenter);
    vocab: the input is int64 token ids 0 .. vocab - 1 (a model fed tokens), not floats.
    """
    g = torch.Generator(device=device).manual_seed(seed)
    shape = tuple(shape or (in_channels, image_size, image_size))
    if vocab:
        x = torch.randint(0, vocab, (batch, *shape), device=device, generator=g)
    else:
        x = torch.randn(batch, *shape, device=device, generator=g)
    y = torch.randint(0, num_classes, (batch, *label_shape), device=device, generator=g)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y


def _digits(image_size: int, in_channels: int, num_classes: int) -> Data:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise DataError("digits: needs scikit-learn (pip install scikit-learn)") from None
    if num_classes < 10:
        raise DataError(f"digits: has 10 classes but num_classes is {num_classes}")
    xs, ys = load_digits(return_X_y=True)
    x = torch.tensor(xs, dtype=torch.float32).view(-1, 1, 8, 8)
    x = (x - x.mean()) / x.std()
    x = _fit_channels(_resize(x, image_size), in_channels, "digits")
    y = torch.tensor(ys, dtype=torch.long)
    # Fixed split (not the run's seed): every run is scored on the same held-out 20%.
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(1234))
    n_eval = len(y) // 5
    ev, tr = perm[:n_eval], perm[n_eval:]
    return Data(TensorData(x[tr], y[tr]), TensorData(x[ev], y[ev]), "digits", True)


def _npz_arrays(path: str, xkey: str, ykey: str, arrays: Any, image_size: int, in_channels: int,
                num_classes: int) -> TensorData:
    x, y = arrays[xkey], arrays[ykey]
    if x.ndim not in (3, 4):
        raise DataError(f"{path}: array '{xkey}' has shape {x.shape}; expected (N,C,H,W), (N,H,W) or (N,H,W,C)")
    if y.ndim != 1 or len(y) != len(x):
        raise DataError(f"{path}: array '{ykey}' has shape {y.shape}; expected ({len(x)},) labels")
    if len(x) == 0:
        raise DataError(f"{path}: array '{xkey}' is empty")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels '{ykey}' have dtype {y.dtype}; expected integers")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"{path}: labels '{ykey}' span {y.min()}..{y.max()}, outside 0..{num_classes - 1}")
    scale = 255.0 if x.dtype == np.uint8 else 1.0
    t = torch.from_numpy(np.ascontiguousarray(x)).float() / scale
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif t.shape[1] != in_channels and t.shape[-1] == in_channels:
        t = t.permute(0, 3, 1, 2)  # channels last on disk
    elif t.shape[1] > 16 and t.shape[-1] <= 16:
        t = t.permute(0, 3, 1, 2)
    t = _fit_channels(_resize(t, image_size), in_channels, path)
    return TensorData(t, torch.from_numpy(y.astype(np.int64)))


def _npz(path: str, image_size: int, in_channels: int, num_classes: int) -> Data:
    try:
        arrays = np.load(path, allow_pickle=False)
        keys = set(arrays.files)
    except Exception as exc:
        raise DataError(f"{path}: not a readable .npz file ({type(exc).__name__}: {exc})") from None
    missing = [k for k in ("x", "y") if k not in keys]
    if missing:
        raise DataError(f"{path}: missing array(s) {', '.join(missing)}; found {', '.join(sorted(keys)) or 'none'}")
    try:
        train = _npz_arrays(path, "x", "y", arrays, image_size, in_channels, num_classes)
        ev = None
        if {"x_val", "y_val"} <= keys:
            ev = _npz_arrays(path, "x_val", "y_val", arrays, image_size, in_channels, num_classes)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read arrays ({type(exc).__name__}: {exc})") from None
    return Data(train, ev, os.path.basename(path), True)


def _folder(path: str, image_size: int, in_channels: int, num_classes: int) -> Data:
    try:
        import PIL  # noqa: F401
    except ImportError:
        raise DataError(f"{path}: reading an image folder needs Pillow (pip install pillow)") from None
    train_root, split = train_folder(path)
    classes, files, labels = scan_folder(train_root)
    if not files:
        raise DataError(f"{train_root}: no JPEG/PNG images in class subfolders (expected {train_root}/<class>/<image>.jpg)")
    if len(classes) > num_classes:
        raise DataError(f"{train_root}: has {len(classes)} class folders but num_classes is {num_classes}")
    train = ImageFolderData(files, labels, image_size, in_channels)
    try:
        train.load(files[0])  # fail here, with exit 2, rather than inside a worker
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{files[0]}: cannot decode image ({type(exc).__name__}: {exc})") from None
    ev = None
    if split:
        vclasses, vfiles, vlabels = scan_folder(os.path.join(path, "val"))
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(vclasses) - set(index))
        if unknown:
            raise DataError(f"{path}/val: class folder(s) {', '.join(unknown[:3])} not in {train_root}")
        vlabels = [index[vclasses[i]] for i in vlabels]
        ev = ImageFolderData(vfiles, vlabels, image_size, in_channels) if vfiles else None
    return Data(train, ev, os.path.basename(os.path.normpath(path)), False)


def open_dataset(spec: str, image_size: int, in_channels: int, num_classes: int) -> Data | None:
    """None for synthetic data; raises DataError with a one-line message on any problem."""
    if spec == "synthetic":
        return None
    if spec == "digits":
        return _digits(image_size, in_channels, num_classes)
    path = os.path.expanduser(spec)
    if not os.path.exists(path):
        raise DataError(f"{spec}: no such file or directory (dataset must be synthetic, digits, a .npz file "
                        "or a folder of class subfolders)")
    if os.path.isdir(path):
        return _folder(path, image_size, in_channels, num_classes)
    if path.lower().endswith(".npz"):
        return _npz(path, image_size, in_channels, num_classes)
    raise DataError(f"{spec}: not a .npz file or a folder of class subfolders")


class _SkipFirst(Sampler):
    """Skips the first ``skip`` batches of the first pass: a resumed run sees the same data."""

    def __init__(self, inner: BatchSampler, skip: int):
        self.inner, self.skip = inner, skip

    def __iter__(self) -> Iterator[list[int]]:
        skip, self.skip = self.skip, 0
        return itertools.islice(iter(self.inner), skip, None)

    def __len__(self) -> int:
        return len(self.inner) - self.skip


def train_batches(data: Data, batch: int, world: int, rank: int, seed: int, start_step: int,
                  workers: int, pin: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Endless (x, y) batches on the host. The order depends only on (seed, step), so
    ``start_step`` reproduces exactly what an uninterrupted run would see next."""
    sampler = DistributedSampler(data.train, num_replicas=world, rank=rank, shuffle=True, seed=seed)
    batches = BatchSampler(sampler, batch, drop_last=True)  # fixed shapes: no recompiles
    per_pass = len(batches)
    if per_pass == 0:
        raise DataError(f"{data.name}: {len(data.train)} training samples give each of {world} process(es) "
                        f"fewer than batch_size={batch}; lower batch_size")
    pass_no, offset = divmod(start_step, per_pass)
    skipper = _SkipFirst(batches, offset)
    kw: dict[str, Any] = {}
    if workers:
        kw = dict(persistent_workers=True, prefetch_factor=4)
    loader = DataLoader(data.train, batch_size=None, sampler=skipper, num_workers=workers, pin_memory=pin, **kw)
    while True:
        sampler.set_epoch(pass_no)
        yield from loader
        pass_no += 1


def eval_batches(data: Data, batch: int, workers: int, pin: bool, rank: int = 0,
                 world: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The held-out split in order, in batches; rank r of ``world`` gets batches r, r + world, ..."""
    n = len(data.eval)
    chunks = [list(range(i, min(i + batch, n))) for i in range(0, n, batch)][rank::world]
    if data.in_memory:
        return (data.eval[c] for c in chunks)
    return iter(DataLoader(data.eval, batch_size=None, sampler=chunks, num_workers=workers, pin_memory=pin))
