"""Errors of the imaging pipeline."""

from __future__ import annotations


class PipelineInputError(ValueError):
    """The case's images or masks cannot be used (empty mask, mismatched grids): not retried."""


class ModelError(RuntimeError):
    """A model or its weights cannot be used; the message says which file and why."""
