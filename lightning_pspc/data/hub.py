"""The Hugging Face hub without hanging: is offline mode asked for, is the hub reachable, and a
context in which ``datasets`` and ``huggingface_hub`` use only the local cache. Used by the
hub-backed data source (:class:`~lightning_pspc.data.HFSource`) and the pretrained-network
loaders (:mod:`lightning_pspc.pretrained`)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from urllib.parse import urlparse


def offline_flagged() -> bool:
    """Whether the user asked for offline mode (environment or ``datasets`` config)."""
    import datasets
    import huggingface_hub

    truthy = {"1", "ON", "YES", "TRUE"}
    env = any(
        os.environ.get(var, "").upper() in truthy
        for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
    )
    return env or bool(datasets.config.HF_HUB_OFFLINE) or huggingface_hub.constants.HF_HUB_OFFLINE


def hub_reachable(timeout: float = 4.0) -> bool:
    """Quick TCP connect to the hub endpoint so that a machine without network never hangs."""
    from huggingface_hub import constants

    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=timeout).close()
    except OSError:
        return False
    return True


@contextlib.contextmanager
def forced_offline() -> Iterator[None]:
    """Make ``datasets`` / ``huggingface_hub`` use only the local cache (read at call time)."""
    import datasets
    import huggingface_hub

    saved = datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE
    datasets.config.HF_HUB_OFFLINE = huggingface_hub.constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        datasets.config.HF_HUB_OFFLINE, huggingface_hub.constants.HF_HUB_OFFLINE = saved
