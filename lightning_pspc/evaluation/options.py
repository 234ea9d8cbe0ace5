"""Options of the evaluation command, grouped by what they configure.

Each group is a dataclass of :class:`OptionGroup`: its fields are ``eval.py`` flags
(``num_train_probes`` is ``--num-train-probes``; the help is in the field's metadata, see
:func:`option`), :meth:`OptionGroup.check` validates them and :meth:`OptionGroup.build` makes the
evaluation members they configure. A member's group lives beside the member
(:mod:`lightning_pspc.evaluation.members`), so a new member brings its own flags;
:class:`~lightning_pspc.evaluation.settings.EvalSettings` collects the groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from .pipeline import EvaluationMember
    from .settings import EvalSettings


def option(default: Any, help: str, item: type | None = None) -> Any:
    """A dataclass field that is a command-line flag: ``help`` for ``--help``; ``item`` the type
    of each value of a list flag (``nargs="+"``)."""
    if isinstance(default, (list, tuple)):
        return dataclasses.field(
            default_factory=lambda: type(default)(default),
            metadata={"help": help, "item": item or str},
        )
    return dataclasses.field(default=default, metadata={"help": help, "item": item})


@dataclass
class OptionGroup:
    """A group of ``eval.py`` options (a dataclass of :func:`option` fields)."""

    #: the group's key in :class:`~lightning_pspc.evaluation.settings.EvalSettings`
    key: ClassVar[str]

    def check(self) -> None:
        """Raise ``ValueError`` (naming the flags) for a bad value; default: nothing to check."""
        return None

    def build(self, settings: EvalSettings) -> list[EvaluationMember]:
        """The evaluation members these options configure (default: none)."""
        return []

    def resolve(self, image_shape: Sequence[int], device: torch.device) -> dict[str, Any]:
        """``{option: value}`` deciding the options left to the data (``auto``) for images of
        ``image_shape`` ``[C, H, W]`` evaluated on ``device`` (default: none)."""
        return {}

    @classmethod
    def option_fields(cls) -> list[dataclasses.Field]:
        """The flags of the group, in order."""
        return [f for f in dataclasses.fields(cls) if "help" in f.metadata]


def flag(name: str) -> str:
    """``num_train_probes`` -> ``--num-train-probes``."""
    return "--" + name.replace("_", "-")
