"""Can W&B log? Checked before any work starts, without network (``train.py`` and ``eval.py``)."""

from __future__ import annotations

import os

OFFLINE_MODES = ("offline", "dryrun", "disabled")
DEFAULT_HOST = "https://api.wandb.ai"


def wandb_logs_locally() -> bool:
    """True when ``WANDB_MODE`` (or ``WANDB_DISABLED``) keeps W&B off the network."""
    mode = os.environ.get("WANDB_MODE", "").strip().lower()
    disabled = os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes")
    return mode in OFFLINE_MODES or disabled


def wandb_has_credentials() -> bool:
    """True when ``wandb`` would find credentials without asking: ``WANDB_API_KEY``,
    ``WANDB_IDENTITY_TOKEN_FILE``, the netrc file (``NETRC`` or ``~/.netrc``), wandb's settings
    file, or an earlier ``wandb.login()`` in this process. Reads files only, no network."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    try:
        from wandb.sdk import wandb_setup
        from wandb.sdk.lib import wbauth
    except ImportError:  # another wandb version: let wandb itself decide
        return True
    host = os.environ.get("WANDB_BASE_URL") or DEFAULT_HOST
    try:
        if wbauth.session_credentials(host=host) or wbauth.read_netrc_auth(host=host):
            return True
        return bool(wandb_setup.singleton().settings.api_key)
    except Exception:  # an unreadable netrc or settings file: wandb reports it itself
        return True


def wandb_login_problem(fixes: str) -> str | None:
    """None when W&B can log (offline, or online with credentials), else one message that
    names the problem and ``fixes`` (the caller's own options, e.g. another logger)."""
    if wandb_logs_locally() or wandb_has_credentials():
        return None
    return (
        "W&B would log online (WANDB_MODE is not offline) but no API key was found "
        "(WANDB_API_KEY, ~/.netrc or `wandb login`). Fix: log offline with WANDB_MODE=offline, "
        f"run `wandb login` / set WANDB_API_KEY, or {fixes}."
    )
