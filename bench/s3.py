"""The S3 blob store against files (issue 19 item 1): blob rates, then heavy mail through ``run --once``.

A real S3-compatible server, SeaweedFS, runs on loopback (``tests/s3_server.py``; the ``weed`` binary of
the dev extra), on the same cores as the client: the S3 figures include the server's CPU. First 1,000
(``--n``) random 60 KB blobs in batches of 100 as the pipeline puts them: put, get one at a time, put
again (present), list; ``LocalBlobs`` and ``S3Blobs`` in the same run. Then the heavy corpus
(``heavy.py``, 300 mails) through ``svcbridge run --once`` (a real process) with ``[store] blobs`` =
"local" and = "s3".
"""

from __future__ import annotations

import hashlib
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import daemon_env, maildir_config, report
from .heavy import corpus

ROOT = Path(__file__).resolve().parent.parent


def _rates(store: Any, items: dict[str, bytes]) -> dict[str, float]:
    keys = list(items)
    t = time.perf_counter()
    for i in range(0, len(keys), 100):
        store.put_many({k: items[k] for k in keys[i : i + 100]})
    put = time.perf_counter() - t
    t = time.perf_counter()
    for k in keys:
        assert store.get(k) == items[k]
    get = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(0, len(keys), 100):
        assert store.put_many({k: items[k] for k in keys[i : i + 100]}) == 0
    again = time.perf_counter() - t
    t = time.perf_counter()
    listed = sum(1 for _key_size in store.keys())  # noqa: SIM118 (a blob store, not a dict)
    lst = time.perf_counter() - t
    assert listed == len(keys)
    n = len(keys)
    return {"put_per_s": round(n / put), "get_per_s": round(n / get), "put_again_per_s": round(n / again),
            "list_ms": round(lst * 1000)}


def _config(tmp: Path, blobs: str, s3: str) -> Path:
    return maildir_config(tmp / f"{blobs}.toml", tmp / blobs, f'[store]\nblobs = "{blobs}"\n{s3}')


def _run_once(tmp: Path, blobs: str, s3: str, mails: list[bytes]) -> float:
    for sub in ("new", "cur", "tmp"):
        (tmp / blobs / "maildir" / sub).mkdir(parents=True, exist_ok=True)
    for i, raw in enumerate(mails):
        (tmp / blobs / "maildir" / "new" / f"{i}.bench").write_bytes(raw)
    env = daemon_env()
    t0 = time.perf_counter()
    cfg = _config(tmp, blobs, s3)
    cmd = [sys.executable, "-m", "svcbridge", "--config", str(cfg), "run", "--once"]
    subprocess.run(cmd, env=env, cwd=tmp, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def run(args: Any) -> dict[str, Any]:
    sys.path.insert(0, str(ROOT / "tests"))
    from s3_server import ACCESS_KEY, SECRET, seaweed
    from svcbridge.store.blobs import LocalBlobs
    from svcbridge.store.s3blobs import S3Blobs
    from svcbridge.storesettings import S3Settings

    rng = random.Random(19)
    items = {hashlib.sha256(b).hexdigest(): b for b in (rng.randbytes(60_000) for _ in range(args.n or 1000))}
    mails = corpus(300)
    results: dict[str, Any] = {"blobs": len(items), "blob_kb": 60, "mails": len(mails),
                               "mail_mb": round(sum(map(len, mails)) / 1e6, 1)}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        (tmp / "secret").write_text(SECRET)
        with seaweed(tmp / "seaweed") as server:
            server.bucket("bench")
            s3 = (f'[store.s3]\nendpoint_url = "{server.endpoint}"\nbucket = "bench"\nprefix = "mail"\n'
                  f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key_file = "{tmp / "secret"}"\n'
                  'addressing_style = "path"\n')
            results["local"] = _rates(LocalBlobs(tmp / "rates"), items)
            cfg = S3Settings(endpoint_url=server.endpoint, bucket="bench", prefix="rates",
                             access_key_id=ACCESS_KEY, secret_access_key_file=tmp / "secret",
                             addressing_style="path")
            results["s3"] = _rates(S3Blobs(cfg), items)
            for blobs in ("local", "s3"):
                seconds = _run_once(tmp, blobs, s3, mails)
                results[blobs]["run_once_mails_per_s"] = round(len(mails) / seconds, 1)
    rows: list[tuple[str, Any]] = []
    for blobs in ("local", "s3"):
        r = results[blobs]
        rows += [
            (f"{blobs}: put / get / put again (blobs/s)",
             f"{r['put_per_s']} / {r['get_per_s']} / {r['put_again_per_s']}"),
            (f"{blobs}: list {results['blobs']} (ms)", r["list_ms"]),
            (f"{blobs}: run --once, {len(mails)} heavy mails (mails/s)", r["run_once_mails_per_s"]),
        ]
    return report("s3", rows, results)
