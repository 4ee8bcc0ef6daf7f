"""Plays every conformance case with httpx-sse, a Python SSE client we did not write.

    python3 httpx_sse_client.py http://127.0.0.1:PORT [gzip]

With a coding, each stream is asked for compressed with it (httpx offers
gzip and decodes it).

Prints {case name: [events]} as JSON; tests/clients.rs compares it with the
table. Like EventSource, it reconnects when a stream ends, sending the last
event id, and stops at 204 (at most 5 connections per case).
"""

import json
import sys

import httpx
from httpx_sse import EventSource


def play(client: httpx.Client, base: str, name: str, coding: str) -> list:
    seen = []
    last_event_id = ""
    for _ in range(5):
        headers = {"accept": "text/event-stream"}
        if last_event_id:
            headers["last-event-id"] = last_event_id
        with client.stream("GET", f"{base}/conformance/{name}?run=httpx-sse-{coding or 'plain'}{'&coding=' + coding if coding else ''}", headers=headers) as response:
            if response.status_code == 204:
                return seen
            response.raise_for_status()
            for sse in EventSource(response).iter_sse():
                last_event_id = sse.id
                seen.append({"type": sse.event, "data": sse.data, "lastEventId": sse.id, "retry": sse.retry})
    raise SystemExit(f"{name}: the server never answered 204")


def main() -> None:
    base = sys.argv[1]
    coding = sys.argv[2] if len(sys.argv) > 2 else ""
    with httpx.Client(timeout=10.0) as client:
        cases = client.get(f"{base}/conformance/cases.json").json()
        json.dump({case["name"]: play(client, base, case["name"], coding) for case in cases}, sys.stdout)


if __name__ == "__main__":
    main()
