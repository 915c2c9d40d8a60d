"""Configuration module for `rq cron backoffice.cron_config` (loaded by rq, not by the app)."""

from backoffice.periodic import register_with_rq

register_with_rq()
