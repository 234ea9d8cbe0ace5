"""Runs: where a run lives, its checkpoints, and rebuilding it from its folder.

Library code shared by the training command (:mod:`lightning_pspc.commands.train`), the
evaluation (:mod:`lightning_pspc.evaluation`), the sweep and the benchmarks; none of it depends
on a command.

* :mod:`.folders`: run names, the folder of a resumed run, the W&B run id file;
* :mod:`.checkpoints`: reading a checkpoint with every check (missing, corrupt, checksum, other
  architecture) and the SHA-256 of its weights;
* :mod:`.rebuild`: a run's model and data from its ``config.yaml``;
* :mod:`.checkpoint_io`: checkpoint files staged beside their target and renamed over it, and
  the one error of a full disk;
* :mod:`.files`: the one atomic file write; :mod:`.wandb_login`: can W&B log here.
"""

from .checkpoint_io import AtomicCheckpointIO, CheckpointWriteError, use_atomic_checkpoint_io
from .checkpoints import (
    CHECKSUM_KEY,
    add_checksum,
    check_checkpoint_matches,
    checksum_mismatch,
    read_checkpoint,
    state_dict_sha256,
)
from .files import write_atomic
from .folders import (
    CONFIG_FILE,
    WANDB_ID_FILE,
    RunSetupError,
    check_run_name,
    default_run_name,
    new_wandb_id,
    refuse_to_clobber,
    resume_dir,
    store_wandb_id,
    stored_wandb_id,
)
from .rebuild import (
    build_datamodule,
    build_from_config,
    check_network_accepts,
    data_preset_section,
    image_shape_of,
    load_config,
    load_run,
)
from .wandb_login import wandb_login_problem

__all__ = [
    "CHECKSUM_KEY",
    "AtomicCheckpointIO",
    "CheckpointWriteError",
    "CONFIG_FILE",
    "WANDB_ID_FILE",
    "RunSetupError",
    "add_checksum",
    "build_datamodule",
    "build_from_config",
    "check_checkpoint_matches",
    "check_network_accepts",
    "check_run_name",
    "checksum_mismatch",
    "data_preset_section",
    "default_run_name",
    "image_shape_of",
    "load_config",
    "load_run",
    "new_wandb_id",
    "read_checkpoint",
    "refuse_to_clobber",
    "resume_dir",
    "state_dict_sha256",
    "store_wandb_id",
    "stored_wandb_id",
    "use_atomic_checkpoint_io",
    "wandb_login_problem",
    "write_atomic",
]
