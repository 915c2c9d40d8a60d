"""Append-only, hash-chained audit log of every staff action and customer-visible change."""

from backoffice.audit.service import Actor, record

__all__ = ["Actor", "record"]
