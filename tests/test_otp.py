"""One-time codes: 6 digits stored only as an HMAC, bound to one challenge and one document,
5 wrong tries, 10-minute lifetime, resends spaced and capped per challenge and per phone, and
an SMS whose text is blanked once a real gateway has it."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from sqlalchemy import func, select

from backoffice import otp
from backoffice.extensions import db
from backoffice.notifications.models import OutboxMessage, OutboxStatus
from backoffice.notifications.service import REDACTED_TEXT
from backoffice.otp import OtpChallenge, OtpCode, OtpError
from backoffice.staff.models import Role
from tests.conftest import TEST_SECRET_KEY
from tests.factories import signed_in_client
from tests.faults import SmsGateway

PHONE = "+34612345678"
OTHER_PHONE = "+34687654321"
DOCUMENT = hashlib.sha256(b"e-Customer service contract v1 for 12345678Z").hexdigest()
OTHER_DOCUMENT = hashlib.sha256(b"some other document").hexdigest()
NOW = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
CODE = re.compile(r"\b(\d{6})\b")
GSM7 = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡"
    "ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)


def open_challenge(
    *, phone: str = PHONE, subject_id: str = "registration-1", now: datetime | None = NOW, **extra
):
    values = {
        "purpose": "ecustomer_contract",
        "subject_type": "ecustomer_registration",
        "subject_id": subject_id,
        "phone": phone,
        "document_sha256": DOCUMENT,
        "language": "es",
    } | extra
    return otp.open_challenge(now=now, **values)


def last_sms(phone: str = PHONE) -> OutboxMessage:
    return db.session.execute(
        select(OutboxMessage)
        .where(OutboxMessage.recipient == phone)
        .order_by(OutboxMessage.id.desc())
        .limit(1)
    ).scalar_one()


def last_code(phone: str = PHONE) -> str:
    """The code in the newest SMS to `phone`, read as the customer reads it."""
    return CODE.search(last_sms(phone).body_text).group(1)


def sms_count() -> int:
    return db.session.execute(select(func.count()).select_from(OutboxMessage)).scalar_one()


def refused(call, *args, **kwargs) -> OtpError:
    with pytest.raises(OtpError) as caught:
        call(*args, **kwargs)
    return caught.value


def verify(challenge, code, *, document=DOCUMENT, at=timedelta(minutes=1)):
    return otp.verify_code(challenge, code, document_sha256=document, now=NOW + at)


def resend(challenge, *, at: timedelta, language: str = "es"):
    return otp.resend_code(challenge, language=language, now=NOW + at)


def wrong(code: str) -> str:
    return f"{(int(code) + 1) % 10**6:06d}"


# The code and how it is stored


def test_codes_are_six_random_digits(app):
    codes = set()
    for number in range(5):
        open_challenge(subject_id=f"registration-{number}")
        codes.add(last_code())
    assert all(re.fullmatch(r"\d{6}", code) for code in codes)
    assert len(codes) > 1


def test_a_small_code_is_zero_padded_and_never_stored_in_clear(app, monkeypatch):
    monkeypatch.setattr(otp.secrets, "randbelow", lambda bound: 4821)
    challenge = open_challenge()
    db.session.expire_all()

    assert last_code() == "004821"
    for model in (OtpChallenge, OtpCode):
        for row in db.session.execute(select(model)).scalars():
            for column in model.__table__.columns:
                assert "004821" not in str(getattr(row, column.key)), column
    key = hmac.new(TEST_SECRET_KEY.encode(), b"otp-code-v1", hashlib.sha256).digest()
    stored = db.session.execute(select(OtpCode.code_hmac)).scalar_one()
    assert stored == hmac.new(key, f"{challenge.id}:004821".encode(), hashlib.sha256).hexdigest()


def test_the_code_expires_after_the_configured_lifetime(app):
    open_challenge()
    code = db.session.execute(select(OtpCode)).scalar_one()
    assert code.sent_at == NOW
    assert code.expires_at == NOW + timedelta(minutes=10)


def test_unknown_purposes_and_malformed_document_hashes_are_programming_errors(app):
    with pytest.raises(ValueError, match="purpose"):
        open_challenge(purpose="newsletter")
    with pytest.raises(ValueError, match="SHA-256"):
        open_challenge(document_sha256="not-a-hash")
    assert sms_count() == 0


# Verifying


def test_the_right_code_completes_the_challenge(app):
    challenge = open_challenge()

    verify(challenge, last_code())

    assert challenge.completed_at == NOW + timedelta(minutes=1)
    assert challenge.wrong_attempts == 0
    assert db.session.execute(select(OtpCode.used_at)).scalar_one() == NOW + timedelta(minutes=1)


def test_the_code_is_accepted_with_surrounding_spaces(app):
    challenge = open_challenge()

    verify(challenge, f"  {last_code()}\n")

    assert challenge.completed_at is not None


def test_a_completed_challenge_accepts_nothing_more(app):
    challenge = open_challenge()
    code = last_code()
    verify(challenge, code)

    assert refused(verify, challenge, code).code == "challenge_closed"
    assert refused(resend, challenge, at=timedelta(minutes=5)).code == "challenge_closed"


def test_each_wrong_try_lowers_attempts_left(app):
    challenge = open_challenge()
    bad = wrong(last_code())

    left = [refused(verify, challenge, bad).attempts_left for _ in range(4)]

    assert left == [4, 3, 2, 1]
    assert challenge.wrong_attempts == 4
    assert challenge.exhausted_at is None


def test_the_fifth_wrong_try_exhausts_the_challenge_and_then_even_the_right_code_fails(app):
    challenge = open_challenge()
    code = last_code()
    for _ in range(4):
        assert refused(verify, challenge, wrong(code)).code == "code_invalid"

    fifth = refused(verify, challenge, wrong(code), at=timedelta(minutes=2))

    assert (fifth.code, fifth.attempts_left) == ("attempts_exhausted", 0)
    assert challenge.exhausted_at == NOW + timedelta(minutes=2)
    assert refused(verify, challenge, code).code == "attempts_exhausted"
    assert challenge.completed_at is None
    assert challenge.wrong_attempts == 5


def test_an_exhausted_challenge_cannot_get_a_new_code(app):
    challenge = open_challenge()
    for _ in range(5):
        refused(verify, challenge, wrong(last_code()))
    sent = sms_count()

    assert refused(resend, challenge, at=timedelta(minutes=5)).code == "challenge_closed"
    assert sms_count() == sent


@pytest.mark.parametrize(
    "attempt", ["12345", "1234567", "abcdef", "", "   ", "12 345", "１２３４５６", "12345a"]
)
def test_anything_but_six_digits_counts_as_a_wrong_try(app, attempt):
    challenge = open_challenge()

    error = refused(verify, challenge, attempt)

    assert (error.code, error.attempts_left) == ("code_invalid", 4)
    assert challenge.wrong_attempts == 1


def test_a_wrong_try_is_flushed_for_the_caller_to_commit_although_it_raises(make_app):
    app = make_app()
    with app.app_context():
        challenge = open_challenge()
        challenge_id = challenge.id
        refused(verify, challenge, wrong(last_code()))
        db.session.commit()
        db.session.remove()

        assert db.session.get(OtpChallenge, challenge_id).wrong_attempts == 1


def test_a_code_cannot_sign_another_document(app):
    challenge = open_challenge()
    code = last_code()

    error = refused(verify, challenge, code, document=OTHER_DOCUMENT)

    assert error.code == "document_mismatch"
    assert challenge.wrong_attempts == 0  # the hash is the server's, not a guess: not counted
    assert challenge.completed_at is None
    verify(challenge, code)
    assert challenge.completed_at is not None


def test_a_code_only_works_for_its_own_challenge(app):
    first = open_challenge(subject_id="registration-1")
    first_code = last_code()
    second = open_challenge(subject_id="registration-2")

    assert refused(verify, second, first_code).code == "code_invalid"
    assert second.wrong_attempts == 1
    verify(first, first_code)


# Expiry


def test_the_code_still_works_just_before_ten_minutes(app):
    with time_machine.travel(NOW, tick=False) as traveller:
        challenge = open_challenge(now=None)
        traveller.shift(timedelta(minutes=9, seconds=59))

        otp.verify_code(challenge, last_code(), document_sha256=DOCUMENT)

    assert challenge.completed_at == NOW + timedelta(minutes=9, seconds=59)


def test_the_code_has_expired_just_after_ten_minutes(app):
    with time_machine.travel(NOW, tick=False) as traveller:
        challenge = open_challenge(now=None)
        code = last_code()
        traveller.shift(timedelta(minutes=10, seconds=1))

        error = refused(otp.verify_code, challenge, code, document_sha256=DOCUMENT)

    assert error.code == "code_expired"
    assert challenge.wrong_attempts == 0  # nothing was compared
    assert challenge.completed_at is None


def test_the_code_has_expired_at_exactly_ten_minutes(app):
    challenge = open_challenge()

    assert refused(verify, challenge, last_code(), at=timedelta(minutes=10)).code == "code_expired"


def test_after_expiry_a_resend_gives_a_working_code(app):
    challenge = open_challenge()
    resend(challenge, at=timedelta(minutes=12))

    verify(challenge, last_code(), at=timedelta(minutes=13))

    assert challenge.completed_at is not None


# Resending


def test_a_resend_within_sixty_seconds_is_refused_with_the_seconds_left(app):
    challenge = open_challenge()
    sent = sms_count()

    soon = refused(resend, challenge, at=timedelta(seconds=30))
    almost = refused(resend, challenge, at=timedelta(seconds=59, microseconds=500000))

    assert (soon.code, soon.retry_after) == ("resend_too_soon", 30)
    assert (almost.code, almost.retry_after) == ("resend_too_soon", 1)
    assert sms_count() == sent


def test_a_resend_after_sixty_seconds_kills_the_old_code_and_keeps_the_wrong_tries(app):
    challenge = open_challenge()
    old = last_code()
    refused(verify, challenge, wrong(old))

    resend(challenge, at=timedelta(seconds=60))
    new = last_code()

    assert challenge.wrong_attempts == 1
    if old != new:  # one chance in a million that the new code repeats the old one
        error = refused(verify, challenge, old, at=timedelta(seconds=90))
        assert (error.code, error.attempts_left) == ("code_invalid", 3)
        assert challenge.wrong_attempts == 2
    codes = db.session.execute(select(OtpCode).order_by(OtpCode.id)).scalars().all()
    assert [code.superseded_at for code in codes] == [NOW + timedelta(seconds=60), None]
    verify(challenge, new, at=timedelta(seconds=95))
    assert challenge.completed_at is not None


def test_a_resend_never_gives_more_tries(app):
    challenge = open_challenge()
    for _ in range(4):
        refused(verify, challenge, wrong(last_code()))

    resend(challenge, at=timedelta(minutes=2))

    assert (
        refused(verify, challenge, wrong(last_code()), at=timedelta(minutes=3)).code == "attempts_exhausted"
    )


def test_the_resend_is_in_the_language_asked_for(app):
    challenge = open_challenge(language="es")

    resend(challenge, at=timedelta(minutes=1), language="en")

    assert last_sms().language == "en"
    assert last_sms().body_text.startswith("Ventanilla: your code")


def test_at_most_three_resends_per_hour_per_challenge(app):
    challenge = open_challenge()
    for seconds in (60, 120, 180):
        resend(challenge, at=timedelta(seconds=seconds))
    sent = sms_count()

    error = refused(resend, challenge, at=timedelta(seconds=240))

    # The resend sent at +60 s leaves the one-hour window at +3660 s.
    assert (error.code, error.retry_after) == ("resend_limit", 3660 - 240)
    assert sms_count() == sent
    assert refused(resend, challenge, at=timedelta(seconds=3659)).code == "resend_limit"
    resend(challenge, at=timedelta(seconds=3660))
    assert sms_count() == sent + 1


def test_at_most_three_resends_per_hour_per_phone_across_challenges(app):
    first = open_challenge(subject_id="registration-1")
    second = open_challenge(subject_id="registration-2")  # first codes are not resends
    elsewhere = open_challenge(subject_id="registration-3", phone=OTHER_PHONE)
    resend(first, at=timedelta(seconds=60))
    resend(first, at=timedelta(seconds=120))
    resend(second, at=timedelta(seconds=60))

    error = refused(resend, second, at=timedelta(seconds=180))

    assert (error.code, error.retry_after) == ("resend_limit", 3660 - 180)
    resend(elsewhere, at=timedelta(seconds=180))  # another phone is not affected
    resend(second, at=timedelta(seconds=3660))


def test_when_both_limits_apply_the_later_time_is_given(app):
    challenge = open_challenge()
    for seconds in (60, 120, 3650):
        resend(challenge, at=timedelta(seconds=seconds))

    hourly = refused(resend, challenge, at=timedelta(seconds=3655))
    interval = refused(resend, challenge, at=timedelta(seconds=3660))

    # The hourly limit ends at +3660 s (the +60 s resend leaves the window), but the last code
    # went out at +3650 s, so the next one may not go before +3710 s.
    assert (hourly.code, hourly.retry_after) == ("resend_limit", 55)
    assert (interval.code, interval.retry_after) == ("resend_too_soon", 50)
    resend(challenge, at=timedelta(seconds=3710))


# The SMS


@pytest.mark.parametrize(
    ("language", "purpose", "text"),
    [
        (
            "es",
            "ecustomer_contract",
            "Ventanilla: tu codigo para firmar el contrato de servicio e-Customer es {code}. "
            "Caduca en 10 minutos. No lo compartas con nadie.",
        ),
        (
            "en",
            "ecustomer_contract",
            "Ventanilla: your code to sign the e-Customer service contract is {code}. "
            "It expires in 10 minutes. Do not share it with anyone.",
        ),
        (
            "es",
            "representative_contract",
            "Ventanilla: tu codigo para firmar el contrato de representante e-Customer es {code}. "
            "Caduca en 10 minutos. No lo compartas con nadie.",
        ),
        (
            "en",
            "representative_contract",
            "Ventanilla: your code to sign the e-Customer representative contract is {code}. "
            "It expires in 10 minutes. Do not share it with anyone.",
        ),
        (
            "es",
            "phone_verification",
            "Ventanilla: tu codigo para confirmar este telefono en tu cuenta es {code}. "
            "Caduca en 10 minutos. No lo compartas con nadie.",
        ),
        (
            "en",
            "phone_verification",
            "Ventanilla: your code to confirm this phone on your account is {code}. "
            "It expires in 10 minutes. Do not share it with anyone.",
        ),
    ],
)
def test_the_sms_says_only_the_code_its_purpose_and_its_lifetime(app, language, purpose, text):
    open_challenge(language=language, purpose=purpose)
    message = last_sms()
    code = last_code()

    assert message.body_text == text.format(code=code)
    assert message.template == "one_time_code"
    assert message.redact_after_delivery is True
    assert PHONE[-6:] not in message.body_text and DOCUMENT[:8] not in message.body_text
    assert len(message.body_text) <= 160 and set(message.body_text) <= GSM7  # one SMS


# Delivery: blanked at a real gateway, readable in the dev mailbox


@pytest.fixture
def gateway():
    gateway = SmsGateway()
    yield gateway
    gateway.close()


def test_the_sms_text_is_blanked_once_a_real_gateway_has_it(make_app, gateway):
    with make_app(SMS_WEBHOOK_URL=gateway.url, REDIS_URL=None).app_context():
        challenge = open_challenge()
        db.session.commit()

        [request] = gateway.requests
        delivered = json.loads(request["body"])["text"]
        code = CODE.search(delivered).group(1)
        message = last_sms()
        assert message.status == OutboxStatus.SENT
        assert message.delivered_via == "sms_webhook"
        assert message.body_text == REDACTED_TEXT
        assert code not in message.body_text
        verify(challenge, code)
        assert challenge.completed_at is not None


def test_other_sms_keep_their_text_after_a_real_delivery(make_app, gateway):
    from backoffice.notifications import service

    with make_app(SMS_WEBHOOK_URL=gateway.url, REDIS_URL=None).app_context():
        service.queue_sms(PHONE, "test_message", {})
        db.session.commit()

        assert last_sms().body_text.startswith("Ventanilla: mensaje de prueba")


def test_a_given_up_code_sms_keeps_its_text_for_an_admin_retry(make_app):
    gateway = SmsGateway(status=422)
    try:
        with make_app(SMS_WEBHOOK_URL=gateway.url, REDIS_URL=None).app_context():
            open_challenge()
            db.session.commit()

            message = last_sms()
            assert message.status == OutboxStatus.FAILED
            assert CODE.search(message.body_text)
    finally:
        gateway.close()


def test_the_dev_mailbox_still_shows_codes_in_development(make_app):
    app = make_app(APP_ENV="development", REDIS_URL=None)
    with app.app_context():
        open_challenge()
        db.session.commit()
        message = last_sms()
        assert message.status == OutboxStatus.SENT
        assert message.delivered_via == "dev_outbox"
        code = last_code()
        client, _ = signed_in_client(app, Role.CALL_AGENT)

        page = client.get("/admin/dev-mailbox/").get_data(as_text=True)

    assert code in page
