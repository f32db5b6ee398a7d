"""A stand-in for ``python -m llama_cpp.server`` that crashes: run by the local-judge tests in its place.

Takes the server's flags (``--host``, ``--port``; the others are ignored), answers ``GET /v1/models`` like
llama-cpp-python's server, and on its first chat-completion request prints a line and dies: by SIGSEGV
(what a llama.cpp build for another CPU does, see issue 16) or, with ``--exit-code N``, by ``os._exit(N)``.
Standard library only, so the test needs no llama.cpp.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--exit-code", type=int, default=None)  # None: die by SIGSEGV
    args, _ = parser.parse_known_args()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a: object) -> None:
            pass

        def do_GET(self) -> None:
            body = json.dumps({"object": "list", "data": [{"id": "smollm2", "object": "model"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:
            print(f"stand-in server: {self.path} received; crashing now", flush=True)
            if args.exit_code is not None:
                os._exit(args.exit_code)
            signal.signal(signal.SIGSEGV, signal.SIG_DFL)  # no Python handler: die as a native crash does
            os.kill(os.getpid(), signal.SIGSEGV)

    print(f"stand-in server: listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    HTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
