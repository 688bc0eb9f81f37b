"""The S3 blob store (issue 19 item 1, ``[store] blobs = "s3"``) against a real S3-compatible server.

SeaweedFS runs on loopback (``s3_server.py``): every request goes over HTTP with botocore's SigV4
signing, so these tests see what a deployment sees: checksums the server verifies, listings in pages,
copy-in-place touches, 404s. One server for the module; each test has a bucket of its own.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import structlog
from click.testing import CliRunner

from s3_server import ACCESS_KEY, SECRET, S3Server, seaweed
from svcbridge import RawMessage
from svcbridge import log as logmod
from svcbridge.app import App
from svcbridge.cli import main
from svcbridge.errors import ConfigError, StoreUnavailable
from svcbridge.settings import load_settings
from svcbridge.store import retention, split
from svcbridge.store.blobs import BlobCorrupt, BlobStoreError, LocalBlobs, ensure
from svcbridge.store.s3blobs import S3Blobs
from svcbridge.storesettings import S3Settings
from tcpgate import TcpGate
from test_blobs import mail, rnd
from test_email_pipeline import drop


@pytest.fixture(scope="module")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Any:
    with seaweed(tmp_path_factory.mktemp("seaweed")) as server:
        yield server


@pytest.fixture(scope="module")
def bucket(s3: S3Server) -> str:
    # one bucket: SeaweedFS gives each bucket volumes of its own, a few buckets fill a small server
    return s3.bucket("svcbridge-tests")


def secret_file(tmp_path: Path) -> Path:
    f = tmp_path / "s3-secret"
    f.write_text(SECRET + "\n")
    return f


def s3_table(s3: S3Server, bucket: str, tmp_path: Path, **extra: Any) -> dict[str, Any]:
    prefix = tmp_path.name  # each test its own part of the bucket (the store adds the '/')
    return {"endpoint_url": s3.endpoint, "bucket": bucket, "prefix": prefix, "access_key_id": ACCESS_KEY,
            "secret_access_key_file": str(secret_file(tmp_path)), "addressing_style": "path", **extra}


def store(s3: S3Server, bucket: str, tmp_path: Path, **kw: Any) -> S3Blobs:
    return S3Blobs(S3Settings(**s3_table(s3, bucket, tmp_path)), **kw)


def key(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.mark.realserver
def test_put_get_has_delete_keys_and_touch(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    blobs = store(s3, bucket, tmp_path, touch_after=0.0)
    a, b = rnd(60_000, 1), rnd(5_000, 2)
    assert blobs.put_many({key(a): [a[:100], memoryview(a)[100:]], key(b): b}) == len(a) + len(b)
    assert blobs.get(key(a)) == a and blobs.get(key(b)) == b
    assert blobs.has(key(a)) and not blobs.has(key(b"absent"))
    assert blobs.missing([key(a), key(b"absent"), key(b)]) == [key(b"absent")]  # ensure() after commits
    assert blobs.get(key(b"absent")) is None
    assert sorted(blobs.keys()) == sorted([(key(a), len(a)), (key(b), len(b))])
    assert list(blobs.keys(older_than=3600)) == []  # both just written
    listed = s3.client().list_objects_v2(Bucket=bucket, Prefix=tmp_path.name)["Contents"]
    assert sorted(o["Key"] for o in listed) == sorted(f"{tmp_path.name}/{key(a)}" for a in (a, b))  # the prefix, '/' added
    # idempotent: present blobs are not uploaded again, but touched (LastModified renewed for gc)
    before = blobs.modified(key(a))
    time.sleep(1.1)  # LastModified has a resolution of one second
    assert blobs.put_many({key(a): a, key(b): b}) == 0
    after = blobs.modified(key(a))
    assert before is not None and after is not None and after > before
    assert blobs.get(key(a)) == a  # the copy in place kept the bytes
    lazy = store(s3, bucket, tmp_path, touch_after=3600.0)  # touched within the hour: left alone
    assert lazy.put_many({key(a): a}) == 0 and lazy.modified(key(a)) == after
    assert blobs.usage() == (2, len(a) + len(b))
    # requests: a new small blob is one conditional PUT; a large one (1 MiB+) is looked for first and,
    # once there, only touched (no upload of its megabytes); a small one present: refused PUT, touch
    calls: list[str] = []
    blobs.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    c, big = rnd(1000, 3), rnd(1_200_000, 4)
    assert blobs.put_many({key(c): c}) == len(c) and calls == ["PutObject"]
    calls.clear()
    assert blobs.put_many({key(big): big}) == len(big) and calls == ["HeadObject", "PutObject"]
    calls.clear()
    assert blobs.put_many({key(big): big}) == 0 and calls == ["HeadObject", "CopyObject"]
    calls.clear()
    assert blobs.put_many({key(c): c}) == 0 and calls == ["PutObject", "HeadObject", "CopyObject"]
    assert blobs.get(key(big)) == big and blobs.delete(key(big)) and blobs.delete(key(c))
    # with the default hour: what this process wrote a moment ago is put again without a request
    # (the pipeline puts each attachment twice), until the check after a commit finds it gone
    hourly = store(s3, bucket, tmp_path)
    hourly.client.meta.events.register("before-call.s3", lambda model, **kw: calls.append(model.name))
    calls.clear()
    assert hourly.put_many({key(c): c}) == len(c) and hourly.put_many({key(c): c}) == 0
    assert calls == ["PutObject"]
    s3.client().delete_object(Bucket=bucket, Key=f"{tmp_path.name}/{key(c)}")  # another replica's erasure
    calls.clear()
    ensure(hourly, {key(c): c}, [key(c)])
    assert calls == ["HeadObject", "PutObject"] and hourly.get(key(c)) == c
    assert blobs.delete(key(a)) and not blobs.delete(key(a)) and blobs.get(key(a)) is None
    with pytest.raises(ValueError):
        blobs.get("../../etc/passwd")


@pytest.mark.realserver
def test_a_corrupted_object_is_an_error_naming_the_blob(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    blobs = store(s3, bucket, tmp_path)
    data = rnd(20_000, 3)
    blobs.put_many({key(data): data})
    # a raw mail's skeleton is named by the whole mail's hash, not its own: it reads back fine
    skeleton = split.MAGIC + b'[[0,"x",76,1]]\nheaders'
    raw_key = key(b"the whole original mail")
    blobs.put_many({raw_key: skeleton})
    assert blobs.get(raw_key) == skeleton
    # overwritten behind the store's back (no recorded hash, other bytes)
    damaged = bytearray(data)
    damaged[1000] ^= 1
    s3.client().put_object(Bucket=bucket, Key=f"{tmp_path.name}/{key(data)}", Body=bytes(damaged))
    with pytest.raises(BlobCorrupt, match=f"blob {key(data)} in s3://{bucket}/{tmp_path.name}/ .* is corrupt"):
        blobs.get(key(data))
    s3.client().put_object(Bucket=bucket, Key=f"{tmp_path.name}/{raw_key}", Body=skeleton + b"!",
                           Metadata={"sha256": key(skeleton)})  # a skeleton's hash is checked too
    with pytest.raises(BlobCorrupt):
        blobs.get(raw_key)


@pytest.mark.realserver
def test_listing_goes_through_every_page(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    blobs = store(s3, bucket, tmp_path, page_size=10)
    items = {key(d): d for d in (rnd(100, i) for i in range(35))}
    assert blobs.put_many(items) == 3500
    s3.client().put_object(Bucket=bucket, Key=f"{tmp_path.name}/not-a-blob", Body=b"x")  # ignored, not a key
    s3.client().put_object(Bucket=bucket, Key=f"elsewhere/{next(iter(items))}", Body=b"x")  # other prefix
    calls: list[str] = []
    blobs.client.meta.events.register("after-call.s3.ListObjectsV2", lambda **kw: calls.append("page"))
    assert dict(blobs.keys()) == {k: 100 for k in items}
    assert len(calls) == 4  # 36 objects under the prefix, 10 a page


@pytest.mark.realserver
async def test_pipeline_on_s3_stores_and_reads_back_attachments(
    s3: S3Server, bucket: str, make_app, tmp_path: Path
) -> None:
    app = make_app(store={"blobs": "s3", "s3": s3_table(s3, bucket, tmp_path)})
    assert isinstance(app.store.blobs, S3Blobs)
    scan, photo = rnd(300_000, 7), rnd(80_000, 8)
    raw = mail(("scan.tif", scan), ("photo.jpg", photo), text="x" * 40_000)  # skeleton over 32 KB: a blob
    drop(tmp_path, "1", raw)
    drop(tmp_path, "2", mail(("扫描.tif", scan), msgid="<b2@example.com>", sender="bob@example.com"))
    res = await app.run_once()
    assert sorted(o.status for o in res["outcomes"]) == ["created", "created"]
    listed = dict(app.store.blobs.keys())
    assert listed[key(scan)] == len(scan) and listed[key(photo)] == len(photo)
    assert key(raw) in listed and len(listed) == 3  # the scan once, however often it came
    assert not (tmp_path / "var" / "blobs").exists()  # nothing on the local disk
    t1 = app.store.get_ticket("SB-000001")
    got = {a.safe_name: a.data for a in app.store.attachments_with_data(t1.id)}
    assert sorted(got.values()) == sorted([scan, photo])
    journal_id = next(o.journal_id for o in res["outcomes"] if app.store.load_raw(o.journal_id).raw == raw)
    assert app.store.load_raw(journal_id).raw == raw  # the raw mail rebuilt from S3, byte for byte
    # a damaged part quarantines the mail with the reason (it is not guessed at, nor retried for ever)
    damaged = bytearray(photo)
    damaged[7] ^= 1
    s3.client().put_object(Bucket=bucket, Key=f"{tmp_path.name}/{key(photo)}", Body=bytes(damaged))
    loaded = app.store.load_raw(journal_id)
    assert loaded.raw is None and f"blob {key(photo)} in s3://" in loaded.metadata["fetch_error"]
    s3.client().put_object(Bucket=bucket, Key=f"{tmp_path.name}/{key(photo)}", Body=photo)
    # gc on S3: an orphan goes, what rows name stays
    orphan = rnd(3000, 9)
    app.store.blobs.put_many({key(orphan): orphan})
    time.sleep(1.1)
    assert retention.gc(app.store, 0.0) == (1, len(orphan))
    assert dict(app.store.blobs.keys()) == listed


def _toml(tmp_path: Path, s3: S3Server, bucket: str, blobs: str) -> Path:
    cfg = tmp_path / "svcbridge.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path}/var"\n[http]\nenabled = false\n[plugins.email]\n'
        f'from_address = "support@bridge.test"\n[plugins.email.outbound]\nspool_dir = "{tmp_path}/out"\n'
        f'[store]\nblobs = "{blobs}"\n[store.s3]\nendpoint_url = "{s3.endpoint}"\nbucket = "{bucket}"\n'
        f'access_key_id = "{ACCESS_KEY}"\nsecret_access_key_file = "{secret_file(tmp_path)}"\n'
        f'addressing_style = "path"\nprefix = "{tmp_path.name}"\n'
    )
    return cfg


def _snapshot(root: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in root.glob("?/*")}


@pytest.mark.realserver
def test_move_blobs_local_to_s3_and_back_byte_for_byte(
    s3: S3Server, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = _toml(tmp_path, s3, bucket, "local")
    run = CliRunner()
    files = [rnd(70_000, i) for i in range(5)]
    for i, f in enumerate(files):
        raw = mail((f"f{i}.pdf", f), text="y" * (40_000 if i == 0 else 10), msgid=f"<m{i}@example.com>")
        res = run.invoke(main, ["--config", str(cfg), "ingest", "-"], input=raw)
        assert res.exit_code == 0, res.output
    local = tmp_path / "var" / "blobs"
    before = _snapshot(local)
    assert len(before) == 6  # five files and one raw skeleton over 32 KB
    res = run.invoke(main, ["--config", str(cfg), "store", "move-blobs", "--to", "s3"])
    assert res.exit_code == 0, res.output
    assert "moved 6 blobs" in res.output and 'set [store] blobs = "s3"' in res.output
    assert _snapshot(local) == {}  # verified in S3, then removed here
    remote = S3Blobs(load_settings(cfg).store.s3)  # type: ignore[arg-type]
    assert {k: remote.get(k) for k, _ in remote.keys()} == before
    # switched: the daemon reads every file from S3
    cfg = _toml(tmp_path, s3, bucket, "s3")
    app = App.build(load_settings(cfg))
    got = sorted(a.data for tid in range(1, 6) for a in app.store.attachments_with_data(tid))
    assert got == sorted(files)
    # a mail taken in now goes to S3 (the MTA's `svcbridge ingest`), and usage counts the bucket
    late = rnd(50_000, 99)
    res = run.invoke(main, ["--config", str(cfg), "ingest", "-"], input=mail(("late.pdf", late), msgid="<l@x>"))
    assert res.exit_code == 0, res.output
    assert remote.get(key(late)) == late and not (local / key(late)[0] / key(late)).exists()
    res = run.invoke(main, ["--config", str(cfg), "store", "usage", "--json"])
    assert json.loads(res.output)["blobs"] == 7
    # resumable: a second run finds nothing left to move; and back to the local disk
    res = run.invoke(main, ["--config", str(cfg), "store", "move-blobs", "--to", "s3"])
    assert res.exit_code == 0 and "moved 0 blobs" in res.output
    res = run.invoke(main, ["--config", str(cfg), "store", "move-blobs", "--to", "local"])
    assert res.exit_code == 0, res.output
    assert _snapshot(local) == {**before, key(late): late}  # byte for byte, same names
    assert list(remote.keys()) == []


@pytest.mark.realserver
def test_move_keeps_a_blob_that_is_corrupt_in_the_source(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    from svcbridge.store.blobmove import move_between

    local = LocalBlobs(tmp_path / "blobs")
    good, bad = rnd(10_000, 1), rnd(10_000, 2)
    local.put_many({key(good): good, key(bad): bad})
    local.path(key(bad)).write_bytes(b"rotten")
    remote = store(s3, bucket, tmp_path)
    res = move_between(local, remote)
    assert res.moved == 1 and len(res.failed) == 1 and key(bad) in res.failed[0]
    assert local.get(key(bad)) == b"rotten" and not remote.has(key(bad))  # left where it was
    assert remote.get(key(good)) == good and not local.has(key(good))
    res = move_between(remote, local, keep_source=True)  # a copy: both hold it
    assert res.moved == 1 and remote.get(key(good)) == good == local.get(key(good))


@pytest.mark.realserver
async def test_the_secret_key_never_shows(
    s3: S3Server, bucket: str, make_app, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # never in the TOML in clear: refused, and the refusal does not echo it
    cfg = tmp_path / "clear.toml"
    cfg.write_text(f'[store.s3]\nbucket = "{bucket}"\naccess_key_id = "{ACCESS_KEY}"\n'
                   f'secret_access_key = "{SECRET}"\n')
    with pytest.raises(ConfigError) as refused:
        load_settings(cfg)
    assert "secret_access_key_file" in str(refused.value.errors) and SECRET not in str(refused.value.errors)
    # from the environment it is fine
    monkeypatch.setenv("SVCBRIDGE_STORE__S3__SECRET_ACCESS_KEY", SECRET)
    cfg.write_text(f'[store]\nblobs = "s3"\n[store.s3]\nbucket = "{bucket}"\naccess_key_id = "{ACCESS_KEY}"\n'
                   f'endpoint_url = "{s3.endpoint}"\naddressing_style = "path"\n')
    from_env = load_settings(cfg)
    assert from_env.store.s3 is not None and from_env.store.s3.secret_access_key is not None
    assert SECRET in from_env.secret_values()  # so the log redacts it
    monkeypatch.delenv("SVCBRIDGE_STORE__S3__SECRET_ACCESS_KEY")

    buf = io.StringIO()
    app = make_app(store={"blobs": "s3", "s3": s3_table(s3, bucket, tmp_path)})
    logmod.configure("json", "debug", stream=buf)
    logging.getLogger("botocore").setLevel(logging.DEBUG)  # the client's own request logging too
    try:
        drop(tmp_path, "1", mail(("scan.tif", rnd(90_000, 4))))
        out = await app.run_once()  # the pipeline's requests, logged by botocore at DEBUG
        assert [o.status for o in out["outcomes"]] == ["created"]
        log = structlog.get_logger("test")
        errors = []
        # an error from the server: a bucket that does not exist
        gone = store(s3, "no-such-bucket-here", tmp_path)
        for call in (lambda: gone.put_many({key(b"x"): b"x"}), lambda: gone.get(key(b"x")),
                     lambda: list(gone.keys())):
            with pytest.raises(BlobStoreError) as exc:
                call()
            errors.append(str(exc.value))
        # a wrong secret, and an endpoint that does not answer (retries end in a clear error)
        wrong = S3Blobs(S3Settings(**{**s3_table(s3, bucket, tmp_path), "secret_access_key_file": None,
                                      "access_key_id": None}))
        down = S3Blobs(S3Settings(**s3_table(s3, bucket, tmp_path, endpoint_url="http://127.0.0.1:9",
                                             max_attempts=2, connect_timeout=0.5)))
        for blobs in (wrong, down):
            with pytest.raises(BlobStoreError) as exc:
                blobs.has(key(b"x"))
            errors.append(str(exc.value))
        assert "NoSuchBucket" in errors[0] and "no-such-bucket-here" in errors[0]
        assert "Could not connect" in errors[-1] or "EndpointConnectionError" in errors[-1]
        for e in errors:
            log.error("blob_store_failed", error=e)
        log.info("config", store=app.settings.store.model_dump(mode="json"), blobs=repr(app.store.blobs))
        assert not [e for e in errors if SECRET in e]
        assert SECRET not in repr(app.settings) and SECRET not in repr(app.store.blobs)
    finally:
        logging.getLogger("botocore").setLevel(logging.WARNING)
    logged = buf.getvalue()
    assert "blob_store_failed" in logged and "PutObject" in logged and SECRET not in logged
    db = (tmp_path / "var" / "svcbridge.db").read_bytes()
    for wal in (tmp_path / "var").glob("svcbridge.db-*"):
        db += wal.read_bytes()
    assert SECRET.encode() not in db
    for k, _ in app.store.blobs.keys():
        assert SECRET.encode() not in (app.store.blobs.get(k) or b"")


def test_a_local_deployment_never_imports_boto3(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom svcbridge.app import App\nfrom svcbridge.settings import load_settings\n"
        f"s = load_settings(None, data_dir={str(tmp_path / 'var')!r}, http={{'enabled': False}})\n"
        "app = App.build(s)\nassert app.store.blobs.where.endswith('blobs'), app.store.blobs.where\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore')))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip().splitlines()[-1] == "[]"  # the last line: the log may precede it


def test_s3_settings_are_checked_at_load(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs a \[store\.s3\] table"):
        load_settings(None, data_dir=tmp_path, store={"blobs": "s3"})
    with pytest.raises(ConfigError, match="both access_key_id and the secret key, or neither"):
        load_settings(None, data_dir=tmp_path, store={"s3": {"bucket": "abc", "access_key_id": "AK"}})
    with pytest.raises(ConfigError, match="cannot read it"):
        load_settings(None, data_dir=tmp_path, store={"s3": {"bucket": "abc", "access_key_id": "AK",
                                                           "secret_access_key_file": str(tmp_path / "none")}})
    s = load_settings(None, data_dir=tmp_path, store={"s3": {"bucket": "abc", "prefix": "x/y"}})
    assert s.store.blobs == "local" and s.store.s3 is not None and s.store.s3.prefix == "x/y/"


class Throttling(TcpGate):
    """Answers the next ``n`` connections with 503 SlowDown (S3's throttling answer), forwards the rest."""

    BODY = b"<Error><Code>SlowDown</Code><Message>Please reduce your request rate.</Message></Error>"

    def __init__(self, upstream_port: int) -> None:
        super().__init__(upstream_port)
        self.n = self.refused = 0

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            if self.refused < self.n:
                self.refused += 1
                threading.Thread(target=self._slow_down, args=(client,), daemon=True).start()
                continue
            server = socket.create_connection((self.host, self.upstream), timeout=5)
            server.settimeout(None)
            with self._lock:
                self._conns += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _slow_down(self, client: socket.socket) -> None:
        with client:
            head = b""
            while b"\r\n\r\n" not in head and (chunk := client.recv(65536)):
                head += chunk
            headers, _, body = head.partition(b"\r\n\r\n")
            size = next((int(v) for k, _, v in (ln.partition(b":") for ln in headers.split(b"\r\n"))
                         if k.strip().lower() == b"content-length"), 0)
            while len(body) < size and (chunk := client.recv(65536)):
                body += chunk
            client.sendall(b"HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\nConnection: close\r\n"
                           + f"Content-Length: {len(self.BODY)}\r\n\r\n".encode() + self.BODY)


@pytest.mark.realserver
def test_throttling_is_retried_and_then_named(s3: S3Server, bucket: str, tmp_path: Path) -> None:
    gate = Throttling(int(s3.endpoint.rsplit(":", 1)[1]))
    gate.open()
    try:
        via = f"http://127.0.0.1:{gate.port}"
        patient = S3Blobs(S3Settings(**s3_table(s3, bucket, tmp_path, endpoint_url=via, max_attempts=3)))
        data = rnd(5000, 11)
        gate.n = 2  # two SlowDown answers: the third try (max_attempts = 3) goes through
        assert patient.put_many({key(data): data}) == len(data)
        assert gate.refused == 2 and patient.get(key(data)) == data
        hasty = S3Blobs(S3Settings(**s3_table(s3, bucket, tmp_path, endpoint_url=via, max_attempts=1)))
        other = rnd(5000, 12)
        gate.n += 1  # one answer is enough to fail a single try: the error names what happened
        with pytest.raises(BlobStoreError, match=f"S3 PUT of blob {key(other)} in s3://{bucket}/.* SlowDown"):
            hasty.put_many({key(other): other})
        assert not patient.has(key(other))
    finally:
        gate.close()


@pytest.mark.realserver
async def test_an_s3_outage_holds_the_work_back_and_quarantines_nothing(
    s3: S3Server, bucket: str, make_app, tmp_path: Path
) -> None:
    gate = TcpGate(int(s3.endpoint.rsplit(":", 1)[1]))
    gate.open()
    table = s3_table(s3, bucket, tmp_path, endpoint_url=f"http://127.0.0.1:{gate.port}", max_attempts=1,
                     connect_timeout=1.0)
    app = make_app(store={"blobs": "s3", "s3": table})
    scan, photo = rnd(60_000, 21), rnd(60_000, 22)
    try:
        # intake while the bucket cannot be reached: the mail stays in the mailbox, nothing journaled
        gate.close()
        drop(tmp_path, "1", mail(("scan.pdf", scan)))
        await app.run_once()
        assert (tmp_path / "maildir" / "new" / "1").exists()
        # journaled while it could be reached, processed while it cannot: the entry stays pending
        gate.open()
        raw = mail(("photo.jpg", photo), msgid="<p@x>", sender="bob@example.com")
        app.store.journal_insert(RawMessage(channel="email", source="t", external_id="p", raw=raw))
        gate.close()
        app = make_app(store={"blobs": "s3", "s3": table})  # restarted: nothing in memory, S3 must answer
        with pytest.raises(StoreUnavailable, match=r"S3 GET of blob .* EndpointConnectionError"):
            await app.run_once()  # as with the database down (the daemon's loop goes on, cron retries)
        assert app.store.quarantine_list() == [] and app.store.get_ticket("SB-000001") is None
        # back: both become tickets with their files
        gate.open()
        res = await app.run_once()
        assert sorted(o.status for o in res["outcomes"]) == ["created", "created"]
        got = sorted(a.data for t in (1, 2) for a in app.store.attachments_with_data(t))
        assert got == sorted([scan, photo]) and app.store.quarantine_list() == []
    finally:
        gate.close()
