"""A notice is sent once even when the daemon is killed while a slow helpdesk holds the round.

Issue 12 item 1: outcomes used to be recorded when every target of a delivery round had finished, so
an acknowledgement that reached the customer's mail server in milliseconds stayed "pending" while a
helpdesk call of the same round hung, and a kill -9 in that window mailed it again on restart.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

from conftest import eml, free_port
from reliability.smtpsink import SmtpSink
from test_daemon import _healthy, start, stop, wait_for, write_config


def hanging_helpdesk() -> socket.socket:
    """A listening socket that accepts connections and never answers (commit-then-hang)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(64)
    return s


def test_an_acknowledgement_is_mailed_once_across_kill_9_while_the_helpdesk_hangs(tmp_path: Path) -> None:
    port = free_port()
    desk = hanging_helpdesk()
    with SmtpSink() as smtp:
        cfg = write_config(tmp_path, port)
        text = cfg.read_text().replace(
            f'[plugins.email.outbound]\nspool_dir = "{tmp_path}/outgoing"',
            f'[plugins.email.outbound]\ntransport = "smtp"\n[plugins.email.outbound.smtp]\n'
            f'port = {smtp.port}\ntls = "none"',
        )
        desk_port = desk.getsockname()[1]
        text = 'outbound_allow = ["127.0.0.1"]\n' + text + (
            f'[plugins.zammad]\nurl = "http://127.0.0.1:{desk_port}"\ntoken = "t0ken-canary"\n'
            f'name = "zammad"\ntimeout = 60\n'
            '[routing]\ndefault = ["zammad"]\n'
        )
        cfg.write_text(text)
        proc = start(cfg)
        try:
            wait_for(lambda: _healthy(port))
            (tmp_path / "maildir" / "new" / "1.eml").write_bytes(eml())
            wait_for(lambda: len(smtp.messages) == 1, timeout=30)  # the ack is out, the desk still hangs
            time.sleep(0.3)
            proc.kill()  # kill -9 while the round waits for the helpdesk
            proc.wait(timeout=10)
            proc = start(cfg)
            wait_for(lambda: _healthy(port))
            time.sleep(3)  # time for a (wrong) second copy to go out
        finally:
            stop(proc)
            desk.close()
        assert len(smtp.messages) == 1, f"{len(smtp.messages)} copies of the acknowledgement"
        assert b"[SB-000001]" in smtp.messages[0]
