"""Login CSRF in a real headless Chromium: a page on another site posts a form at the server to
sign the visitor's browser into the attacker's account. Nothing may sign it in.

The attacker's page is served by Chromium's request interception at ``http://attacker.example``
(another site for the browser: its cookies, ``Origin`` and ``Sec-Fetch-Site`` are the real ones);
the form's POST goes over the network to a real ``backapp serve``.
"""

from __future__ import annotations

import html
import json
import re
from typing import Any

import httpx
import pytest

from tests.support.server_process import LiveServer, LiveServerFactory
from tests.web import test_browser

pytestmark = pytest.mark.e2e

# The browser fixtures of the web console's tests.
chromium = test_browser.chromium
context = test_browser.context

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect

ATTACKER = "http://attacker.example"
MALLORY = {"email": "mallory@example.com", "password": "mallory's password"}


def _attacker_page(context: Any, form: str) -> Any:
    """A page of another site holding ``form``, opened in the victim's browser."""
    page = context.new_page()
    page.route(
        f"{ATTACKER}/**",
        lambda route: route.fulfill(
            status=200, content_type="text/html", body=f"<!doctype html><body>{form}</body>"
        ),
    )
    page.goto(f"{ATTACKER}/win-a-prize")
    return page


def _signed_in(context: Any, server: LiveServer) -> bool:
    cookies = {c["name"]: c["value"] for c in context.cookies(server.url)}
    if not cookies.get("backapp_session"):
        return False
    me = httpx.get(
        f"{server.url}/api/auth/me", cookies={"backapp_session": cookies["backapp_session"]}
    )
    return me.status_code == 200


@pytest.fixture
def server(live_server_factory: LiveServerFactory) -> LiveServer:
    server = live_server_factory.start()
    server.owner(**MALLORY)  # the attacker's own account
    return server


def _submit(page: Any) -> None:
    with page.expect_navigation():
        page.get_by_role("button", name="Claim").click()
    page.wait_for_load_state()


def test_a_text_plain_form_on_another_site_cannot_sign_the_browser_in(
    context: Any, server: LiveServer
) -> None:
    # enctype=text/plain sends "name=value": a name and value that together make the JSON
    # {"email": …, "password": …, "x": "="}.
    name = json.dumps(MALLORY)[:-1] + ', "x": "'
    form = (
        f'<form method="post" action="{server.url}/api/auth/login" enctype="text/plain">'
        f'<input type="hidden" name="{html.escape(name)}" value="&quot;}}">'
        "<button>Claim</button></form>"
    )
    page = _attacker_page(context, form)
    _submit(page)
    assert page.url.startswith(server.url)
    assert page.locator("body").inner_text() != ""
    assert not _signed_in(context, server), "a page of another site signed the browser in"
    page.goto(server.url)
    expect(page).to_have_url(re.compile(r"/signin$"))


def test_a_form_post_on_another_site_cannot_use_the_sign_in_form(
    context: Any, server: LiveServer
) -> None:
    """The web sign-in form needs its token: one the attacker fetched for their own browser is
    useless in the victim's."""
    own_form = httpx.get(f"{server.url}/signin")
    token = re.search(r'name="_csrf" value="([^"]*)"', own_form.text)
    assert token
    for fields in [{}, {"_csrf": token.group(1)}]:
        inputs = "".join(
            f'<input type="hidden" name="{k}" value="{html.escape(v)}">'
            for k, v in {**MALLORY, **fields}.items()
        )
        form = f'<form method="post" action="{server.url}/signin">{inputs}<button>Claim</button></form>'
        page = _attacker_page(context, form)
        _submit(page)
        assert not _signed_in(context, server), fields
        page.close()


def test_the_servers_own_pages_still_sign_in(context: Any, server: LiveServer) -> None:
    """The same browser, on the server's own sign-in page: signs in (the guard is not a wall)."""
    page = context.new_page()
    page.goto(f"{server.url}/signin")
    page.get_by_label("E-mail").fill(MALLORY["email"])
    page.get_by_label("Password").fill(MALLORY["password"])
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(re.compile(r"/$"))
    assert _signed_in(context, server)
    # A script of the page may use the JSON API (same origin, with the CSRF header).
    result = page.evaluate(
        """async () => {
            const token = document.cookie.match(/csrftoken=([^;]+)/)[1];
            const r = await fetch('/api/agent/register', {method: 'POST',
                headers: {'content-type': 'application/json', 'x-csrftoken': token},
                body: JSON.stringify({name: 'from the page'})});
            return r.status;
        }"""
    )
    assert result == 201
