"""Helpers shared by the console tests: log in through the real login form, read a page's CSRF token."""

from __future__ import annotations

import re
from typing import Any

PASSWORD = "correct horse battery"


def login(client: Any, user: str = "ops", password: str = PASSWORD, follow: bool = True) -> Any:
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text).group(1)
    return client.post(
        "/login", data={"username": user, "password": password, "login_token": token, "next": "/"},
        follow_redirects=follow,
    )


def csrf(html: str) -> str:
    return re.search(r'name="csrf" value="([^"]*)"', html).group(1)
