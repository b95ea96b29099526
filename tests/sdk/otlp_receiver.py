"""A minimal OTLP/HTTP trace receiver for the gateway's tests.

It decodes every `POST /v1/traces` (`application/x-protobuf`) with the official OpenTelemetry protobuf
definitions (the `opentelemetry-proto` package), not with anything of the gateway's, and prints one JSON
line per span on stdout:

    {"trace_id", "span_id", "parent_span_id" (hex, "" for a root), "name", "kind" (2 server, 3 client),
     "start", "end" (ns), "attributes" {key: value}, "status_code", "status_message", "flags",
     "trace_state", "resource" {key: value}, "scope", "unknown_fields" (fields the definitions do not know)}

The first stdout line is `PORT <n>`. It runs until its stdin closes or it is killed.

    python otlp_receiver.py
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

def _repeated(field):
    # `is_repeated` in protobuf 5.x and later; `label` before.
    flag = getattr(field, "is_repeated", None)
    return flag if flag is not None else field.label == field.LABEL_REPEATED


def _own_unknown(message):
    try:
        from google.protobuf import unknown_fields

        return len(unknown_fields.UnknownFieldSet(message))
    except ImportError:
        return len(message.UnknownFields())


def unknown_count(message):
    """Fields the definitions do not know, in `message` and in every message nested in it."""
    count = _own_unknown(message)
    for field, value in message.ListFields():
        if field.message_type is None:
            continue
        if _repeated(field):
            count += sum(unknown_count(v) for v in value)
        else:
            count += unknown_count(value)
    return count


def any_value(v):
    kind = v.WhichOneof("value")
    if kind == "array_value":
        return [any_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: any_value(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return v.bytes_value.hex()
    return getattr(v, kind) if kind else None


LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        length = int(self.headers.get("content-length", "0"))
        body = self.rfile.read(length)
        if self.path != "/v1/traces":
            return self.answer(404, b"")
        if self.headers.get("content-type") != "application/x-protobuf":
            return self.answer(415, b"")
        request = ExportTraceServiceRequest()
        try:
            request.ParseFromString(body)
        except Exception as e:  # a malformed message: the test sees the error line
            with LOCK:
                print(json.dumps({"decode_error": str(e)}), flush=True)
            return self.answer(400, b"")
        with LOCK:
            for rs in request.resource_spans:
                resource = {kv.key: any_value(kv.value) for kv in rs.resource.attributes}
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        line = {
                            "trace_id": span.trace_id.hex(),
                            "span_id": span.span_id.hex(),
                            "parent_span_id": span.parent_span_id.hex(),
                            "name": span.name,
                            "kind": span.kind,
                            "start": span.start_time_unix_nano,
                            "end": span.end_time_unix_nano,
                            "attributes": {kv.key: any_value(kv.value) for kv in span.attributes},
                            "status_code": span.status.code,
                            "status_message": span.status.message,
                            "flags": span.flags,
                            "trace_state": span.trace_state,
                            "resource": resource,
                            "scope": ss.scope.name,
                            "unknown_fields": unknown_count(span) + unknown_count(rs.resource),
                        }
                        print(json.dumps(line), flush=True)
        self.answer(200, ExportTraceServiceResponse().SerializeToString())

    def answer(self, status, body):
        self.send_response(status)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def main():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"PORT {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sys.stdin.read()


if __name__ == "__main__":
    main()
