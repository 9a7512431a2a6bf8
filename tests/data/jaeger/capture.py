"""Captures what opentelemetry-exporter-jaeger-thrift 1.21.0 sends (agent UDP packets in the
compact protocol, collector HTTP bodies in the binary protocol) into the directory given as
the first argument: the fixtures of spoor's jaeger decoder tests. Needs the exporter, its
`Deprecated` dependency and `thrift` next to the SDK of tests/python/requirements.txt."""
import http.server, socket, sys, threading
import opentelemetry.sdk.environment_variables as ev
for name in ["OTEL_EXPORTER_JAEGER_AGENT_HOST","OTEL_EXPORTER_JAEGER_AGENT_PORT","OTEL_EXPORTER_JAEGER_AGENT_SPLIT_OVERSIZED_BATCHES","OTEL_EXPORTER_JAEGER_ENDPOINT","OTEL_EXPORTER_JAEGER_PASSWORD","OTEL_EXPORTER_JAEGER_TIMEOUT","OTEL_EXPORTER_JAEGER_USER"]:
    if not hasattr(ev, name): setattr(ev, name, name)
from opentelemetry.exporter.jaeger.thrift import JaegerExporter
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.trace import SpanKind, Status, StatusCode, Link, SpanContext, TraceFlags
out = sys.argv[1]
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); udp.bind(("127.0.0.1", 0))
bodies = []
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        bodies.append((self.headers.get("Content-Type"), self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(202); self.end_headers()
    def log_message(self, *a): pass
srv = http.server.HTTPServer(("127.0.0.1", 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
def emit(exporter):
    tp = TracerProvider(resource=Resource.create({"service.name": "py-shop", "deployment.environment": "test"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = tp.get_tracer("shop.checkout", "1.4.0")
    link = Link(SpanContext(0x0af7651916cd43dd8448eb211c80319c, 0xb7ad6b7169203331, True, TraceFlags(1)), {"why": "retry"})
    with tracer.start_as_current_span("checkout", kind=SpanKind.SERVER, attributes={"s": "v", "i": 7, "f": 1.5, "b": True}) as root:
        root.add_event("cart loaded", {"items": 3})
        with tracer.start_as_current_span("charge", kind=SpanKind.CLIENT, links=[link]) as child:
            child.set_status(Status(StatusCode.ERROR, "card declined"))
    tp.shutdown()
emit(JaegerExporter(agent_host_name="127.0.0.1", agent_port=udp.getsockname()[1]))
udp.settimeout(2)
packets = [udp.recv(65535), udp.recv(65535)]
emit(JaegerExporter(collector_endpoint=f"http://127.0.0.1:{srv.server_port}/api/traces?format=jaeger.thrift"))
assert len(bodies) == 2, bodies
for i, p in enumerate(packets):
    open(f"{out}/python-agent-compact-{i}.bin", "wb").write(p)
for i, (ct, b) in enumerate(bodies):
    print(ct)
    open(f"{out}/python-collector-binary-{i}.bin", "wb").write(b)
