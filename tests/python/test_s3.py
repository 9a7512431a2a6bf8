"""Blocks on a real S3-compatible server (moto's standalone server from PyPI): traces
exported over OTLP are flushed into blocks in the bucket and read back after a restart
with an empty WAL, i.e. from the bucket alone."""

import shutil

import requests

from conftest import Server, bucket_keys, s3_env, wait_flushed
from test_otel_sdk import Recording, check_round_trip, emit_traces
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter


def test_blocks_round_trip_through_s3(tmp_path, s3):
    env = {
        **s3_env(s3),
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
