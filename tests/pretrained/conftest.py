"""Tiny diffusers models saved in both folder layouts (made here, never downloaded)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import save_diffusers_model, tiny_unet


@pytest.fixture(scope="session")
def diffusers_models(tmp_path_factory) -> dict[str, Path]:
    """``{prediction type: folder}`` (pipeline layout) for the three types, and ``"flat"``: the
    epsilon model in the flat layout; 1x8x8 images."""
    root = tmp_path_factory.mktemp("diffusers")
    unet = tiny_unet()
    folders = {}
    for kind in ("epsilon", "v_prediction", "sample"):
        save_diffusers_model(root / kind, unet, kind)
        folders[kind] = root / kind
    save_diffusers_model(root / "flat", unet, "epsilon", layout="flat")
    folders["flat"] = root / "flat"
    return folders
