"""Blocks on a real S3-compatible server (moto's standalone server from PyPI): traces
exported over OTLP are flushed into blocks in the bucket and read back after a restart
with an empty WAL, i.e. from the bucket alone."""

import os
import pathlib
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ET

import pytest
import requests

from conftest import Server, free_port, wait_flushed
from test_otel_sdk import Recording, check_round_trip, emit_traces
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter


@pytest.fixture
def s3():
    port = free_port()
    moto = pathlib.Path(sys.executable).parent / "moto_server"
    proc = subprocess.Popen([str(moto), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.time() + 30
    while time.time() < deadline:
        try:
            requests.get(endpoint, timeout=1)
            break
        except requests.RequestException:
            time.sleep(0.2)
    assert requests.put(f"{endpoint}/traces").status_code == 200
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def bucket_keys(endpoint):
    r = requests.get(f"{endpoint}/traces?list-type=2")
    assert r.status_code == 200
    ns = {"s3": "http://s3.amazonaws.com/doc/2006-03-01/"}
    return [k.text for k in ET.fromstring(r.content).findall(".//s3:Key", ns)]


def test_blocks_round_trip_through_s3(tmp_path, s3):
    env = {
        "SPOOR_STORAGE__BACKEND": "s3",
        "SPOOR_STORAGE__S3__BUCKET": "traces",
        "SPOOR_STORAGE__S3__ENDPOINT": s3,
        "SPOOR_STORAGE__S3__PREFIX": "spoor",
        "SPOOR_STORAGE__S3__ALLOW_HTTP": "true",
        "SPOOR_STORAGE__S3__FORCE_PATH_STYLE": "true",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "SPOOR_HEAD__MAX_BLOCK_DURATION": "1s",
        "SPOOR_HEAD__TRACE_IDLE": "1s",
    }
    srv = Server(tmp_path / "s", env).start()
    try:
        recording = Recording(GrpcExporter(endpoint=f"127.0.0.1:{srv.grpc_port}", insecure=True,
                                           headers={"x-scope-orgid": "acme"}))
        trace_ids = emit_traces(recording, "checkout-s3")
        wait_flushed(srv)
        keys = bucket_keys(s3)
        assert any(k.startswith("spoor/acme/") and k.endswith("/meta.json") for k in keys), keys
        assert any(k.endswith("/data.parquet") for k in keys), keys
        # Everything is in blocks: drop the WAL entirely, reads must come from the bucket.
        srv.stop()
        shutil.rmtree(srv.data_dir / "wal")
        srv.start()
        session_headers = {"X-Scope-OrgID": "acme"}
        for trace_id in trace_ids:
            r = requests.get(f"{srv.api}/api/traces/{trace_id:032x}", headers=session_headers)
            assert r.status_code == 200, r.text
        # Full field comparison, scoped to the tenant.
        orig_get = requests.get
        requests.get = lambda url, headers=None, **kw: orig_get(url, headers={**(headers or {}), **session_headers}, **kw)
        try:
            check_round_trip(srv, recording, trace_ids)
        finally:
            requests.get = orig_get
    finally:
        srv.stop()
