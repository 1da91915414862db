"""A run's log: ``OUT/log.csv`` (losses averaged over LOG_EVERY iterations, validation rows) and
``OUT/curves.png``."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np

from ..core.files import atomic_write

LOG_EVERY = 50  # iterations between log rows (losses averaged over them)
ADVERSARIAL_LOSSES = ("loss_gan", "loss_d")  # RaGAN generator / discriminator losses, log 2 at chance


class RunLog:
    """CSV log of losses and validation metrics, plus a PNG of the curves next to it.

    The log reads back as one run with increasing iterations: a row whose iteration is not past
    the one before it replaces the rows it overlaps (they came from a lineage abandoned at an
    earlier checkpoint), and :meth:`truncate` drops the rows past the checkpoint a run resumes from.
    """

    def __init__(self, out: Path, title: str) -> None:
        self.path, self.png, self.title = out / "log.csv", out / "curves.png", title
        self.rows: list[dict[str, Any]] = []
        if self.path.exists():
            with open(self.path) as fh:
                for r in csv.DictReader(fh):
                    row = {k: float(v) if v not in ("", None) else None for k, v in r.items()}
                    row["iter"] = int(row["iter"])
                    while self.rows and self.rows[-1]["iter"] >= row["iter"]:
                        self.rows.pop()
                    self.rows.append(row)

    def truncate(self, last_iter: int) -> None:
        """Forget rows past ``last_iter`` (the checkpoint a run resumes from); written with the next row."""
        self.rows = [r for r in self.rows if r["iter"] <= last_iter]

    def add(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        keys = list(dict.fromkeys(k for r in self.rows for k in r))

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as fh:
                w = csv.DictWriter(fh, keys)
                w.writeheader()
                w.writerows(self.rows)

        atomic_write(self.path, write)

    def plot(self) -> None:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        keys = list(dict.fromkeys(k for r in self.rows for k in r))
        adversarial = [k for k in keys if k in ADVERSARIAL_LOSSES]
        loss_keys = [k for k in keys if k.startswith("loss") and k not in adversarial]
        fig, axes = plt.subplots(1, 3 if adversarial else 2, figsize=(16 if adversarial else 11, 4))
        a, b = axes[0], axes[1]
        if adversarial:  # near log 2 = chance: a linear axis shows whether the discriminator learns
            c = axes[2]
            for k in adversarial:
                pts = [(r["iter"], r[k]) for r in self.rows if r.get(k) is not None]
                if pts:
                    c.plot(*zip(*pts), label=k, lw=0.8)
            c.axhline(np.log(2), color="grey", ls=":", lw=1, label="log 2 (chance)")
            c.set_xlabel("iteration"), c.set_title("adversarial losses (linear)"), c.legend(fontsize=7)
        for k in loss_keys:
            pts = [(r["iter"], r[k]) for r in self.rows if r.get(k) is not None]
            if pts:
                a.plot(*zip(*pts), label=k, lw=0.8)
        a.set_yscale("log"), a.set_xlabel("iteration"), a.set_title("training losses"), a.legend(fontsize=7)
        val = [r for r in self.rows if r.get("val_psnr") is not None]
        if val:
            it = [r["iter"] for r in val]
            b.plot(it, [r["val_psnr"] for r in val], "o-", label="model PSNR")
            b.plot(it, [r["val_psnr_bicubic"] for r in val], "--", label="bicubic PSNR")
            b.set_ylabel("PSNR (dB)"), b.set_xlabel("iteration")
            b2 = b.twinx()
            b2.plot(it, [r["val_ssim"] for r in val], "s:", color="tab:green", label="model SSIM")
            b2.set_ylabel("SSIM")
            b.legend(loc="lower right", fontsize=7)
        b.set_title("validation (val split, border crop = scale)")
        fig.suptitle(self.title)
        fig.tight_layout()
        fig.savefig(self.png, dpi=90)
        plt.close(fig)
