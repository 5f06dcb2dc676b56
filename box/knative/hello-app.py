#!/usr/bin/env python3
"""The Knative demo's user container (demo.sh: a ConfigMap run by the box's Debian python
image): answers every GET on $PORT, which Knative sets (8080), with $GREETING and the
request's Host and Knative headers."""

import json
import os
from http.server import BaseHTTPRequestHandler, HTTPServer


class H(BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps(
            {
                "greeting": os.environ.get("GREETING", "hello"),
                "host": self.headers.get("Host"),
                "path": self.path,
                "k_revision": os.environ.get("K_REVISION"),
                "headers": {
                    k: v
                    for k, v in self.headers.items()
                    if k.lower().startswith(("knative-", "x-forwarded", "k-"))
                },
            }
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body + b"")


HTTPServer(("0.0.0.0", int(os.environ.get("PORT", "8080"))), H).serve_forever()
