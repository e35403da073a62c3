"""Datasets: Fashion-MNIST (Debian's IDX files or a folder), the shipped Fashion-MNIST slice, CIFAR-10
python batches, and any ImageFolder-style directory; seeded validation splits; batch loaders and
batch augmentation.

Nothing is downloaded. In-memory datasets (Fashion-MNIST, CIFAR-10, the slice) are uint8 tensors
normalised per batch; folders stream from disk through DataLoader workers.
"""

from __future__ import annotations

import gzip
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (
    BatchSampler,
    DataLoader,
    Dataset,
    DistributedSampler,
    RandomSampler,
    SequentialSampler,
    Subset,
)

from aep_core.errors import DataError
from aep_core.paths import data_slice_path

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
SLICE_PATH = data_slice_path()
FASHION_MNIST_CLASSES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]
CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
DATASETS = ("fashion-mnist", "fashion-mnist-slice", "cifar10", "folder")
INSTALL_HINT = (
    "Install Debian's package with `apt-get update && apt-get install dataset-fashion-mnist` "
    f"(files land in {FASHION_MNIST_DIR}), or pass --data-dir with the four *-ubyte(.gz) files."
)


class TensorImageDataset(Dataset):
    """Images kept in memory as uint8 (n, c, h, w); indexing with a list of indices returns a whole batch."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean: list[float], std: list[float]) -> None:
        self.images, self.labels = images, labels
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index):  # int -> (c,h,w), list -> (b,c,h,w)
        single = isinstance(index, int)
        idx = [index] if single else index
        x = (self.images[idx].float() / 255 - self.mean) / self.std
        y = self.labels[idx]
        return (x[0], y[0]) if single else (x, y)


@dataclass
class DataBundle:
    """Train / validation / test splits of one dataset, with what a model needs to read it."""

    name: str
    train: Dataset
    val: Dataset
    test: Dataset
    class_names: list[str]
    in_channels: int
    image_size: int
    mean: list[float]
    std: list[float]
    in_memory: bool = True
    info: dict = field(default_factory=dict)
    held_out: Dataset | None = None  # training images kept out of training, to fit ensemble weights on

    def meta(self) -> dict:
        """Plain-type description for checkpoint metadata."""
        return {
            "name": self.name,
            "class_names": self.class_names,
            "in_channels": self.in_channels,
            "image_size": self.image_size,
            "mean": self.mean,
            "std": self.std,
            "sizes": {
                "train": len(self.train),
                **({"ensemble_fit": len(self.held_out)} if self.held_out is not None else {}),
                "val": len(self.val),
                "test": len(self.test),
            },
            **self.info,
        }


def read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a numpy array."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:
        raise DataError(f"Cannot read {path}: {e}. The file looks truncated or corrupt; reinstall it.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path} is not an unsigned-byte IDX file.")
    ndim = raw[3]
    dims = [int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path} holds {data.size} values, its header promises {int(np.prod(dims))}: truncated file.")
    return data.reshape(dims)


def _find_idx(directory: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (directory / name).exists():
            return directory / name
    raise DataError(f"Fashion-MNIST file {stem}(.gz) not found in {directory}. {INSTALL_HINT}")


def load_fashion_mnist_arrays(data_dir: str | Path | None = None) -> dict[str, np.ndarray]:
    """Fashion-MNIST as uint8 arrays: train_x (60000, 28, 28), train_y, test_x (10000, 28, 28), test_y."""
    directory = Path(data_dir) if data_dir else FASHION_MNIST_DIR
    if not directory.is_dir():
        raise DataError(f"Fashion-MNIST directory {directory} does not exist. {INSTALL_HINT}")
    out = {
        "train_x": read_idx(_find_idx(directory, "train-images-idx3-ubyte")),
        "train_y": read_idx(_find_idx(directory, "train-labels-idx1-ubyte")),
        "test_x": read_idx(_find_idx(directory, "t10k-images-idx3-ubyte")),
        "test_y": read_idx(_find_idx(directory, "t10k-labels-idx1-ubyte")),
    }
    for split in ("train", "test"):
        if len(out[f"{split}_x"]) != len(out[f"{split}_y"]):
            raise DataError(f"Fashion-MNIST {split} images and labels differ in count: corrupt files in {directory}.")
    return out


def load_slice(path: str | Path = SLICE_PATH) -> dict[str, np.ndarray]:
    """The shipped Fashion-MNIST test slice: images (n, 28, 28) uint8, labels (n,), indices into the test set."""
    p = Path(path)
    if not p.exists():
        raise DataError(
            f"The shipped Fashion-MNIST slice {p} is missing; recreate it with `python -m aep_core make-slice`."
        )
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in ("images", "labels", "indices")}


SLICE_IMAGE = (1, 28, 28)  # (channels, height, width) of the shipped slice's images


def reads_slice_images(in_channels: int, image_size: int, num_classes: int) -> bool:
    """Whether a model reading such inputs can run on the shipped slice (28x28 grayscale, 10 classes)."""
    return (in_channels, image_size, image_size) == SLICE_IMAGE and num_classes == len(FASHION_MNIST_CLASSES)


def slice_dataset(mean: list[float], std: list[float], path: str | Path = SLICE_PATH) -> TensorImageDataset:
    """The shipped Fashion-MNIST slice as a dataset, normalised with the given (a model's own) mean and std."""
    s = load_slice(path)
    return TensorImageDataset(
        torch.from_numpy(s["images"][:, None]), torch.from_numpy(s["labels"].astype(np.int64)), list(mean), list(std)
    )


def split_indices(n: int, val_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of range(n) into (train, validation) index arrays."""
    if not 0 < val_size < n:
        raise DataError(f"Validation size must be between 1 and {n - 1}, got {val_size}.")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[val_size:]), np.sort(perm[:val_size])


def _tensor_bundle(
    name: str,
    arrays: dict[str, np.ndarray],
    classes: list[str],
    mean: list[float],
    std: list[float],
    val_size: int,
    seed: int,
    limit: int | None,
) -> DataBundle:
    """A bundle of in-memory images from `arrays` (train_x, train_y, test_x, test_y), with a seeded validation
    split of `val_size` images carved from the training images."""
    train_x, train_y, test_x, test_y = (arrays[k] for k in ("train_x", "train_y", "test_x", "test_y"))
    if train_x.ndim == 3:
        train_x, test_x = train_x[:, None], test_x[:, None]
    tr_idx, va_idx = split_indices(len(train_y), val_size, seed)
    if limit:
        tr_idx = tr_idx[:limit]
    tx, ty = torch.from_numpy(np.array(train_x)), torch.from_numpy(train_y.astype(np.int64))
    make = lambda x, y: TensorImageDataset(x, y, mean, std)  # noqa: E731
    return DataBundle(
        name=name,
        train=make(tx[tr_idx], ty[tr_idx]),
        val=make(tx[va_idx], ty[va_idx]),
        test=make(torch.from_numpy(np.array(test_x)), torch.from_numpy(test_y.astype(np.int64))),
        class_names=classes,
        in_channels=train_x.shape[1],
        image_size=train_x.shape[-1],
        mean=mean,
        std=std,
        info={"val_seed": seed, "val_size": val_size},
    )


def _load_cifar10(data_dir: Path) -> dict[str, np.ndarray]:
    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        p = data_dir / name
        if not p.exists():
            raise DataError(
                f"CIFAR-10 batch {p} not found: point --data-dir at the extracted 'cifar-10-batches-py' folder."
            )
        try:
            with open(p, "rb") as f:
                d = pickle.load(f, encoding="bytes")  # the user's own local files, in the format CIFAR publishes
            return np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32), np.asarray(
                d[b"labels"], dtype=np.uint8
            )
        except Exception as e:
            raise DataError(f"Cannot read CIFAR-10 batch {p}: {e}.") from None

    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    test_x, test_y = read("test_batch")
    return {
        "train_x": np.concatenate([p[0] for p in parts]),
        "train_y": np.concatenate([p[1] for p in parts]),
        "test_x": test_x,
        "test_y": test_y,
    }


def _folder_bundle(
    root: Path,
    image_size: int,
    in_channels: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    limit: int | None,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> DataBundle:
    from torchvision import datasets, transforms

    if not root.is_dir():
        raise DataError(f"Image folder {root} does not exist.")
    mean, std = mean or [0.5] * in_channels, std or [0.5] * in_channels
    if len(mean) != in_channels or len(std) != in_channels or min(std) <= 0:
        raise DataError(f"Normalisation needs one mean and one positive std per channel ({in_channels}).")
    tf = transforms.Compose(
        ([transforms.Grayscale(1)] if in_channels == 1 else [transforms.Lambda(lambda im: im.convert("RGB"))])
        + [transforms.Resize((image_size, image_size)), transforms.ToTensor(), transforms.Normalize(mean, std)]
    )
    try:
        if (root / "train").is_dir():
            train_full = datasets.ImageFolder(str(root / "train"), transform=tf)
            test_dir = root / "test" if (root / "test").is_dir() else root / "val"
            test = datasets.ImageFolder(str(test_dir), transform=tf) if test_dir.is_dir() else None
        else:
            train_full, test = datasets.ImageFolder(str(root), transform=tf), None
    except (FileNotFoundError, RuntimeError) as e:
        raise DataError(f"{root} is not an image folder with one sub-folder of images per class: {e}") from None
    n = len(train_full)
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, int(n * val_fraction))
    n_test = 0 if test is not None else max(1, int(n * test_fraction))
    if n - n_val - n_test < 1:
        raise DataError(f"{root} has only {n} images: too few for train, validation and test splits.")
    val_idx, test_idx, tr_idx = perm[:n_val], perm[n_val : n_val + n_test], perm[n_val + n_test :]
    if limit:
        tr_idx = tr_idx[:limit]
    if test is None:
        test = Subset(train_full, np.sort(test_idx).tolist())
    return DataBundle(
        name=f"folder:{root}",
        train=Subset(train_full, np.sort(tr_idx).tolist()),
        val=Subset(train_full, np.sort(val_idx).tolist()),
        test=test,
        class_names=list(train_full.classes),
        in_channels=in_channels,
        image_size=image_size,
        mean=mean,
        std=std,
        in_memory=False,
        info={"val_seed": seed, "val_size": n_val},
    )


def load_dataset(
    name: str,
    data_dir: str | Path | None = None,
    val_size: int | None = None,
    seed: int = 0,
    limit: int | None = None,
    image_size: int = 32,
    in_channels: int = 3,
    mean: list[float] | None = None,
    std: list[float] | None = None,
) -> DataBundle:
    """Load a dataset by name ('fashion-mnist', 'fashion-mnist-slice', 'cifar10', 'folder') with a seeded
    validation split carved from its training data. `limit` keeps only the first N training images.
    `image_size`, `in_channels` and the normalisation `mean` and `std` (default 0.5 each) apply to folders
    only."""
    fm_mean, fm_std = [0.2860], [0.3530]
    if name == "fashion-mnist":
        a = load_fashion_mnist_arrays(data_dir)
        return _tensor_bundle(name, a, FASHION_MNIST_CLASSES, fm_mean, fm_std, val_size or 5000, seed, limit)
    if name == "fashion-mnist-slice":
        # Smoke-test data for machines without the Debian package: the slice is train, validation and test at once.
        s = load_slice(data_dir or SLICE_PATH)
        a = {"train_x": s["images"], "train_y": s["labels"], "test_x": s["images"], "test_y": s["labels"]}
        val = val_size or len(s["labels"]) // 5
        return _tensor_bundle(name, a, FASHION_MNIST_CLASSES, fm_mean, fm_std, val, seed, limit)
    if name == "cifar10":
        if not data_dir:
            raise DataError("CIFAR-10 needs --data-dir pointing at the extracted 'cifar-10-batches-py' folder.")
        a = _load_cifar10(Path(data_dir))
        mean, std = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]
        return _tensor_bundle(name, a, CIFAR10_CLASSES, mean, std, val_size or 5000, seed, limit)
    if name == "folder":
        if not data_dir:
            raise DataError("The 'folder' dataset needs --data-dir: a folder with one sub-folder of images per class.")
        return _folder_bundle(Path(data_dir), image_size, in_channels, 0.1, 0.1, seed, limit, mean, std)
    raise DataError(f"Unknown dataset '{name}'. Choose one of: {', '.join(DATASETS)}.")


def hold_out(dataset: Dataset, size: int, seed: int) -> tuple[Dataset, Dataset]:
    """Split `dataset` into (the rest, `size` held-out samples) with a seeded permutation; `size` is clamped so
    that at least one sample stays on each side."""
    n = len(dataset)
    size = min(max(size, 1), n - 1)
    perm = np.random.default_rng(seed).permutation(n)
    rest, held = np.sort(perm[size:]), np.sort(perm[:size])
    if isinstance(dataset, TensorImageDataset):
        make = lambda idx: TensorImageDataset(  # noqa: E731
            dataset.images[idx], dataset.labels[idx], dataset.mean.flatten().tolist(), dataset.std.flatten().tolist()
        )
        return make(torch.from_numpy(rest)), make(torch.from_numpy(held))
    return Subset(dataset, rest.tolist()), Subset(dataset, held.tolist())


def make_loader(
    dataset: Dataset, batch_size: int, shuffle: bool, seed: int = 0, workers: int = 0, distributed: bool = False
) -> DataLoader:
    """Batches of (x, y). In-memory datasets are indexed a whole batch at a time; others use workers.
    With `distributed`, each rank sees its own shard (call `loader.sampler.set_epoch` / `set_loader_epoch`)."""
    if distributed:
        sampler = DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=False)
    elif shuffle:
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(seed))
    else:
        sampler = SequentialSampler(dataset)
    if isinstance(dataset, TensorImageDataset):
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
    )


def first_images(dataset: Dataset, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `n` samples of a dataset as one batch: images (n, c, h, w) and labels (n,), for in-memory
    datasets and image folders alike."""
    if isinstance(dataset, TensorImageDataset):
        return dataset[list(range(n))]
    batches = list(make_loader(Subset(dataset, list(range(n))), 256, shuffle=False))
    return torch.cat([x for x, _ in batches]), torch.cat([torch.as_tensor(y) for _, y in batches])


def set_loader_epoch(loader: DataLoader, epoch: int, seed: int) -> None:
    """Make the epoch's shuffle depend on (seed, epoch) only, so a resumed run sees the same order."""
    sampler = loader.sampler.sampler if isinstance(loader.sampler, BatchSampler) else loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    elif isinstance(sampler, RandomSampler) and sampler.generator is not None:
        sampler.generator.manual_seed(seed * 1000003 + epoch)


def augment_shift_flip(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translation by up to `max_shift` pixels (zero padding) and random horizontal flip, per sample.
    x: (b, c, h, w) -> (b, c, h, w)."""
    b, _, h, w = x.shape
    dev = x.device
    pad = torch.nn.functional.pad(x, (max_shift,) * 4)  # (b, c, h+2s, w+2s)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=generator).to(dev)
    flip = torch.rand(b, generator=generator).to(dev) < 0.5
    rows = dy[:, None] + torch.arange(h, device=dev)  # (b, h)
    cols = torch.arange(w, device=dev).expand(b, w)
    cols = torch.where(flip[:, None], cols.flip(1), cols) + dx[:, None]  # (b, w)
    bi = torch.arange(b, device=dev)[:, None, None]
    out = pad.permute(0, 2, 3, 1)[bi, rows[:, :, None], cols[:, None, :]]  # (b, h, w, c)
    return out.permute(0, 3, 1, 2).contiguous()
