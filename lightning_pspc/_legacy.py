"""Import paths of modules that moved, kept importable.

Presets, saved runs' ``config.yaml`` and users' own code name classes and functions by import
path. When a module moves, its old dotted path is listed in :data:`MOVED` with the module (or
modules, for a module that was split) that now hold its names; importing the old path returns a
module that finds every name there, and ``python -m <old path>`` runs the new module. Installed
once by ``lightning_pspc/__init__.py``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from collections.abc import Sequence
from typing import Any

_P = "lightning_pspc."

#: ``{old module path: new module path(s)}``; a split module lists every part.
MOVED: dict[str, tuple[str, ...]] = {
    "cli": ("commands.train", "commands.train_config"),
    "compare": ("commands.compare",),
    "sweep": ("commands.sweep",),
    "checksum": ("runs.checkpoints",),
    "files": ("runs.files",),
    "wandb_check": ("runs.wandb_login",),
    "denoisers.numba_target": ("denoisers.kernels.numba_target",),
    "denoisers.simd": ("denoisers.kernels.simd",),
    "denoisers.pspc_cpu": ("denoisers.kernels.pspc_cpu",),
    "denoisers.pspc_rows": ("denoisers.kernels.pspc_rows",),
    "denoisers.pspc_values": ("denoisers.kernels.pspc_values",),
    "denoisers.fpmc_cpu": ("denoisers.kernels.fpmc_cpu",),
    "denoisers.els_triton": ("denoisers.kernels.els_triton",),
    "denoisers.reference": ("denoisers.loops.pspc_loops",),
    "denoisers.reference_local": ("denoisers.loops.local_loops",),
    "evaluation.engine": (
        "denoisers.registry",
        "evaluation.probes",
        "evaluation.batching",
        "evaluation.members.comparison",
        "evaluation.members.panel",
        "evaluation.members.memorization",
    ),
    "evaluation.evaluate": ("evaluation.checkpoints", "evaluation.settings"),
    "evaluation.command": ("commands.evaluate",),
    "evaluation.generalization": (
        "evaluation.members.generalization",
        "evaluation.members.agreement",
        "evaluation.members.memorization",
    ),
    "evaluation.locality": ("evaluation.members.patch_sizes", "evaluation.calibration"),
    "evaluation.local_references": ("denoisers.network_fitted",),
    "evaluation.plots_generalization": (
        "evaluation.plots.generalization_charts",
        "evaluation.plots.transition_charts",
    ),
    "evaluation.plots_locality": (
        "evaluation.plots.locality_charts",
        "evaluation.plots.transition_charts",
    ),
    "evaluation.twins": ("evaluation.twin_runs",),
    "callbacks.comparison": ("callbacks.denoiser_comparison",),
    "callbacks.generalization": ("callbacks.generalization_monitor",),
    "callbacks.locality": ("callbacks.locality_monitor",),
    "callbacks.memorization": ("callbacks.memorization_monitor",),
    "callbacks.samples": ("callbacks.sample_grid",),
    "metrics.agreement": ("metrics.sample_agreement",),
    "metrics.memorization": ("metrics.memorized_fraction",),
    "metrics.similarity": ("metrics.neighbour_stats",),
    "metrics.twins": ("metrics.twin_similarity",),
}


class _MovedModule(types.ModuleType):
    """An old module path: its names are looked up in the new modules, in order."""

    def __init__(self, name: str, targets: Sequence[str]) -> None:
        super().__init__(name, f"Moved to {', '.join(targets)}.")
        self.__targets = tuple(targets)

    def __getattr__(self, attr: str) -> Any:
        for target in self.__targets:
            module = importlib.import_module(target)
            if hasattr(module, attr):
                return getattr(module, attr)
        raise AttributeError(
            f"module {self.__name__!r} (moved to {self.__targets}) has no {attr!r}"
        )

    def __dir__(self) -> list[str]:
        names = set(super().__dir__())
        for target in self.__targets:
            names |= set(dir(importlib.import_module(target)))
        return sorted(names)


class _MovedLoader(importlib.abc.Loader):
    def __init__(self, targets: Sequence[str]) -> None:
        self.targets = tuple(targets)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        if len(self.targets) == 1:  # one new home: the very same module object
            return importlib.import_module(self.targets[0])
        return _MovedModule(spec.name, self.targets)

    def exec_module(self, module: types.ModuleType) -> None:
        return None

    def get_code(self, fullname: str) -> types.CodeType | None:
        """Code that runs the new module as ``__main__``, so that ``python -m <old path>``
        runs it."""
        source = f"import runpy\nrunpy.run_module({self.targets[0]!r}, run_name='__main__', alter_sys=True)\n"
        return compile(source, fullname, "exec")

    def is_package(self, fullname: str) -> bool:
        return False


class _MovedFinder(importlib.abc.MetaPathFinder):
    def find_spec(
        self, fullname: str, path: Any = None, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(_P) or fullname[len(_P) :] not in MOVED:
            return None
        targets = tuple(_P + t for t in MOVED[fullname[len(_P) :]])
        origin = importlib.util.find_spec(targets[0]).origin  # type: ignore[union-attr]
        return importlib.machinery.ModuleSpec(fullname, _MovedLoader(targets), origin=origin)


def install() -> None:
    """Make the old paths of :data:`MOVED` importable (idempotent)."""
    if not any(isinstance(f, _MovedFinder) for f in sys.meta_path):
        sys.meta_path.append(_MovedFinder())
