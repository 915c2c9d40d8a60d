from backoffice.staff.models import Role
from tests.factories import make_staff, signed_in_client


def test_login_without_csrf_token_is_rejected(app, client):
    user = make_staff(Role.ADMIN)

    response = client.post("/login", data={"email": user.email, "password": "Correct-horse-42!"})

    assert response.status_code == 400
    with client.session_transaction() as session:
        assert "staff_session" not in session


def test_admin_form_without_csrf_token_is_rejected(app):
    client, _ = signed_in_client(app, Role.ADMIN)

    response = client.post(
        "/admin/staff/new/",
        data={
            "email": "new@ventanilla.example",
            "name": "New",
            "role": "admin",
            "password": "Correct-horse-42!",
        },
    )

    assert response.status_code == 400


def test_logout_without_csrf_token_does_not_end_the_session(app):
    client, _ = signed_in_client(app, Role.ADMIN)

    client.post("/logout", data={})

    assert client.get("/admin/").status_code == 200
