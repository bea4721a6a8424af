"""Errors of the index layer. Input problems are ``ValueError`` subclasses (exit status 2)."""

from __future__ import annotations


class NotFoundError(LookupError):
    """A casing, incident or decision that does not exist (or was deleted)."""


class CatalogLockedError(RuntimeError):
    """Another process holds the data directory open for writing."""
