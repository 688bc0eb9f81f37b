"""The operator console: accounts, sessions and the pages the daemon serves (see docs/console.md).

Kept import-light on purpose: ``svcbridge users`` (cli_users.py) needs only ``accounts`` and must not pull
in Starlette or Jinja2.
"""
