"""Test data built in code: a small catalogue with products that queries name unambiguously."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fusionrank.core.catalogue import Product

# Products a query names unambiguously: (query, product id).
ANCHORS = {
    "cordless drill": Product("A-DRILL", "Cordless power drill 18V with two lithium batteries",
                              category="tools", price=89.0),
    "kitchen sink": Product("A-SINK", "Stainless steel double bowl kitchen sink",
                            category="kitchen", price=149.0),
    "wool scarf": Product("A-SCARF", "Red wool winter scarf", category="clothing", price=19.5),
    "garden hose": Product("A-HOSE", "50 ft expandable garden hose with spray nozzle",
                           category="garden", price=34.0),
    "ceiling fan": Product("A-FAN", "52 inch ceiling fan with LED light kit", category="lighting",
                           price=119.0),
    "teapot": Product("A-TEAPOT", "Porcelain teapot with floral pattern", category="kitchen",
                      price=12.0),
}

COLOURS = ["white", "black", "blue", "green", "pink", "grey", "yellow", "orange"]
MATERIALS = ["ceramic", "glass", "metal", "wooden", "paper", "cotton"]
ITEMS = ["photo frame", "candle holder", "storage box", "coaster set", "notebook", "vase",
         "cushion cover"]


def filler_products() -> list[Product]:
    """A few hundred distinct gift-shop products, none of which an anchor query names."""
    return [Product(f"F{i:04d}", f"{colour.capitalize()} {material} {item}",
                    category="gift-ware", price=round(1.5 + (i % 17) * 0.75, 2))
            for i, (colour, material, item)
            in enumerate(itertools.product(COLOURS, MATERIALS, ITEMS))]


@contextmanager
def running_server(repository: Path, log_path: Path, cache_mib: int = 0) -> Iterator:
    """A real tritonserver on free loopback ports, its log kept in `log_path` (and its tail
    printed when it fails to start)."""
    from fusionrank.app.serve import TritonServer

    with log_path.open("w") as log:
        server = TritonServer(repository, log=log, cache_mib=cache_mib)
        try:
            server.start()
        except Exception:
            print(log_path.read_text()[-5000:])
            raise
        try:
            yield server
        finally:
            server.stop()
