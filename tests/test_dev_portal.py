"""The development stand-in for the customer portal: emailed links land on a page that calls the API."""

from tests.factories import last_link_token


def test_verification_link_from_the_email_opens_a_page_that_posts_to_the_api(client):
    client.post(
        "/api/v1/accounts",
        json={"email": "ana@correo.example", "password": "Portal-Cliente-2026!", "accept_terms": True},
    )
    token = last_link_token("ana@correo.example")

    page = client.get("/portal/verify-email", query_string={"token": token}).get_data(as_text=True)

    assert f'data-token="{token}"' in page
    assert 'data-api="/api/v1/accounts/verify"' in page
    assert "<script>" not in page


def test_reset_link_page_posts_to_the_confirm_endpoint(client):
    page = client.get("/portal/reset-password", query_string={"token": "abc"}).get_data(as_text=True)

    assert 'data-api="/api/v1/password-resets/confirm"' in page


def test_token_in_the_page_is_escaped(client):
    page = client.get("/portal/verify-email", query_string={"token": '"><script>x</script>'}).get_data(
        as_text=True
    )

    assert "<script>x</script>" not in page
