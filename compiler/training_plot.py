"""The training plot (plots/training.png): loss and top-1 per epoch.

matplotlib costs about a second, so the plot is drawn in a process of its own, started as soon as training
ends: it overlaps export, surgery, build and verify instead of adding to the run. The run waits for it before
latency is timed, and the drawing holds the shared work lock (machine_lock.py) like any stage, so it never
runs while another job times. A history drawn before is copied from `<cache dir>/.plots/` instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from compiler.machine_lock import working

PLOT = "plots/training.png"


class TrainingPlot:
    """One run's plot: `start` with the training history, `wait` for the picture (its path in the run dir)."""

    def __init__(self, run_dir: Path, cache_dir: Path | None):
        self.png = run_dir / PLOT
        self.cache_dir = cache_dir
        self._process: subprocess.Popen | None = None
        self._cached: Path | None = None
        self._history: list[dict] = []

    def start(self, history: list[dict]) -> None:
        if not history or self._history:
            return
        self._history = history
        self.png.parent.mkdir(parents=True, exist_ok=True)
        if self.cache_dir is not None:
            digest = hashlib.sha256(json.dumps(history, sort_keys=True, default=str).encode()).hexdigest()[:32]
            self._cached = self.cache_dir / ".plots" / f"{digest}.png"   # beside the stage folders, not one
            if self._cached.is_file():
                shutil.copyfile(self._cached, self.png)
                return
        source = self.png.with_name(".history.json")
        source.write_text(json.dumps(history, default=str))
        self._process = subprocess.Popen([sys.executable, "-m", "compiler.training_plot", str(source), str(self.png)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def wait(self) -> str | None:
        """The plot's path relative to the run dir, once drawn; None without a history (or if drawing failed)."""
        if self._process is not None:
            _, error = self._process.communicate()
            self._process = None
            self.png.with_name(".history.json").unlink(missing_ok=True)
            if not self.png.is_file():  # the child's own failure: drawn here instead, so that it raises visibly
                print(f"compiler: warning: the plot process failed ({error.strip().splitlines()[-1:]}); drawing "
                      "it in this process", file=sys.stderr)
                draw(self._history, self.png)
            if self._cached is not None and self.png.is_file():
                self._remember()
        return PLOT if self._history and self.png.is_file() else None

    def _remember(self) -> None:
        """Keep the picture for the next run of the same history; a cache that cannot take it (a full disk)
        costs the next run a redraw, never this run."""
        tmp = self._cached.with_name(f".{self._cached.name}.tmp-{os.getpid()}")
        try:
            self._cached.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(self.png, tmp)
            os.replace(tmp, self._cached)
        except OSError:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)


def draw(history: list[dict], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure  # not pyplot: no global figure manager to import or close

    epochs = [h["epoch"] for h in history]
    fig = Figure(figsize=(9, 3.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ax_loss.plot(epochs, [h["loss"] for h in history], marker="o")
    ax_loss.set(title="training loss", xlabel="epoch")
    ax_acc.plot(epochs, [h["accuracy"] for h in history], marker="o", label="train")
    keras_bn = any(h.get("bn_stats") == "moving (Keras)" for h in history)
    ax_acc.plot(epochs, [h["val_accuracy"] for h in history], marker="o",
                label="test (Keras' moving BN statistics; final model re-estimates them)" if keras_bn else "test")
    ax_acc.set(title="top-1 accuracy", xlabel="epoch")
    ax_acc.legend()
    fig.tight_layout()
    tmp = png.with_name(f".{png.name}.tmp-{os.getpid()}")
    fig.savefig(tmp, dpi=100, format="png")
    os.replace(tmp, png)


def main(argv: list[str]) -> None:
    source, png = Path(argv[0]), Path(argv[1])
    with working():
        draw(json.loads(source.read_text()), png)


if __name__ == "__main__":
    main(sys.argv[1:])
