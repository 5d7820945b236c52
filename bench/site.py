"""The benchmark's test website: N catalogue pages (~50 KB, 20 products each, some slow),
generated into a directory and served by a small keep-alive HTTP/1.1 server (stdlib only,
so it runs unchanged on the host and inside `selextract/python:3.11` on a stack network).

    python bench/site.py generate --dir /tmp/site --pages 2000
    python bench/site.py serve --dir /tmp/site --host 127.0.0.1 --port 38888

URLs: /p/<i>.html (i = 0..N-1), /robots.txt (allow all), /health. Page i is slow when
i % 20 == 7: 5 % of the pages answer 850 ms late.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
from pathlib import Path

ITEMS_PER_PAGE = 20
WORDS = (  # noqa: SIM905 (one readable line of filler words)
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip ex ea "
    "commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla pariatur"
).split()


def slow_ms(i: int) -> int:
    return 850 if i % 20 == 7 else 0


def price(i: int, j: int) -> str:
    return f"${(i * 31 + j * 17) % 500 + 0.99:.2f}"


def render(i: int, pages: int) -> str:
    rnd = random.Random(i)
    nav = "".join(f'<li><a href="/p/{(i + k) % pages}.html">Page {(i + k) % pages}</a></li>' for k in range(1, 61))
    items = []
    for j in range(ITEMS_PER_PAGE):
        desc = " ".join(rnd.choice(WORDS) for _ in range(330))
        items.append(
            f'<li class="product" data-sku="SKU-{i}-{j}">'
            f'<a class="link" href="/item/{i}/{j}.html"><span class="name">Product {i}-{j}</span></a> '
            f'<span class="price">{price(i, j)}</span>'
            f'<p class="desc">{desc}</p></li>\n'
        )
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'>"
        f"<title>Catalogue page {i}</title></head><body>\n"
        f"<header><nav><ul class='nav'>{nav}</ul></nav></header>\n"
        f"<main><h1>Catalogue page {i}</h1>\n<ul class='products'>\n{''.join(items)}</ul></main>\n"
        "<footer><p>Selextract benchmark site</p></footer></body></html>\n"
    )


def generate(directory: Path, pages: int) -> dict:
    directory.mkdir(parents=True, exist_ok=True)
    total = 0
    for i in range(pages):
        body = render(i, pages).encode()
        total += len(body)
        (directory / f"{i}.html").write_bytes(body)
    meta = {
        "pages": pages,
        "bytes": total,
        "avg_bytes": total // pages,
        "items_per_page": ITEMS_PER_PAGE,
        "slow_pages": sum(1 for i in range(pages) if slow_ms(i)),
    }
    (directory / "site.json").write_text(json.dumps(meta))
    return meta


# --- server ------------------------------------------------------------------------------

PAGE = re.compile(rb"^/p/(\d+)\.html$")


def response(status: str, body: bytes, ctype: str = "text/html; charset=utf-8", close: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
        f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n"
    )
    return head.encode() + body


class Site:
    def __init__(self, directory: Path) -> None:
        self.pages = [p.read_bytes() for p in sorted(directory.glob("*.html"), key=lambda p: int(p.stem))]
        self.served = 0

    def answer(self, path: bytes) -> tuple[bytes, int]:
        m = PAGE.match(path.split(b"?", 1)[0])
        if m:
            i = int(m.group(1))
            if i < len(self.pages):
                self.served += 1
                return response("200 OK", self.pages[i]), slow_ms(i)
        if path == b"/robots.txt":
            return response("200 OK", b"User-agent: *\nAllow: /\n", "text/plain"), 0
        if path == b"/health":
            return response(
                "200 OK", json.dumps({"pages": len(self.pages), "served": self.served}).encode(), "application/json"
            ), 0
        return response("404 Not Found", b"not found"), 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    return
                line, _, headers = head.partition(b"\r\n")
                parts = line.split()
                if len(parts) < 2:
                    return
                close = b"connection: close" in headers.lower()
                payload, delay = self.answer(parts[1])
                if delay:
                    await asyncio.sleep(delay / 1000)
                writer.write(payload)
                await writer.drain()
                if close:
                    return
        finally:
            writer.close()


async def serve(directory: Path, host: str, port: int) -> None:
    site = Site(directory)
    server = await asyncio.start_server(site.handle, host, port, backlog=1024)
    print(f"serving {len(site.pages)} pages on {host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    gen = sub.add_parser("generate")
    gen.add_argument("--dir", type=Path, required=True)
    gen.add_argument("--pages", type=int, default=2000)
    srv = sub.add_parser("serve")
    srv.add_argument("--dir", type=Path, required=True)
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=38888)
    args = parser.parse_args(argv)
    if args.cmd == "generate":
        print(json.dumps(generate(args.dir, args.pages)))
    else:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(serve(args.dir, args.host, args.port))
    return 0


if __name__ == "__main__":
    sys.exit(main())
