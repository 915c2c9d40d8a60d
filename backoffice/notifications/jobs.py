"""Job functions for the outbox; they take ids and the job runner commits."""

from backoffice.notifications import service


def deliver_message(message_id: int) -> str | None:
    status = service.deliver(message_id)
    return None if status is None else str(status)


def sweep_outbox() -> int:
    return service.sweep()
