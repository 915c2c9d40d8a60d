"""The public customer API, versioned under /api/v1. Every error is problem+json."""

from flask import Blueprint

from customer_api.problems import register_problem_handlers

api = Blueprint("api", __name__, url_prefix="/api/v1")

__all__ = ["api", "register_problem_handlers"]
