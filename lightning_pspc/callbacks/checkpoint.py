"""``best.ckpt`` tracking that survives a moved run folder, and ``last.ckpt`` rewritten after
every training epoch (and on Ctrl-C), whatever the monitored metric did. Both write their files
atomically through :class:`~lightning_pspc.runs.checkpoint_io.AtomicCheckpointIO`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info

from ..runs.checkpoint_io import use_atomic_checkpoint_io


class RunCheckpoint(ModelCheckpoint):
    """A ``ModelCheckpoint`` whose best-so-far state follows its run folder when it was moved.

    Lightning drops the saved scores (``best_model_score``, ``best_k_models``) when the
    checkpoint's ``dirpath`` differs from the callback's, so a resumed run in a moved folder would
    overwrite ``best.ckpt`` with a worse model. When the saved best checkpoint exists under the
    same name in this callback's folder, the saved paths are mapped into it instead.

    At setup the trainer's strategy gets an :class:`~lightning_pspc.runs.checkpoint_io.
    AtomicCheckpointIO` in place of Lightning's default checkpoint IO (on every process): each
    file is staged in its own folder and renamed over the target, so a failed save (a full disk,
    a killed process) leaves the previous checkpoint whole, and a full disk stops the run with
    one :class:`~lightning_pspc.runs.checkpoint_io.CheckpointWriteError`.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        use_atomic_checkpoint_io(trainer.strategy)
        super().setup(trainer, pl_module, stage)

    @property
    def state_key(self) -> str:
        # ModelCheckpoint's key: checkpoints written before this class existed still load
        return "ModelCheckpoint" + super().state_key.removeprefix(RunCheckpoint.__qualname__)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        old = state_dict.get("dirpath")
        best = state_dict.get("best_model_path")
        if old and self.dirpath and old != self.dirpath and best:
            new = Path(self.dirpath)
            if (new / Path(best).name).is_file():
                state_dict = moved_state(state_dict, Path(old), new)
        super().load_state_dict(state_dict)


def moved_state(state: dict[str, Any], old: Path, new: Path) -> dict[str, Any]:
    """``ModelCheckpoint`` state with every path in folder ``old`` moved to folder ``new``."""

    def move(path: Any) -> Any:
        return str(new / Path(path).name) if path and Path(path).parent == old else path

    state = dict(state, dirpath=str(new))
    for key in ("best_model_path", "kth_best_model_path", "last_model_path"):
        if key in state:
            state[key] = move(state[key])
    if "best_k_models" in state:
        state["best_k_models"] = {move(k): v for k, v in state["best_k_models"].items()}
    return state


class LastCheckpoint(RunCheckpoint):
    """Writes ``<dirpath>/<filename>.ckpt`` (default ``last.ckpt``) at the end of every epoch.

    Lightning's ``ModelCheckpoint(monitor="val/loss", save_last=True)`` rewrites ``last.ckpt``
    only in a step where it also saved a top-k checkpoint, so an epoch whose ``val/loss`` did not
    improve (or an epoch without validation) leaves a stale ``last.ckpt`` and a resume would
    replay those epochs. This callback has no monitor and saves at every training epoch end,
    after that epoch's validation.

    A Ctrl-C (``KeyboardInterrupt``) while fitting also saves ``last.ckpt``, mid-epoch, once at
    least one optimizer step has run in this fit, so even an interrupted first epoch can be
    resumed with ``--ckpt_path``. Nothing is saved when training raises anything else. The file
    is written atomically (a staging file in the same folder, then one rename; see
    :class:`RunCheckpoint`): a crashed run or a full disk keeps the previous ``last.ckpt`` intact.
    """

    def __init__(self, dirpath: str | Path | None = None, filename: str = "last") -> None:
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=None,
            save_top_k=1,
            save_last=False,
            every_n_epochs=1,
            save_on_train_epoch_end=True,
            enable_version_counter=False,  # overwrite, never last-v1.ckpt
        )
        self._start_step: int | None = None

    @property
    def state_key(self) -> str:
        # distinct from a ModelCheckpoint(monitor=None) the user may configure next to it
        return self._generate_state_key(role="last", filename=self.filename)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._start_step = trainer.global_step  # after a resume has restored the state

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        """On ``KeyboardInterrupt`` during fit, save the steps run so far to ``last.ckpt``.

        Before this fit's first optimizer step there is nothing new to save (and the state may
        be half restored from a checkpoint), so nothing is written. The checkpoint is written by
        rank 0 without a barrier: under DDP the other processes may be stopped anywhere.
        """
        if not isinstance(exception, KeyboardInterrupt) or trainer.state.fn != TrainerFn.FITTING:
            return
        if self._start_step is None or trainer.global_step <= self._start_step:
            return
        filepath = self.format_checkpoint_name(metrics={})
        checkpoint = trainer._checkpoint_connector.dump_checkpoint(weights_only=False)
        trainer.strategy.save_checkpoint(checkpoint, filepath)
        rank_zero_info(
            f"Interrupted at step {trainer.global_step}: saved {filepath}; resume with "
            f"--ckpt_path {filepath}"
        )
