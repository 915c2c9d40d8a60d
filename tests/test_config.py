import pytest

from backoffice import create_app
from backoffice.config import ConfigError, load_config

PRODUCTION_NAMES = (
    "SECRET_KEY",
    "DATABASE_URL",
    "REDIS_URL",
    "STORAGE_URL",
    "SMTP_URL",
    "SMS_WEBHOOK_URL",
    "SIGNING_CERT_PATH",
)


def test_fresh_checkout_runs_on_embedded_defaults(tmp_path):
    config = load_config({}, str(tmp_path))

    assert config["APP_ENV"] == "development"
    assert config["SQLALCHEMY_DATABASE_URI"] == f"sqlite:///{tmp_path / 'ventanilla.db'}"
    assert config["STORAGE_URL"] == (tmp_path / "documents").as_uri()
    assert config["REDIS_URL"] is None
    assert config["CUSTOMER_PORTAL_URL"] == "http://localhost:5000/portal"
    assert config["SLA_HOURS"] == 48


def test_development_secret_key_is_generated_once_into_instance(tmp_path):
    first = load_config({}, str(tmp_path))["SECRET_KEY"]
    second = load_config({}, str(tmp_path))["SECRET_KEY"]

    assert len(first) == 64
    assert first == second
    assert (tmp_path / "secret_key").stat().st_mode & 0o777 == 0o600


def test_production_names_every_missing_setting_in_one_message(tmp_path):
    with pytest.raises(ConfigError) as error:
        create_app({"APP_ENV": "production"} | {name: None for name in PRODUCTION_NAMES})

    message = str(error.value)
    for name in PRODUCTION_NAMES:
        assert name in message


def test_production_refuses_sqlite_and_local_storage(tmp_path):
    cert = tmp_path / "signing.p12"
    cert.write_bytes(b"x")
    environ = {
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 64,
        "DATABASE_URL": "sqlite:////tmp/x.db",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "STORAGE_URL": "file:///srv/documents",
        "SMTP_URL": "smtp://mail.example:587",
        "SMS_WEBHOOK_URL": "https://sms.example/send",
        "SIGNING_CERT_PATH": str(cert),
    }

    with pytest.raises(ConfigError) as error:
        load_config(environ, str(tmp_path))

    assert "DATABASE_URL (must be PostgreSQL, not SQLite)" in str(error.value)
    assert "STORAGE_URL (must be an s3:// URL)" in str(error.value)


def test_complete_production_settings_are_accepted_with_secure_cookies(tmp_path):
    cert = tmp_path / "signing.p12"
    cert.write_bytes(b"x")
    environ = {
        "APP_ENV": "production",
        "SECRET_KEY": "k" * 64,
        "DATABASE_URL": "postgres://db.internal/ventanilla",
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "STORAGE_URL": "s3://documents/ventanilla",
        "SMTP_URL": "smtp://mail.example:587",
        "SMS_WEBHOOK_URL": "https://sms.example/send",
        "SIGNING_CERT_PATH": str(cert),
    }

    config = load_config(environ, str(tmp_path))

    assert config["SQLALCHEMY_DATABASE_URI"] == "postgresql+psycopg://db.internal/ventanilla"
    assert config["SESSION_COOKIE_SECURE"] is True
    assert config["SESSION_COOKIE_HTTPONLY"] is True
    assert config["SESSION_COOKIE_SAMESITE"] == "Lax"


def test_environment_variables_override_defaults_and_overrides_win(tmp_path):
    config = load_config({"SLA_HOURS": "24", "HOLIDAYS_SUBDIV": "MD"}, str(tmp_path), {"SLA_HOURS": 12})

    assert config["SLA_HOURS"] == 12
    assert config["HOLIDAYS_SUBDIV"] == "MD"


def test_non_numeric_setting_is_named(tmp_path):
    with pytest.raises(ConfigError, match="OUTBOX_MAX_ATTEMPTS"):
        load_config({"OUTBOX_MAX_ATTEMPTS": "lots"}, str(tmp_path))


def test_boolean_settings_read_true_and_false_words(tmp_path):
    assert (
        load_config({"REVIEW_REJECTION_NEEDS_CONFIRMATION": "no"}, str(tmp_path))[
            "REVIEW_REJECTION_NEEDS_CONFIRMATION"
        ]
        is False
    )
    assert load_config({}, str(tmp_path))["REVIEW_REJECTION_NEEDS_CONFIRMATION"] is True


def test_a_boolean_setting_that_is_not_a_boolean_is_named(tmp_path):
    with pytest.raises(ConfigError, match="REVIEW_REJECTION_NEEDS_CONFIRMATION"):
        load_config({"REVIEW_REJECTION_NEEDS_CONFIRMATION": "perhaps"}, str(tmp_path))


def test_postgresql_connections_prepare_statements_by_default(tmp_path):
    config = load_config({"DATABASE_URL": "postgresql://db.example/app"}, str(tmp_path))

    assert "prepare_threshold" not in config["SQLALCHEMY_ENGINE_OPTIONS"].get("connect_args", {})


def test_prepared_statements_can_be_turned_off_for_a_pooler_that_cannot_keep_them(tmp_path):
    environ = {"DATABASE_URL": "postgresql://db.example/app", "DATABASE_PREPARED_STATEMENTS": "false"}

    config = load_config(environ, str(tmp_path))

    assert config["SQLALCHEMY_ENGINE_OPTIONS"]["connect_args"] == {"prepare_threshold": None}
