"""The one error type of the pretrained loaders."""

from __future__ import annotations


class PretrainedError(ValueError):
    """A network or feature extractor that cannot be loaded or used as asked; the message names
    the spec and the fix."""
