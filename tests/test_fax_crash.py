"""A fax across ``kill -9`` (issue 17): the real daemon is killed while it reads a fax's pages, or right
after Tesseract answered and before the text was recorded; after the restart the fax is one ticket and
its OCR text is on it once (one ``ticket_updated`` event of the fax plugin, one done job), and the
pages Tesseract had read before the kill are not read again.

The fax comes from the real HylaFAX ``faxrcvd`` through a Maildir; Tesseract is the real CLI.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import free_port, require_binary
from fax_helpers import HylaSpool, fax_page, save_tiff
from test_daemon import _healthy, _no_stray_daemons, cli, start, stop, wait_for, write_config  # noqa: F401
from test_fax import PAGES_EN, PAGES_ZH, SERIAL_EN

FAX = """
[plugins.fax]
default_region = "CN"
[plugins.fax.ocr]
languages = ["eng", "chi_sim"]
[[plugins.customers.directory]]
name = "Qingdao Port Hospital"
phones = ["+8653288881234"]
"""


def show(cfg: Path) -> dict:
    return json.loads(cli(cfg, "tickets", "show", "SB-000001", "--json"))


def tickets(cfg: Path) -> list[dict]:
    return json.loads(cli(cfg, "tickets", "list", "--json"))


@pytest.mark.parametrize("when", ["during_ocr", "job_after_run"])
def test_kill_9_around_ocr_loses_nothing_and_records_the_text_once(tmp_path: Path, when: str) -> None:
    require_binary("tesseract")
    port = free_port()
    cfg = write_config(tmp_path, port)
    cfg.write_text(cfg.read_text() + FAX)
    spool = HylaSpool(tmp_path / "hylafax", tmp_path / "maildir", filetype="tif")
    proc = start(cfg, faults="job_after_run" if when == "job_after_run" else "")
    wait_for(lambda: _healthy(port), timeout=90)
    pages = [fax_page(PAGES_EN, seed=s) for s in range(3)] + [fax_page(PAGES_ZH, seed=9)]
    spool.receive(save_tiff(pages, "group4"), tsi="+86 532 8888 1234")
    if when == "during_ocr":
        # the ticket is committed and the job claimed: the pages are being read right now
        wait_for(lambda: any(j["status"] == "running" or j.get("claimed_by")
                             for j in json.loads(cli(cfg, "jobs", "list", "--json"))), timeout=90, step=0.02)
        proc.kill()
        proc.wait(timeout=10)
    else:
        assert proc.wait(timeout=180) == -9  # died right after Tesseract answered, before the record
    assert len(tickets(cfg)) == 1  # the fax is a ticket already
    assert "ocr_text" not in (show(cfg).get("labels") or {})

    proc = start(cfg)
    try:
        wait_for(lambda: _healthy(port), timeout=90)  # a loaded CI box starts the daemon slowly
        ticket = wait_for(lambda: (lambda t: t if "ocr_text" in (t.get("labels") or {}) else None)(show(cfg)),
                          timeout=180, step=0.2)
    finally:
        assert stop(proc) == 0
    assert len(tickets(cfg)) == 1 and ticket["channel"] == "fax"
    assert SERIAL_EN in ticket["labels"]["ocr_text"]
    assert ticket["labels"]["ocr"]["pages_read"] == 4
    # the pages read before the kill are not read again (pagecache.py); all 4 when it died after OCR
    again = ticket["labels"]["ocr"]["pages_from_earlier_run"]
    assert again == 4 if when == "job_after_run" else 0 <= again < 4
    ocr_events = [e for e in ticket["events"] if e["type"] == "ticket_updated" and e["actor"] == "fax"]
    assert len(ocr_events) == 1
    jobs = json.loads(cli(cfg, "jobs", "list", "--json"))
    assert [(j["kind"], j["status"]) for j in jobs] == [("fax.ocr", "done")]
