"""A real Jaeger client end to end: OpenTelemetry Python's Jaeger Thrift exporter, as an
agent client (UDP, compact protocol) and as a collector client (HTTP, binary protocol) →
spoor-collector's jaeger receiver → spoor-server, read back through the Tempo API."""

import time

import pytest
import requests
import opentelemetry.sdk.environment_variables as sdk_environment_variables
from opentelemetry.proto.trace.v1.trace_pb2 import Span as OtlpSpan, Status as OtlpStatus, TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from collector_support import Collector
from conftest import Server, free_port, free_udp_port

# The last release of the exporter (1.21.0) imports environment variable names that newer
# SDKs no longer define; its own code is unchanged by defining them.
for _name in ("AGENT_HOST", "AGENT_PORT", "AGENT_SPLIT_OVERSIZED_BATCHES", "ENDPOINT",
              "PASSWORD", "TIMEOUT", "USER"):
    _name = f"OTEL_EXPORTER_JAEGER_{_name}"
    if not hasattr(sdk_environment_variables, _name):
        setattr(sdk_environment_variables, _name, _name)
from opentelemetry.exporter.jaeger.thrift import JaegerExporter  # noqa: E402


@pytest.fixture
def stack(tmp_path):
    server = Server(tmp_path / "server").start()
    collector = Collector(tmp_path / "collector", server.grpc_port)
    compact_port, http_port = free_udp_port(), free_port()
    config = collector.config_path.read_text()
    config = config.replace("receivers:\n  otlp:", f"""receivers:
  jaeger:
    protocols:
      thrift_compact:
        endpoint: 127.0.0.1:{compact_port}
      thrift_http:
        endpoint: 127.0.0.1:{http_port}
  otlp:""", 1).replace("receivers: [otlp]", "receivers: [otlp, jaeger]")
    collector.config_path.write_text(config)
    collector.start()
    yield server, collector, compact_port, http_port
    collector.stop()
    server.stop()


def emit(exporter, service):
    """A server span with an event and a client child with an error; returns the trace ID."""
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    tracer = provider.get_tracer("shop.checkout", "1.4.0")
    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER,
                                      attributes={"items": 3, "express": True}) as root:
        root.add_event("cart loaded")
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT) as child:
            child.set_status(Status(StatusCode.ERROR, "card declined"))
        trace_id = root.get_span_context().trace_id
    provider.shutdown()
    return trace_id


def read_trace(server, trace_id):
    url = f"{server.api}/api/traces/{trace_id:032x}"
    deadline = time.time() + 30
    while time.time() < deadline:
        r = requests.get(url, headers={"Accept": "application/protobuf"})
        if r.status_code == 200:
            spans = {}
            for resource_spans in TracesData.FromString(r.content).resource_spans:
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        spans[span.name] = (resource_spans.resource, scope_spans.scope, span)
            if len(spans) == 2:
                return spans
        time.sleep(0.1)
    raise AssertionError(f"trace {trace_id:032x} not complete in the server")


def attribute(attributes, key):
    for kv in attributes:
        if kv.key == key:
            return getattr(kv.value, kv.value.WhichOneof("value"))
    return None


def metric(collector, series):
    for line in collector.metrics().splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_python_jaeger_exporter_through_the_collector(stack):
    server, collector, compact_port, http_port = stack
    via_agent = emit(JaegerExporter(agent_host_name="127.0.0.1", agent_port=compact_port), "shop-agent")
    via_http = emit(JaegerExporter(collector_endpoint=f"http://127.0.0.1:{http_port}/api/traces"), "shop-http")

    for trace_id, service in ((via_agent, "shop-agent"), (via_http, "shop-http")):
        spans = read_trace(server, trace_id)
        resource, scope, checkout = spans["checkout"]
        _, _, charge = spans["charge"]
        assert attribute(resource.attributes, "service.name") == service
        assert (scope.name, scope.version) == ("shop.checkout", "1.4.0")
        assert checkout.trace_id == trace_id.to_bytes(16, "big")
        assert checkout.kind == OtlpSpan.SPAN_KIND_SERVER
        assert attribute(checkout.attributes, "items") == 3
        assert attribute(checkout.attributes, "express") is True
        # The exporter writes the event name as a `message` log field; contrib (and so spoor)
        # takes an event's name from an `event` field only.
        assert [(e.name, attribute(e.attributes, "message")) for e in checkout.events] == [("", "cart loaded")]
        assert charge.parent_span_id == checkout.span_id
        assert charge.kind == OtlpSpan.SPAN_KIND_CLIENT
        assert (charge.status.code, charge.status.message) == (OtlpStatus.STATUS_CODE_ERROR, "card declined")
        assert checkout.start_time_unix_nano <= charge.start_time_unix_nano < charge.end_time_unix_nano

    assert metric(collector, 'otelcol_receiver_accepted_spans_total{receiver="jaeger",transport="udp_thrift_compact"}') == 2
    assert metric(collector, 'otelcol_receiver_accepted_spans_total{receiver="jaeger",transport="collector_http"}') == 2
