#!/usr/bin/env python3
"""Selextract test website: static pages with known content plus a few
dynamic endpoints, for scraping tests. Standard library only.

    python3 images/testsite/server.py --port 8099 --root images/testsite/site

Endpoints besides the files under --root (no directory listings):
    /healthz              200 "ok"
    /slow?ms=N            answers after N ms (default 3000, max 60000)
    /status/<code>        answers with that HTTP status (e.g. /status/500, /status/404)
    /redirect?to=URL      302 to URL (optional &code=301|302|303|307|308)
    /headers              the request headers as JSON (e.g. to check the User-Agent)
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import html
import json
import os
import signal
import sys
import time
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

MAX_SLOW_MS = 60_000


class Handler(SimpleHTTPRequestHandler):
    server_version = "selextract-testsite/1"
    protocol_version = "HTTP/1.1"  # keep-alive; every response sets Content-Length
    quiet = False

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        if not self._dynamic():
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._dynamic():
            super().do_HEAD()

    # -- dynamic endpoints -------------------------------------------------
    def _dynamic(self) -> bool:
        url = urlsplit(self.path)
        query = parse_qs(url.query)
        path = url.path
        if path == "/healthz":
            self._reply(200, "ok\n", "text/plain; charset=utf-8")
        elif path == "/slow":
            try:
                ms = int(query.get("ms", ["3000"])[0])
            except ValueError:
                self._reply(400, "ms must be an integer\n", "text/plain; charset=utf-8")
                return True
            ms = max(0, min(ms, MAX_SLOW_MS))
            time.sleep(ms / 1000)
            self._page(200, "Slow page", f'<p id="slow">slept {ms} ms</p>')
        elif path.startswith("/status/"):
            try:
                code = int(path.rsplit("/", 1)[1])
                phrase = HTTPStatus(code).phrase
                if not 200 <= code <= 599:
                    raise ValueError(code)
            except ValueError:
                self._reply(400, "unknown status code\n", "text/plain; charset=utf-8")
                return True
            if code in (204, 304):
                self.send_response(code)
                self.end_headers()
            else:
                self._page(code, f"{code} {phrase}", f'<p id="status">{code} {html.escape(phrase)}</p>')
        elif path == "/redirect":
            target = query.get("to", ["/"])[0]
            code = query.get("code", ["302"])[0]
            code = int(code) if code in ("301", "302", "303", "307", "308") else 302
            self.send_response(code)
            self.send_header("Location", target)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif path == "/headers":
            body = json.dumps(dict(self.headers.items()), indent=2, sort_keys=True) + "\n"
            self._reply(200, body, "application/json")
        else:
            return False
        return True

    def _page(self, code: int, title: str, body: str) -> None:
        doc = (
            f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title></head>\n<body>\n{body}\n</body>\n</html>\n"
        )
        self._reply(code, doc, "text/html; charset=utf-8")

    def _reply(self, code: int, body: str, ctype: str) -> None:
        data = body.encode()
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    # -- static files ------------------------------------------------------
    def list_directory(self, path):  # no directory listings: 404 like a plain web server
        self.send_error(404, "Not Found")
        return None

    def log_message(self, format: str, *args) -> None:
        if not self.quiet:
            super().log_message(format, *args)


def main(argv: list[str] | None = None) -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="0.0.0.0", help="address to bind (default 0.0.0.0)")
    ap.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    ap.add_argument("--root", default=os.path.join(here, "site"), help="directory with the site files")
    ap.add_argument("--quiet", action="store_true", help="no access log")
    args = ap.parse_args(argv)

    if not os.path.isdir(args.root):
        print(f"testsite: no such directory: {args.root}", file=sys.stderr)
        return 2
    Handler.quiet = args.quiet
    handler = functools.partial(Handler, directory=os.path.abspath(args.root))
    ThreadingHTTPServer.daemon_threads = True
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 in a container
    with ThreadingHTTPServer((args.host, args.port), handler) as httpd:
        print(f"testsite: serving {args.root} on http://{args.host}:{httpd.server_port}/", file=sys.stderr, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            httpd.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
