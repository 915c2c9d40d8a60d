"""Customer jobs (rq): run by workers or periodically, each in its own transaction."""

from __future__ import annotations

import logging

from backoffice.customers.matching import backfill_keys, rematch_pending

log = logging.getLogger(__name__)


def rematch_nightly() -> dict[str, int]:
    """Nightly: fill the matching keys of holder rows that lack them (loaded around the ORM),
    then re-match every verified account that is not linked yet. `run_job` commits."""
    filled = backfill_keys()
    rematched = rematch_pending()
    log.info("association re-match: %d holder keys filled, %d accounts re-matched", filled, rematched)
    return {"keys_filled": filled, "rematched": rematched}
