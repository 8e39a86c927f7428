"""How many training samples an image dataset holds, read without torch or numpy.

An epoch is one pass over the training data: when a spec names a dataset but no
``samples_per_epoch``, the launcher takes it from here (the estimate, the limits and the payload
then agree on it). The payload's own loader (data.py) lists an image folder with the same
``scan_folder``, so both count the same files.
"""

from __future__ import annotations

import ast
import os
import zipfile

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
DIGITS_SAMPLES = 1797  # scikit-learn's digits
DIGITS_TRAIN = DIGITS_SAMPLES - DIGITS_SAMPLES // 5  # data.py holds out a fixed 20% for evaluation


def scan_folder(root: str) -> tuple[list[str], list[str], list[int]]:
    """(class names, image files, their labels) of ``root``/<class>/.../<image>.{jpg,jpeg,png}."""
    classes = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)) and not d.startswith("."))
    files, labels = [], []
    for label, cls in enumerate(classes):
        for dirpath, _, names in sorted(os.walk(os.path.join(root, cls))):
            for n in sorted(names):
                if n.lower().endswith(IMAGE_EXTENSIONS):
                    files.append(os.path.join(dirpath, n))
                    labels.append(label)
    return classes, files, labels


def train_folder(path: str) -> tuple[str, bool]:
    """The folder the training images are in: ``path/train`` when it has train/ and val/."""
    split = os.path.isdir(os.path.join(path, "train")) and os.path.isdir(os.path.join(path, "val"))
    return (os.path.join(path, "train") if split else path), split


def _npy_rows(path: str, name: str) -> int | None:
    """Length of the first axis of array ``name`` in a .npz, from its .npy header alone."""
    try:
        with zipfile.ZipFile(path) as z, z.open(f"{name}.npy") as f:
            head = f.read(10)
            if head[:6] != b"\x93NUMPY":
                return None
            size = int.from_bytes(head[8:10], "little") if head[6] == 1 else int.from_bytes(head[8:10] + f.read(2),
                                                                                              "little")
            shape = ast.literal_eval(f.read(size).decode("latin1")).get("shape")
    except (OSError, KeyError, ValueError, SyntaxError, zipfile.BadZipFile, AttributeError):
        return None
    return int(shape[0]) if shape else None


def train_samples(dataset: str) -> int | None:
    """Training samples of ``dataset`` (digits, a folder of class subfolders, a .npz with ``x``);
    None for synthetic data, a path missing here or anything else."""
    if dataset == "digits":
        return DIGITS_TRAIN
    path = os.path.expanduser(dataset)
    if os.path.isdir(path):
        try:
            return len(scan_folder(train_folder(path)[0])[1]) or None
        except OSError:
            return None
    if path.lower().endswith(".npz") and os.path.isfile(path):
        return _npy_rows(path, "x")
    return None
