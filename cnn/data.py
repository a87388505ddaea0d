"""MNIST as two in-memory uint8 tensors, read through torchvision and MD5-verified.

The tutorial feeds the network through a DataLoader that builds a PIL image and
calls ToTensor for every sample; that per-sample path is the slow part of its
training loop. Here each split is held as one ``(N, 28, 28)`` uint8 tensor and a
batch is one index into it, converted with the same ``/ 255`` that ToTensor does.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torchvision.datasets import MNIST
from torchvision.datasets.utils import check_integrity

from .errors import DataError

# The published MD5s of the four uncompressed IDX files.
RAW_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
DEFAULT_ROOT = "./mnist"


def default_root() -> str:
    """``$MNIST_ROOT`` if set, else ``./mnist``."""
    return os.environ.get("MNIST_ROOT") or DEFAULT_ROOT


def raw_folder(root: str | os.PathLike) -> Path:
    return Path(root) / "MNIST" / "raw"


def verify(root: str | os.PathLike) -> list[str]:
    """Names of the raw files that are missing; raise ``DataError`` if any present one is corrupt."""
    folder = raw_folder(root)
    missing = []
    for name, md5 in RAW_MD5.items():
        path = folder / name
        if not path.exists():
            missing.append(name)
        elif not check_integrity(str(path), md5):
            raise DataError(
                f"{path} is corrupted (its MD5 is not the published {md5}); "
                "delete it and download MNIST again."
            )
    return missing


def ensure(root: str | os.PathLike) -> None:
    """Make sure the four verified raw files are under ``root``, downloading only if absent."""
    missing = verify(root)
    if not missing:
        return
    try:
        MNIST(root=str(root), train=True, download=True)
        MNIST(root=str(root), train=False, download=True)
    except Exception as e:  # URLError, RuntimeError from mirrors, OSError...
        raise DataError(
            f"MNIST is not under {raw_folder(root)} and could not be downloaded ({type(e).__name__}). "
            f"Put the four files {', '.join(RAW_MD5)} in {raw_folder(root)}, "
            "or point --data-root / MNIST_ROOT at a folder holding MNIST/raw/."
        ) from None
    if missing := verify(root):
        raise DataError(f"Download finished but {', '.join(missing)} still missing in {raw_folder(root)}.")


@dataclass
class Split:
    images: torch.Tensor  # (N, 28, 28) uint8
    labels: torch.Tensor  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def batch(self, idx: torch.Tensor, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
        """Images as ToTensor would give them, ``(B, 1, 28, 28)`` float in [0, 1], and labels."""
        x = self.images[idx].to(device, non_blocking=True).unsqueeze(1).float().div_(255)
        return x, self.labels[idx].to(device, non_blocking=True)


def load(root: str | os.PathLike | None = None, train: bool = True) -> Split:
    """One MNIST split held in memory (the whole split is 47 MB for train, 8 MB for test)."""
    root = root or default_root()
    ensure(root)
    ds = MNIST(root=str(root), train=train, download=False)
    return Split(ds.data, ds.targets.long())
