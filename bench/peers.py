"""The two peers Selextract is measured against, each run in its own process by
`bench.scrape` (so its CPU time and peak RSS are its own):

    python -m bench.peers raw    --base http://127.0.0.1:38888 --pages 2000 --concurrency 16 --out /tmp/raw.jsonl
    python -m bench.peers scrapy --base … (same arguments)

Both apply the same field rules as the Selextract task (bench.rules.RULES): the page title,
then per product its name, price (XPath) and absolute link. Each prints one JSON line:
pages fetched, items extracted, the crawl's wall time and the CPU seconds it used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time
from typing import Any


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def extract(sel: Any, url: str) -> dict[str, Any]:
    """The rules of bench.rules.RULES written out for parsel (what Scrapy users write)."""
    from urllib.parse import urljoin

    products = []
    for p in sel.css("li.product"):
        name = p.css(".name::text").get()
        price = p.xpath(".//span[@class='price']/text()").get()
        href = p.css("a.link::attr(href)").get()
        products.append(
            {
                "name": name.strip() if name else None,
                "price": price.strip() if price else None,
                "url": urljoin(url, href) if href else None,
            }
        )
    title = sel.css("h1::text").get()
    return {"title": title.strip() if title else None, "products": products}


# --- plain asyncio + httpx + parsel ---------------------------------------------------------


async def raw_loop(urls: list[str], concurrency: int, out: str) -> dict[str, Any]:
    import httpx
    from parsel import Selector

    pending = iter(urls)
    stats = {"pages": 0, "items": 0, "errors": 0}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    with open(out, "w", encoding="utf-8") as sink:
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:

            async def worker() -> None:
                for url in pending:
                    try:
                        response = await client.get(url)
                        response.raise_for_status()
                    except httpx.HTTPError:
                        stats["errors"] += 1
                        continue
                    data = extract(Selector(text=response.text), url)
                    sink.write(json.dumps({"url": url, "status_code": response.status_code, "data": data}) + "\n")
                    stats["pages"] += 1
                    stats["items"] += len(data["products"])

            await asyncio.gather(*(worker() for _ in range(concurrency)))
    return stats


def run_raw(urls: list[str], concurrency: int, out: str) -> dict[str, Any]:
    return asyncio.run(raw_loop(urls, concurrency, out))


# --- Scrapy -------------------------------------------------------------------------------


def run_scrapy(urls: list[str], concurrency: int, out: str) -> dict[str, Any]:
    import scrapy
    from scrapy.crawler import CrawlerProcess

    stats = {"pages": 0, "items": 0, "errors": 0}

    class CatalogueSpider(scrapy.Spider):
        name = "catalogue"

        async def start(self):  # Scrapy >= 2.13
            for url in urls:
                yield scrapy.Request(url, callback=self.parse, errback=self.failed)

        def parse(self, response: Any) -> Any:
            data = extract(response, response.url)
            stats["pages"] += 1
            stats["items"] += len(data["products"])
            yield {"url": response.url, "status_code": response.status, "data": data}

        def failed(self, failure: Any) -> None:
            stats["errors"] += 1

    process = CrawlerProcess(
        settings={
            "CONCURRENT_REQUESTS": concurrency,
            "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency,
            "DOWNLOAD_DELAY": 0,
            "ROBOTSTXT_OBEY": True,  # Selextract reads robots.txt too
            "AUTOTHROTTLE_ENABLED": False,
            "COOKIES_ENABLED": False,
            "TELNETCONSOLE_ENABLED": False,
            "LOG_LEVEL": "WARNING",
            "FEEDS": {out: {"format": "jsonlines", "encoding": "utf8", "overwrite": True}},
        }
    )
    process.crawl(CatalogueSpider)
    process.start()
    return stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("engine", choices=["raw", "scrapy"])
    parser.add_argument("--base", required=True)
    parser.add_argument("--pages", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    urls = [f"{args.base}/p/{i}.html" for i in range(args.pages)]
    cpu0, t0 = cpu_seconds(), time.monotonic()
    stats = (run_raw if args.engine == "raw" else run_scrapy)(urls, args.concurrency, args.out)
    elapsed, cpu = time.monotonic() - t0, cpu_seconds() - cpu0
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({**stats, "seconds": elapsed, "cpu_seconds": cpu, "peak_rss_mb": peak_kb / 1024}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
