"""Frames byte strings into HTTP/1.1 requests with h11, an independent parser, for tests/differential.rs.

Reads a JSON list of hex strings on stdin (each: the bytes a client sent on one connection). For each,
feeds them to an h11 server-side connection, answering each complete request (h11 waits for the answer
before it parses the next one), and writes one JSON object per input to stdout, in a JSON list:
  {"framed": [[method, target, body_hex], ...], "end": "ok" | "incomplete" | "error", "why": "..."}
"ok": every byte belongs to a complete request (or follows one that closes the connection).
"""

import json
import sys

import h11


def frame(data: bytes) -> dict:
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    framed = []
    current = None
    body = b""
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                leftover, _ = conn.trailing_data
                done = conn.their_state is h11.IDLE and not leftover
                return {"framed": framed, "end": "ok" if done else "incomplete"}
            if isinstance(event, h11.Request):
                current = (event.method.decode("latin-1"), event.target.decode("latin-1"))
                body = b""
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                framed.append([current[0], current[1], body.hex()])
                conn.send(h11.Response(status_code=200, headers=[("content-length", "0")]))
                conn.send(h11.EndOfMessage())
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return {"framed": framed, "end": "ok"}
                conn.start_next_cycle()
            else:
                return {"framed": framed, "end": "error", "why": f"unexpected event {event!r}"}
    except h11.RemoteProtocolError as e:
        return {"framed": framed, "end": "error", "why": str(e)}


def main() -> None:
    cases = json.load(sys.stdin)
    json.dump([frame(bytes.fromhex(c)) for c in cases], sys.stdout)


if __name__ == "__main__":
    main()
