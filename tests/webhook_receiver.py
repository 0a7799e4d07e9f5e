#!/usr/bin/env python3
"""A webhook receiver for the end-to-end tests (tests/tests/webhooks_flow.rs).

It verifies every Standard Webhooks signature with Python's own hmac,
hashlib and base64, independently of the gateway's Rust code, and appends
one JSON line per request to --log:

    {"path", "id", "timestamp", "signature", "valid", "body", "status"}

`valid` is true only when the `v1,` signature over "{id}.{timestamp}.{body}"
matches, keyed with the base64 after `whsec_`, and the timestamp is within
five minutes of this machine's clock.

What it answers depends on the path, so one receiver plays every endpoint:
    /ok            200
    /flaky/N       500 to the first N attempts of each webhook-id, then 200
    /retry-after/S 503 with `Retry-After: S` to the first attempt of each
                   webhook-id, then 200
    /gone          410
Only the loopback address is served. With --tls-cert and --tls-key it
serves HTTPS (Python's ssl module) instead of HTTP.
"""

import argparse
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
ATTEMPTS = {}


def verify(secret, msg_id, timestamp, body, header):
    key = base64.b64decode(secret[len("whsec_"):])
    signed = msg_id.encode() + b"." + timestamp.encode() + b"." + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    fresh = abs(time.time() - int(timestamp)) <= 300
    # The header may carry several space-separated signatures.
    return fresh and any(
        s.startswith("v1,") and hmac.compare_digest(s[3:], expected) for s in header.split()
    )


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--log", required=True)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    args = parser.parse_args()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("content-length", "0"))
            body = self.rfile.read(length)
            msg_id = self.headers.get("webhook-id", "")
            ts = self.headers.get("webhook-timestamp", "0")
            sig = self.headers.get("webhook-signature", "")
            try:
                valid = verify(args.secret, msg_id, ts, body, sig)
            except Exception:
                valid = False
            with LOCK:
                key = (self.path, msg_id)
                n = ATTEMPTS.get(key, 0)
                ATTEMPTS[key] = n + 1
            status, headers = 200, {}
            parts = self.path.strip("/").split("/")
            if parts[0] == "flaky" and n < int(parts[1]):
                status = 500
            elif parts[0] == "retry-after" and n < 1:
                status, headers = 503, {"Retry-After": parts[1]}
            elif parts[0] == "gone":
                status = 410
            try:
                text = body.decode("utf-8")
            except UnicodeDecodeError:
                text = None
            line = json.dumps({
                "path": self.path, "id": msg_id, "timestamp": ts, "signature": sig,
                "valid": valid, "body": text, "status": status, "received": time.time(),
            })
            with LOCK:
                with open(args.log, "a") as f:
                    f.write(line + "\n")
            self.send_response(status)
            for k, v in headers.items():
                self.send_header(k, v)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    if args.tls_cert:
        import ssl
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"receiver listening on {args.port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
