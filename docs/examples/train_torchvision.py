"""A plain PyTorch training script of the kind a practitioner already has: a torchvision classifier trained on an
image folder, its weights saved as a state_dict. Its output is what `aep train --model torchvision --weights`
takes ("your own weights").

    python docs/examples/train_torchvision.py --data runs/byo/fm --arch mobilenet_v3_small --image-size 32 \
        --epochs 4 --out runs/byo/mobilenet_v3_small_own.pt

The images are normalised with mean and std 0.5 per channel, as `aep train --dataset folder` does by default.
"""

from __future__ import annotations

import argparse
import os
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchvision import datasets, models, transforms


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="folder with train/<class>/ images (and optionally test/<class>/)")
    p.add_argument("--arch", default="mobilenet_v3_small")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--lr", type=float, default=0.003)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    tf = transforms.Compose(
        [
            transforms.Lambda(lambda im: im.convert("RGB")),
            transforms.Resize((a.image_size, a.image_size)),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ]
    )
    train = datasets.ImageFolder(f"{a.data}/train", transform=tf)
    loader = DataLoader(train, batch_size=64, shuffle=True, num_workers=0)
    net = models.get_model(a.arch, weights=None, num_classes=len(train.classes))
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=a.epochs * len(loader))
    start = time.perf_counter()
    for epoch in range(a.epochs):
        net.train()
        correct = seen = 0
        for x, y in loader:
            logits = net(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        print(f"epoch {epoch + 1}: training accuracy {100 * correct / seen:.2f}%, {time.perf_counter() - start:.0f} s")
    recompute_batchnorm_statistics(net, loader)
    test_dir = f"{a.data}/test"
    if os.path.isdir(test_dir):
        test = DataLoader(datasets.ImageFolder(test_dir, transform=tf), batch_size=256)
        print(f"test accuracy {100 * accuracy(net, test):.2f}%")
    torch.save(net.state_dict(), a.out)
    print(f"saved {a.out}")


def recompute_batchnorm_statistics(net: torch.nn.Module, loader: DataLoader, batches: int = 40) -> None:
    """Re-estimate every BatchNorm layer's running mean and variance as a plain average over training batches.
    torchvision's MobileNets and EfficientNets update them with momentum 0.01, so after a short training run they
    still remember their initial values and the network in evaluation mode is far worse than in training."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    net.train()
    with torch.no_grad():
        for i, (x, _) in enumerate(loader):
            if i == batches:
                break
            net(x)
    for m, momentum in zip(norms, momenta, strict=True):
        m.momentum = momentum


def accuracy(net: torch.nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy of the network in evaluation mode."""
    net.eval()
    correct = seen = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((net(x).argmax(1) == y).sum())
            seen += len(y)
    return correct / seen


if __name__ == "__main__":
    main()
