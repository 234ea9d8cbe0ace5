"""Plain helpers shared by the tests and by the scripts they launch (importable, unlike conftest).

* :class:`TinyNet` and :func:`tiny_datamodule`: a stand-in network and a tiny in-memory data set
  (the fixtures ``tiny_net`` / ``tiny_datamodule`` in ``tests/conftest.py`` hand them out);
* :func:`tiny_unet` and :func:`save_diffusers_model`: a diffusers ``UNet2DModel`` of a few
  thousand weights and a folder holding it with its scheduler (networks trained elsewhere);
* :func:`clean_env`, :func:`run_clean`, :func:`run_clean_together`: run a Python script in a
  subprocess without the launcher variables (``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_PORT``, ...)
  that a parent run may have left, so multi-process tests start their own process group.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import lightning
import torch
import torch.nn.functional as F
from torch import Tensor, nn

REPO = Path(__file__).resolve().parents[1]

# launcher variables a parent run (torchrun, Lightning, SLURM) may have left behind
LAUNCHER_VARS = (
    "LOCAL_RANK",
    "RANK",
    "WORLD_SIZE",
    "LOCAL_WORLD_SIZE",
    "NODE_RANK",
    "GROUP_RANK",
    "MASTER_ADDR",
    "MASTER_PORT",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_LOCALID",
)


class TinyNet(nn.Module):
    """Raw network ``F(x [B,C,H,W], c_noise [B]) -> [B,C,H,W]``: two convolutions, noise as a channel."""

    def __init__(self, channels: int = 1, width: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.inp = nn.Conv2d(channels + 1, width, 3, padding=1)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Conv2d(width, channels, 3, padding=1)

    def forward(self, x: Tensor, c_noise: Tensor) -> Tensor:
        c = c_noise.view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:]).to(x.dtype)  # [B,1,H,W]
        return self.out(self.drop(F.silu(self.inp(torch.cat([x, c], 1)))))  # [B,C,H,W]


def tiny_datamodule(num_train: int = 32, num_heldout: int = 8, batch_size: int = 8):
    """An ``ImageDataModule`` over random 1x8x8 uint8 images held in memory (seed 0)."""
    from lightning_pspc.data import ImageDataModule, TensorSource

    gen = torch.Generator().manual_seed(0)
    raw = torch.randint(
        0, 256, (num_train + num_heldout + 8, 1, 8, 8), generator=gen, dtype=torch.uint8
    )
    return ImageDataModule(
        TensorSource(raw, "random"),
        num_train=num_train,
        num_heldout=num_heldout,
        batch_size=batch_size,
    )


DIFFUSERS_TIMESTEPS = 300  # sigma from 0.0100 to 4.45 with diffusers' default linear betas


def tiny_unet(size: int = 8, channels: int = 1, out_channels: int | None = None, **kwargs):
    """A seeded ``UNet2DModel`` of two blocks (8 and 16 channels), no attention."""
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=size,
        in_channels=channels,
        out_channels=out_channels or channels,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
        add_attention=False,
        **kwargs,
    ).eval()


def save_diffusers_model(
    folder: Path, unet, prediction_type: str = "epsilon", layout: str = "pipeline", **scheduler
):
    """``unet`` and a ``DDPMScheduler`` (``clip_sample=False``) under ``folder``: ``pipeline``
    layout (``unet/`` + ``scheduler/``) or ``flat`` (config.json + scheduler_config.json)."""
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(
        num_train_timesteps=scheduler.pop("num_train_timesteps", DIFFUSERS_TIMESTEPS),
        clip_sample=False,
        prediction_type=prediction_type,
        **scheduler,
    )
    if layout == "pipeline":
        unet.save_pretrained(folder / "unet")
        sched.save_pretrained(folder / "scheduler")
    else:
        unet.save_pretrained(folder)
        sched.save_pretrained(folder)
    return sched


def clean_env(**extra: str) -> dict[str, str]:
    """``os.environ`` without launcher variables, for a CPU-only subprocess; plus ``extra``.

    The repository is put on ``PYTHONPATH`` (scripts import ``tests.helpers``), OpenMP gets one
    thread, CUDA is hidden and gloo uses the loopback interface.
    """
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in LAUNCHER_VARS and not k.startswith("TORCHELASTIC")
    }
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    if sys.platform.startswith("linux"):
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    env.update(extra)
    return env


def exited_pid() -> int:
    """The process id of a process that has already exited (its staging files are stale)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return int(proc.stdout)


def run_clean(
    args: Sequence[str], timeout: float, **extra_env: str
) -> subprocess.CompletedProcess[str]:
    """``python *args`` in the repository root with :func:`clean_env`; text stdout and stderr.

    Raises ``subprocess.TimeoutExpired`` (after killing the process) past ``timeout`` seconds.
    """
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=REPO,
        env=clean_env(**extra_env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_clean_together(
    arg_lists: Sequence[Sequence[str]], timeout: float, **extra_env: str
) -> list[subprocess.CompletedProcess[str]]:
    """Start ``python *args`` for every entry at once (e.g. the ranks of one process group).

    Waits for all of them (``timeout`` seconds each), kills any left running, and returns one
    ``CompletedProcess`` per entry with stderr merged into ``stdout``.
    """
    env = clean_env(**extra_env)
    procs = [
        subprocess.Popen(
            [sys.executable, *map(str, args)],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for args in arg_lists
    ]
    done = []
    try:
        for proc in procs:
            out = proc.communicate(timeout=timeout)[0]
            done.append(subprocess.CompletedProcess(proc.args, proc.returncode, out, None))
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return done


class RankLosses(lightning.Callback):
    """Test probe: every process appends its own per-step training loss (and the class of its
    checkpoint IO) to ``<dirpath>/train_loss_rank<r>.jsonl`` (Lightning's loggers write on rank 0
    only, and there the mean over processes). Configure it like any callback:
    ``--trainer.callbacks=[{"class_path": "tests.helpers.RankLosses", "init_args": {...}}]``."""

    def __init__(self, dirpath: str) -> None:
        self.dirpath = Path(dirpath)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        path = self.dirpath / f"train_loss_rank{trainer.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        row = {
            "step": trainer.global_step - 1,  # the optimizer step this batch made
            "epoch": trainer.current_epoch,
            "loss": float(outputs["loss"]),
            "n": int(batch.shape[0]),
            "checkpoint_io": type(trainer.strategy.checkpoint_io).__name__,
        }
        with path.open("a") as f:
            f.write(json.dumps(row) + "\n")


def rank_losses_callbacks(dirpath: Path) -> str:
    """``--trainer.callbacks=...`` value holding only :class:`RankLosses` writing to ``dirpath``."""
    spec = {"class_path": "tests.helpers.RankLosses", "init_args": {"dirpath": str(dirpath)}}
    return "--trainer.callbacks=" + json.dumps([spec])


def popen_stub(action: Callable[[list[str]], int], events: list | None = None) -> type:
    """A stand-in for ``subprocess.Popen`` in sweep tests: ``action(cmd)`` runs at once (in this
    process) and gives the exit code that ``poll()`` returns; ``events`` (if given) gets
    ``("start", cmd, env)`` and ``("end", cmd)`` in order."""

    class Popen:
        def __init__(self, cmd, env=None, stdout=None, stderr=None):
            self.cmd = cmd
            if events is not None:
                events.append(("start", cmd, env))
            if stdout is not None:
                stdout.write(f"output of {cmd[6]}\n")
            self.returncode = action(cmd)

        def poll(self):
            if events is not None:
                events.append(("end", self.cmd))
            return self.returncode

    return Popen
