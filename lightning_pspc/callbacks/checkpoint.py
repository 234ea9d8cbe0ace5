"""``last.ckpt`` rewritten after every training epoch, whatever the monitored metric did."""

from __future__ import annotations

from pathlib import Path

from lightning.pytorch.callbacks import ModelCheckpoint


class LastCheckpoint(ModelCheckpoint):
    """Writes ``<dirpath>/<filename>.ckpt`` (default ``last.ckpt``) at the end of every epoch.

    Lightning's ``ModelCheckpoint(monitor="val/loss", save_last=True)`` rewrites ``last.ckpt``
    only in a step where it also saved a top-k checkpoint, so an epoch whose ``val/loss`` did not
    improve (or an epoch without validation) leaves a stale ``last.ckpt`` and a resume would
    replay those epochs. This callback has no monitor and saves at every training epoch end,
    after that epoch's validation. Nothing is saved when training raises, and Lightning writes
    the file atomically (temporary file, then rename): a crashed run keeps the previous
    ``last.ckpt`` intact.
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

    @property
    def state_key(self) -> str:
        # distinct from a ModelCheckpoint(monitor=None) the user may configure next to it
        return self._generate_state_key(role="last", filename=self.filename)
