"""The field rules every engine applies (Selextract's task `extract`, written out for
parsel in bench.peers.extract): title, then per product name, price (XPath) and link."""

RULES = {
    "title": "h1::text",
    "products": {
        "selector": "li.product",
        "many": True,
        "fields": {
            "name": ".name::text",
            "price": {"selector": ".//span[@class='price']/text()", "type": "xpath"},
            "url": {"selector": "a.link", "attr": "href", "absolute": True},
        },
    },
}
