"""The public customer API, versioned under /api/v1. Every error is problem+json."""

from customer_api.core import init_customer_api

__all__ = ["init_customer_api"]
