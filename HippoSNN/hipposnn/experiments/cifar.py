"""Table 4: binary vs ternary spikes on CIFAR-10 with the paper's VGG-5.

VGG-5 (paper, after Rathi et al. 2020): conv64, avgpool, conv128, conv128, avgpool, FC 8192-4096-4096-10,
3x3 kernels, no bias, ReLU, dropout. The spiking twin reuses the segmentation engine's IF neurons
(:func:`hipposnn.neurons.if_neuron`: no leak, soft reset, triangle surrogate) and the same recipe:
threshold balancing layer by layer (percentile of the input current, times a scale), the emitting
layer's threshold folded into the next layer's weights, a non-firing output averaged over T.

Why a separate small network instead of the U-Net classes: the U-Net code is specialised to
segmentation (skip concatenations, one output channel); the classifier is six layers in a row, so it
is written out plainly here. Inputs: binary coding feeds pixel / 255 in [0, 1]; ternary coding feeds
per-channel zero-mean values, (x - mean) / (3 sd) clipped to [-1, 1], as signed spikes.

The JPEG archive is decoded once with PIL into ``out/_cifar/cifar10_uint8.npz``.
"""

from __future__ import annotations

import io
import tarfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..encoding import make_generator, poisson_spikes
from ..neurons import if_neuron
from .common import Context, pyplot, save_figure, write_csv

DEFAULT_ARCHIVE = Path(__file__).resolve().parents[4] / "shared" / "data" / "cifar10" / "cifar10-jpeg.tar.gz"

CIFAR_SETTINGS: Dict[str, Dict[str, Any]] = {
    "smoke": {"synthetic": True, "n_train": 256, "n_test": 64, "widths": (8, 16), "hidden": 32, "epochs": 1,
              "batch": 32, "convert_T": 8, "balance_images": 16, "scale": 0.7, "finetune_T": 4,
              "finetune_batches": 2, "eval_T": [4, 8]},
    "reduced": {"synthetic": False, "n_train": 5000, "n_test": 500, "widths": (32, 64), "hidden": 512, "epochs": 3,
                "batch": 64, "convert_T": 64, "balance_images": 64, "scale": 0.7, "finetune_T": 16,
                "finetune_batches": 30, "eval_T": [16, 32, 64]},
    "full": {"synthetic": False, "n_train": None, "n_test": None, "widths": (64, 128), "hidden": 4096, "epochs": 100,
             "batch": 64, "convert_T": 200, "balance_images": 256, "scale": 0.7, "finetune_T": 100,
             "finetune_batches": 20 * 782, "eval_T": [100, 200]},
}


# -- data -----------------------------------------------------------------------------------------
def load_cifar(archive: Path, cache: Path) -> Dict[str, np.ndarray]:
    """CIFAR-10 as uint8 arrays (N, 32, 32, 3) and labels, decoded once from the JPEG tarball."""
    if cache.exists():
        with np.load(cache) as z:
            return {k: z[k] for k in z.files}
    from PIL import Image

    parts: Dict[str, Tuple[List[np.ndarray], List[str]]] = {"train": ([], []), "test": ([], [])}
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            bits = member.name.strip("./").split("/")
            if not member.isfile() or len(bits) != 3 or bits[0] not in parts:
                continue
            fh = tar.extractfile(member)
            assert fh is not None
            img = np.asarray(Image.open(io.BytesIO(fh.read())).convert("RGB"), dtype=np.uint8)
            parts[bits[0]][0].append(img)
            parts[bits[0]][1].append(bits[1])
    classes = sorted(set(parts["train"][1]))
    out = {"classes": np.array(classes)}
    for split, (imgs, names) in parts.items():
        out[f"{split}_x"] = np.stack(imgs)
        out[f"{split}_y"] = np.array([classes.index(n) for n in names], dtype=np.int64)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez(cache, **out)
    return out


def synthetic_cifar(n_train: int, n_test: int, seed: int = 0) -> Dict[str, np.ndarray]:
    """Ten classes told apart by mean colour and a stripe direction (smoke tests only)."""
    rng = np.random.default_rng(seed)
    colours = rng.uniform(40, 215, (10, 3))
    out: Dict[str, np.ndarray] = {"classes": np.array([f"c{i}" for i in range(10)])}
    for split, n in (("train", n_train), ("test", n_test)):
        y = rng.integers(0, 10, n)
        grid = np.arange(32)
        stripes = np.where((y[:, None, None] % 2) == 0, np.sin(grid[None, :, None] / (1 + y[:, None, None])),
                           np.sin(grid[None, None, :] / (1 + y[:, None, None])))
        x = colours[y][:, None, None, :] + 30 * stripes[..., None] + rng.normal(0, 10, (n, 32, 32, 3))
        out[f"{split}_x"] = np.clip(x, 0, 255).astype(np.uint8)
        out[f"{split}_y"] = y.astype(np.int64)
    return out


def normalise(x: np.ndarray, coding: str, mean: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """uint8 (N, 32, 32, 3) -> float32 (N, 3, 32, 32): [0, 1] (binary) or zero-mean [-1, 1] (ternary)."""
    f = x.astype(np.float32).transpose(0, 3, 1, 2) / 255.0
    if coding == "binary":
        return np.ascontiguousarray(f)
    return np.ascontiguousarray(np.clip((f - mean[None, :, None, None]) / (3 * sd[None, :, None, None]), -1, 1))


# -- networks -------------------------------------------------------------------------------------
class VGG5(nn.Module):
    """conv w1, avgpool, conv w2, conv w2, avgpool, FC (w2*8*8)-h-h-10; no bias; ReLU; dropout."""

    def __init__(self, widths: Sequence[int] = (64, 128), hidden: int = 4096, dropout: float = 0.2) -> None:
        super().__init__()
        w1, w2 = widths
        self.dropout = dropout
        conv_shapes = [(w1, 3, 3, 3), (w2, w1, 3, 3), (w2, w2, 3, 3)]
        fc_shapes = [(hidden, w2 * 64), (hidden, hidden), (10, hidden)]
        self.convs = nn.ParameterList([nn.Parameter(torch.empty(*s)) for s in conv_shapes])
        self.fcs = nn.ParameterList([nn.Parameter(torch.empty(*s)) for s in fc_shapes])
        for p in list(self.convs) + list(self.fcs):
            nn.init.kaiming_normal_(p, nonlinearity="relu")
        self.thresholds = [1.0] * 5  # hidden spiking layers: 3 conv + 2 FC

    # layer i of the sequence: (kind, pool input first)
    PLAN = (("conv", 0, False), ("conv", 1, True), ("conv", 2, False), ("fc", 0, True), ("fc", 1, False),
            ("fc", 2, False))

    def layer(self, i: int, h: Tensor, in_scale: float = 1.0) -> Tensor:
        kind, j, pool = self.PLAN[i]
        if pool:
            h = F.avg_pool2d(h, 2)
        if kind == "fc":
            h = h.flatten(1)
            if self.training and self.dropout > 0 and i > 3:
                h = F.dropout(h, self.dropout, True)
            return F.linear(h, self.fcs[j] * in_scale)
        return F.conv2d(h, self.convs[j] * in_scale, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        h = x
        for i in range(len(self.PLAN)):
            h = self.layer(i, h)
            if i < len(self.PLAN) - 1:
                h = F.relu(h)
        return h

    def spiking(self, spikes: Tensor, balance: Optional[Tuple[float, float]] = None, gamma: float = 0.3) -> Tensor:
        """Spiking run over input spikes [T, B, 3, 32, 32]; returns the output averaged over T.

        ``balance=(percentile, scale)`` sets each hidden layer's threshold from its input current
        on the way (threshold balancing), as the segmentation conversion does.
        """
        steps, batch = spikes.shape[:2]
        h = spikes.flatten(0, 1)
        scale_in = 1.0
        for i in range(len(self.PLAN)):
            current = self.layer(i, h, scale_in)
            if i == len(self.PLAN) - 1:
                return current.view(steps, batch, -1).mean(0)
            current = current.view(steps, batch, *current.shape[1:])
            if balance is not None:
                pos = current.detach().flatten()
                pos = pos[pos > 0]
                if pos.numel() > 4_000_000:
                    pos = pos[torch.randint(0, pos.numel(), (4_000_000,), generator=make_generator(i))]
                raw = float(torch.quantile(pos, balance[0] / 100.0)) if pos.numel() else 0.0
                self.thresholds[i] = raw * balance[1] if raw > 0 else 1.0
            s = if_neuron(current, self.thresholds[i], gamma)
            h = s.flatten(0, 1)
            scale_in = self.thresholds[i]
        raise AssertionError("unreachable")


# -- training and scoring -------------------------------------------------------------------------
def _batches(n: int, size: int, seed: int) -> List[Tensor]:
    perm = torch.randperm(n, generator=make_generator(seed))
    return [perm[i : i + size] for i in range(0, n - size + 1, size)]


def train_ann(model: VGG5, x: np.ndarray, y: np.ndarray, epochs: int, batch: int, seed: int) -> List[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    losses = []
    model.train()
    for ep in range(epochs):
        for idx in _batches(len(x), batch, seed + ep):
            xb = xt[idx]
            if ep % 2 == 1:  # cheap augmentation: horizontal flips on every other epoch
                xb = xb.flip(-1)
            loss = F.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    model.eval()
    return losses


@torch.no_grad()
def accuracy_ann(model: VGG5, x: np.ndarray, y: np.ndarray) -> float:
    model.eval()
    pred = torch.cat([model(torch.from_numpy(x[i : i + 256])).argmax(1) for i in range(0, len(x), 256)])
    return float((pred.numpy() == y).mean())


@torch.no_grad()
def accuracy_snn(model: VGG5, x: np.ndarray, y: np.ndarray, steps: int, coding: str, seed: int = 0) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(x), 100):
        xb = torch.from_numpy(x[i : i + 100])
        s = poisson_spikes(xb, steps, make_generator(seed * 1_000_003 + i), coding)
        correct += int((model.spiking(s).argmax(1).numpy() == y[i : i + 100]).sum())
    return correct / len(x)


def finetune(model: VGG5, x: np.ndarray, y: np.ndarray, steps: int, coding: str, batches: int, batch: int,
             seed: int) -> List[float]:
    """BPTT through the IF neurons (triangle surrogate), Adam 1e-4, thresholds kept fixed."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    gen = make_generator(seed + 77)
    losses: List[float] = []
    model.train()
    ep = 0
    while len(losses) < batches:
        for idx in _batches(len(x), batch, seed + 1000 + ep):
            out = model.spiking(poisson_spikes(xt[idx], steps, gen, coding))
            loss = F.cross_entropy(out, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            if len(losses) >= batches:
                break
        ep += 1
    model.eval()
    return losses


def table4(ctx: Context) -> Dict[str, Any]:
    """ANN, converted and fine-tuned SNN accuracy on CIFAR-10 for binary and ternary input spikes."""
    cs = dict(CIFAR_SETTINGS[ctx.mode])
    ctx.settings["cifar"] = cs
    if cs["synthetic"]:
        data = synthetic_cifar(cs["n_train"], cs["n_test"], ctx.seed)
    else:
        archive = Path(ctx.settings.get("cifar_archive") or DEFAULT_ARCHIVE)
        t0 = time.time()
        data = load_cifar(archive, ctx.out / "_cifar" / "cifar10_uint8.npz")
        ctx.log(f"CIFAR-10 loaded in {time.time() - t0:.0f} s")
    rng = np.random.default_rng(ctx.seed)
    tr = rng.permutation(len(data["train_y"]))[: cs["n_train"]] if cs["n_train"] else np.arange(len(data["train_y"]))
    te = np.arange(len(data["test_y"]))[: cs["n_test"]] if cs["n_test"] else np.arange(len(data["test_y"]))
    if cs["n_test"]:
        te = np.random.default_rng(ctx.seed + 1).permutation(len(data["test_y"]))[: cs["n_test"]]
    raw = data["train_x"][tr].astype(np.float32) / 255.0
    mean, sd = raw.mean((0, 1, 2)), raw.std((0, 1, 2))
    rows: List[Dict[str, Any]] = []
    for coding in ("binary", "ternary"):
        torch.manual_seed(ctx.seed)
        xtr, ytr = normalise(data["train_x"][tr], coding, mean, sd), data["train_y"][tr]
        xte, yte = normalise(data["test_x"][te], coding, mean, sd), data["test_y"][te]
        model = VGG5(cs["widths"], cs["hidden"])
        t0 = time.time()
        train_ann(model, xtr, ytr, cs["epochs"], cs["batch"], ctx.seed)
        rows.append({"coding": coding, "model": "ANN", "T": None, "accuracy": accuracy_ann(model, xte, yte),
                     "seconds": round(time.time() - t0, 1)})
        t0 = time.time()
        with torch.no_grad():
            bal = torch.from_numpy(xtr[: cs["balance_images"]])
            model.spiking(poisson_spikes(bal, cs["convert_T"], make_generator(ctx.seed), coding),
                          balance=(99.9, cs["scale"]))
        for t in cs["eval_T"]:
            rows.append({"coding": coding, "model": f"converted (balanced at T={cs['convert_T']})", "T": t,
                         "accuracy": accuracy_snn(model, xte, yte, t, coding), "seconds": round(time.time() - t0, 1)})
        t0 = time.time()
        finetune(model, xtr, ytr, cs["finetune_T"], coding, cs["finetune_batches"], 32, ctx.seed)
        for t in sorted({cs["finetune_T"], *cs["eval_T"]}):
            label = f"fine-tuned (T={cs['finetune_T']}, {cs['finetune_batches']} batches)"
            rows.append({"coding": coding, "model": label, "T": t, "accuracy": accuracy_snn(model, xte, yte, t, coding),
                         "seconds": round(time.time() - t0, 1)})
        mine = [r for r in rows if r["coding"] == coding]
        ctx.log("  " + "; ".join(f"{r['model']} T={r['T']}: {r['accuracy']:.3f}" for r in mine))
    write_csv(ctx.out / "table4.csv", rows)
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = list(dict.fromkeys(f"{r['model']}{'' if r['T'] is None else ' T=' + str(r['T'])}" for r in rows))
    x = np.arange(len(labels))
    for k, coding in enumerate(("binary", "ternary")):
        acc = {f"{r['model']}{'' if r['T'] is None else ' T=' + str(r['T'])}": r["accuracy"] for r in rows
               if r["coding"] == coding}
        ax.bar(x + (k - 0.5) * 0.4, [acc.get(lab, 0) for lab in labels], 0.4, label=coding)
    ax.set_xticks(x)
    ax.set_xticklabels(labels, rotation=35, ha="right", fontsize=7)
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    ax.set_title(f"Table 4: CIFAR-10 VGG-5, binary vs ternary ({ctx.mode} setting)", fontsize=10)
    save_figure(fig, ctx.out / "exp_table4.png", dpi=120)
    return {"rows": rows, "n_train": int(len(tr)), "n_test": int(len(te))}
