"""Twin models in ``eval.py`` (Kadkhodaie et al. 2024; Zhang et al. 2023), and memorization
histories read back from checkpoints (Bonnaire et al. 2025).

Twins are two runs of one preset trained on the disjoint halves ``a`` and ``b`` of a ``2N``
subset (``--data.subset a|b``, ``sweep.py --twins``). :func:`twin_pairs` finds them among the
checkpoints by their configs; :func:`twin_record` compares their samples from the same noise
(the memorization samples: every run draws them from the same seeded noise).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from torch import Tensor

from ..metrics import REPRODUCIBILITY_THRESHOLD, TwinSimilarity
from ..runs import CONFIG_FILE, load_config


class TwinError(ValueError):
    """Twin runs that do not pair up; the message names the runs and the fix."""


def twin_key(config_path: str | Path) -> tuple[str, str | None]:
    """``(key, subset)`` of a run: ``key`` identifies the preset and training-set size (the
    ``model`` and ``data`` sections of its config without ``data.subset``), ``subset`` is
    ``"a"``, ``"b"`` or ``None``."""
    config = load_config(config_path)
    data = dict(config.get("data") or {})
    subset = data.pop("subset", None)
    key = json.dumps({"model": config.get("model"), "data": data}, sort_keys=True, default=str)
    return key, subset


def twin_pairs(paths: Sequence[str | Path]) -> list[tuple[int, int]]:
    """Indices ``(i_a, i_b)`` into ``paths`` of every twin pair, in the order of their ``a`` run.

    Checkpoints of runs with ``data.subset`` ``a`` / ``b`` must pair up exactly: same model and
    data (so the same preset and N) but the other half. Raises :class:`TwinError` naming the
    checkpoint when a half is missing or given twice. Runs without a subset are left out.
    """
    halves: dict[str, dict[str, list[int]]] = {}
    for i, path in enumerate(paths):
        key, subset = twin_key(Path(path).parent / CONFIG_FILE)
        if subset is not None:
            halves.setdefault(key, {"a": [], "b": []})[subset].append(i)
    pairs = []
    for sides in halves.values():
        a, b = sides["a"], sides["b"]
        if len(a) != 1 or len(b) != 1:
            have, want = ("a", "b") if len(a) >= len(b) else ("b", "a")
            named = ", ".join(repr(str(paths[i])) for i in sides[have])
            if sides[want]:
                raise TwinError(
                    f"twin checkpoints {named} (subset {have!r}) and "
                    f"{', '.join(repr(str(paths[i])) for i in sides[want])} do not pair up one to "
                    f"one; pass exactly one checkpoint of each half (e.g. <run>-a/last.ckpt and "
                    f"<run>-b/last.ckpt)"
                )
            raise TwinError(
                f"twin checkpoint {named} (trained on subset {have!r}) has no partner trained on "
                f"subset {want!r} with the same preset and N; also pass the other half's checkpoint "
                f"(sweep.py --twins writes <name>-n<N>-a and -b), or leave the twin out"
            )
        pairs.append((a[0], b[0]))
    return sorted(pairs)


def twin_record(
    train_a: Tensor,
    train_b: Tensor,
    samples_a: Tensor,
    samples_b: Tensor,
    threshold: float = REPRODUCIBILITY_THRESHOLD,
) -> dict[str, float]:
    """Twin similarity of samples ``[M, C, H, W]`` of twin ``a`` and ``b`` (row ``i`` of both
    from the same noise), with the twins' training sets ``[N, C, H, W]``: the
    :class:`~lightning_pspc.metrics.TwinSimilarity` summaries (``twin_cos_*``, ``train_cos_*``,
    ``reproducibility``, ``train_copy_fraction``) and the ``threshold``."""
    metric = TwinSimilarity(train_a, train_b, threshold=threshold)
    metric.update(samples_a, samples_b)
    return {k: float(v) for k, v in metric.compute().items()} | {"threshold": threshold}


def twin_feature_record(
    features: Any,
    train_a: Tensor,
    train_b: Tensor,
    samples_a: Tensor,
    samples_b: Tensor,
    threshold: float,
    batch_size: int = 64,
) -> dict[str, float]:
    """:func:`twin_record` in the space of ``features`` (images ``[B,C,H,W] -> [B, D]``, e.g.
    SSCD, :class:`~lightning_pspc.pretrained.FeatureExtractor`), with plain (uncentred) cosines
    of the descriptors as Zhang et al. (2023) use them: every key prefixed ``feature_``
    (``feature_twin_cos_*``, ``feature_train_cos_*``, ``feature_reproducibility``,
    ``feature_train_copy_fraction``, ``feature_threshold``)."""
    fa, fb = (features.embed(x, batch_size).double().cpu() for x in (samples_a, samples_b))
    ta, tb = (features.embed(x, batch_size).double().cpu() for x in (train_a, train_b))
    as_images = [v[:, :, None, None] for v in (fa, fb, ta, tb)]  # descriptors as [., D, 1, 1]
    metric = TwinSimilarity(
        as_images[2], as_images[3], threshold=threshold, mean=ta.new_zeros(ta.shape[1], 1, 1)
    )
    metric.update(as_images[0], as_images[1])
    record = {k: float(v) for k, v in metric.compute().items()} | {"threshold": threshold}
    return {f"feature_{k}": v for k, v in record.items()}


def memorization_history(ckpt: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The memorization history a ``MemorizationMonitor`` saved in a checkpoint's callback state:
    ``[{"epoch", "images_seen", "memorized_fraction"}, ...]`` (the monitor with the most
    evaluations when there are several; records without ``images_seen`` are left out; ``[]``
    when the run had no monitor)."""
    best: list[dict[str, Any]] = []
    for key, state in (ckpt.get("callbacks") or {}).items():
        if not str(key).startswith("MemorizationMonitor") or not isinstance(state, dict):
            continue
        rows = [
            {
                "epoch": int(epoch),
                "images_seen": int(record["images_seen"]),
                "memorized_fraction": float(record["memorized_fraction"]),
            }
            for epoch, record in state.get("histories", {}).get("memorization", [])
            if isinstance(record, dict) and record.get("images_seen") is not None
        ]
        if len(rows) > len(best):
            best = rows
    return best


def histories_by_size(records: Sequence[Mapping[str, Any]]) -> dict[int, list[dict[str, Any]]]:
    """Per training-set size, the memorization histories of its runs (twin halves, ...) averaged
    at each ``images_seen``: ``{N: [{"images_seen", "memorized_fraction", "runs"}, ...]}``, sorted
    by images seen; ``runs`` counts the histories that have the point. Sizes without a history
    are left out."""
    points: dict[int, dict[int, list[float]]] = {}
    for rec in records:
        for row in rec.get("memorization_history") or []:
            per_n = points.setdefault(int(rec["num_train"]), {})
            per_n.setdefault(int(row["images_seen"]), []).append(float(row["memorized_fraction"]))
    return {
        n: [
            {"images_seen": seen, "memorized_fraction": sum(v) / len(v), "runs": len(v)}
            for seen, v in sorted(per_n.items())
        ]
        for n, per_n in sorted(points.items())
    }
