from sqlalchemy import func, select

from backoffice.customers.models import Policy, Policyholder
from backoffice.demo import DEMO_PASSWORD, DEMO_STAFF
from backoffice.extensions import db
from backoffice.staff.models import Role, StaffUser
from tests.factories import sign_in


def _count(model) -> int:
    return db.session.execute(select(func.count()).select_from(model)).scalar_one()


def test_demo_load_creates_one_staff_user_per_role_and_some_policyholders(make_app):
    app = make_app(APP_ENV="development")
    with app.app_context():
        result = app.test_cli_runner().invoke(args=["demo", "load"])

        assert result.exit_code == 0, result.output
        roles = set(db.session.execute(select(StaffUser.role)).scalars())
        assert roles == set(Role)
        assert _count(Policyholder) >= 3
        assert _count(Policy) >= 3
        assert DEMO_PASSWORD in result.output


def test_demo_load_is_idempotent(make_app):
    app = make_app(APP_ENV="development")
    with app.app_context():
        runner = app.test_cli_runner()
        runner.invoke(args=["demo", "load"])
        counts = (_count(StaffUser), _count(Policyholder), _count(Policy))

        second = runner.invoke(args=["demo", "load"])

        assert second.exit_code == 0
        assert (_count(StaffUser), _count(Policyholder), _count(Policy)) == counts


def test_demo_staff_can_sign_in(make_app):
    app = make_app(APP_ENV="development")
    with app.app_context():
        app.test_cli_runner().invoke(args=["demo", "load"])

        response = sign_in(app.test_client(), DEMO_STAFF[0][0], DEMO_PASSWORD)

        assert response.status_code == 302


def test_demo_load_is_refused_outside_development(app):
    result = app.test_cli_runner().invoke(args=["demo", "load"])

    assert result.exit_code != 0
    assert "development only" in result.output
    assert _count(StaffUser) == 0
