"""Outbox monitoring for admins, and the development mailbox."""

from flask import flash
from flask_admin import expose
from flask_admin.actions import action
from flask_babel import lazy_gettext as _l
from flask_babel import ngettext
from sqlalchemy import select

from backoffice.admin import ALL_ROLES, RoleBaseView, RoleView, time_filters
from backoffice.extensions import db
from backoffice.notifications import service
from backoffice.notifications.models import OutboxMessage
from backoffice.staff.models import Role
from backoffice.web import staff_actor

DEV_MAILBOX_SIZE = 100


class OutboxView(RoleView):
    allowed_roles = (Role.ADMIN,)
    can_create = False
    can_edit = False
    can_delete = False
    can_view_details = True
    column_list = (
        "id",
        "created_at",
        "channel",
        "recipient",
        "template",
        "status",
        "attempts",
        "sent_at",
        "last_error",
    )
    column_default_sort = ("id", True)
    column_filters = ("status", "channel", "template", *time_filters(OutboxMessage.created_at, _l("Created")))
    column_searchable_list = ("recipient",)
    column_details_exclude_list = ("body_html",)
    column_labels = {
        "id": "#",
        "channel": _l("Channel"),
        "recipient": _l("Recipient"),
        "template": _l("Template"),
        "language": _l("Language"),
        "subject": _l("Subject"),
        "body_text": _l("Text"),
        "status": _l("Status"),
        "attempts": _l("Attempts"),
        "last_error": _l("Last error"),
        "created_at": _l("Created"),
        "enqueued_at": _l("Queued"),
        "next_attempt_at": _l("Next attempt"),
        "sent_at": _l("Sent"),
        "delivered_via": _l("Delivered via"),
        "redact_after_delivery": _l("Redact after delivery"),
    }

    def __init__(self, database, **kwargs):
        super().__init__(OutboxMessage, database, **kwargs)

    @action("retry", _l("Send again"), _l("Send the selected given-up messages again?"))
    def action_retry(self, ids):
        count = service.retry([int(i) for i in ids], actor=staff_actor())
        db.session.commit()
        flash(
            ngettext(
                "%(num)d message queued again; only given-up (failed) messages are retried.",
                "%(num)d messages queued again; only given-up (failed) messages are retried.",
                count,
            ),
            "info",
        )


class DevMailboxView(RoleBaseView):
    """Every email and SMS the app has written, so the whole product can be tried on one machine."""

    allowed_roles = ALL_ROLES

    @expose("/")
    def index(self):
        messages = (
            db.session.execute(
                select(OutboxMessage).order_by(OutboxMessage.id.desc()).limit(DEV_MAILBOX_SIZE)
            )
            .scalars()
            .all()
        )
        return self.render("admin/dev_mailbox.html", messages=messages)
