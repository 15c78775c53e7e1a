"""tokex as a ccxt exchange class, for the bots and tools that speak ccxt (``pip install ccxt``).

    from api.ccxt_tokex import tokex

    exchange = tokex({"apiKey": KEY, "secret": SECRET})
    exchange.urls["api"] = {"public": "http://127.0.0.1:8000", "private": "http://127.0.0.1:8000"}
    exchange.load_markets()
    exchange.create_order("DEEPSEEK-V3/CNY", "limit", "buy", 10, 2.05)

Symbols are ``BASE/CNY`` with the instrument's symbol as the base (``DEEPSEEK-V3/CNY``); amounts are lots, prices
CNY per lot. Private calls are signed as the API's own clients sign them (``api.signing``): hex HMAC-SHA256 of
timestamp + method + path?query + body under the secret, in the TOKEX-KEY, TOKEX-TIMESTAMP and TOKEX-SIGNATURE
headers. A problem answer's stable ``code`` picks the ccxt exception (``exceptions['exact']``); its ``detail`` is
the message.

Pages: the list calls (``fetch_trades``, ``fetch_orders`` and its open and closed variants, ``fetch_my_trades``)
take ``params={"cursor": ...}``, the ``next_cursor`` of the previous page; the ``next_cursor`` of the page just
read is kept in ``last_cursor`` (None after the last page). ``params={"paginate": True}`` follows the cursors
itself, up to ``options["paginationCalls"]`` pages (default 10).

Market orders: ``create_order(symbol, "market", "buy", amount)`` buys ``amount`` lots; a market buy with
``params={"cost": "25"}`` (or ``create_market_buy_order_with_cost``) spends at most that many CNY, fee included.
``params`` may carry ``clientOrderId``, ``timeInForce`` (GTC, IOC, FOK), ``postOnly`` and ``stp``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ccxt.base.decimal_to_precision import TICK_SIZE
from ccxt.base.errors import (
    AuthenticationError,
    BadRequest,
    BadSymbol,
    DuplicateOrderId,
    ExchangeError,
    ExchangeNotAvailable,
    InsufficientFunds,
    InvalidNonce,
    InvalidOrder,
    MarketClosed,
    NoChange,
    OrderImmediatelyFillable,
    OrderNotFound,
    PermissionDenied,
    RateLimitExceeded,
)
from ccxt.base.exchange import Exchange

QUOTE = "CNY"
DEFAULT_URL = "http://127.0.0.1:8000"
STATUSES = {"open": "open", "filled": "closed", "cancelled": "canceled", "expired": "expired"}

EXCEPTIONS = {
    "unauthenticated": AuthenticationError,
    "invalid_signature": AuthenticationError,
    "stale_timestamp": InvalidNonce,
    "insufficient_scope": PermissionDenied,
    "not_permitted": PermissionDenied,
    "not_approved": PermissionDenied,
    "rate_limited": RateLimitExceeded,
    "unavailable": ExchangeNotAvailable,
    "internal_error": ExchangeError,
    "unknown_instrument": BadSymbol,
    "unknown_order": OrderNotFound,
    "instrument_halted": MarketClosed,
    "insufficient_funds": InsufficientFunds,
    "insufficient_tokens": InsufficientFunds,
    "would_take": OrderImmediatelyFillable,
    "duplicate_order_id": DuplicateOrderId,
    "no_change": NoChange,
    **dict.fromkeys(("invalid_price", "off_tick_price", "invalid_qty", "qty_below_minimum", "qty_above_maximum",
                     "qty_not_above_filled", "invalid_budget", "budget_too_small", "invalid_order_type",
                     "invalid_side", "invalid_time_in_force", "invalid_stp_mode", "post_only_requires_gtc"),
                    InvalidOrder),
    **dict.fromkeys(("malformed_body", "not_found", "method_not_allowed", "body_too_large", "unsupported_media_type",
                     "invalid_field", "unknown_field", "missing_field", "invalid_decimal", "too_precise",
                     "out_of_range", "invalid_cursor"), BadRequest),
}
"""Problem code -> ccxt exception; any other code of an error answer is an ExchangeError."""


class tokex(Exchange):
    """The tokex API through ccxt's unified methods; the class is named by its id, as ccxt's own are."""

    def describe(self) -> dict:
        return self.deep_extend(super().describe(), {
            "id": "tokex",
            "name": "tokex",
            "countries": ["CN"],
            "version": "v1",
            "rateLimit": 50,  # the server's per-key limit is 50 requests a second
            "pro": False,
            "precisionMode": TICK_SIZE,
            "has": {
                "CORS": None, "spot": True, "margin": False, "swap": False, "future": False, "option": False,
                "cancelOrder": True, "createOrder": True, "createMarketBuyOrderWithCost": True,
                "fetchBalance": True, "fetchClosedOrders": True, "fetchMarkets": True, "fetchMyTrades": True,
                "fetchOHLCV": True, "fetchOpenOrders": True, "fetchOrder": True, "fetchOrderBook": True,
                "fetchOrders": True, "fetchStatus": True, "fetchTicker": True, "fetchTickers": True,
                "fetchTime": True, "fetchTrades": True,
            },
            "timeframes": {"1m": "1m", "5m": "5m", "1h": "1h", "1d": "1d"},
            "urls": {"api": {"public": DEFAULT_URL, "private": DEFAULT_URL}, "doc": DEFAULT_URL + "/docs"},
            "requiredCredentials": {"apiKey": True, "secret": True},
            "options": {"paginationCalls": 10},
            "exceptions": {"exact": EXCEPTIONS, "broad": {}},
        })

    # -- transport -----------------------------------------------------------------------------------------------

    def sign(self, path, api="public", method="GET", params=None, headers=None, body=None):
        api_name = api[0] if isinstance(api, list) else api
        params = params or {}
        target = "/v1/" + self.implode_params(path, params)
        query = self.omit(params, self.extract_params(path))
        if method in ("GET", "DELETE"):
            if query:
                target += "?" + self.urlencode(query)
        elif query:
            body = self.json(query)
        base = self.safe_string(self.urls["api"], api_name)
        if base is None:
            raise ExchangeError(f"{self.id} has no urls['api']['{api_name}']")
        headers = {}
        if body is not None:
            headers["Content-Type"] = "application/json"
        if api_name == "private":
            self.check_required_credentials()
            timestamp = str(self.seconds())
            payload = timestamp + method + target + (body or "")
            headers["TOKEX-KEY"] = self.apiKey
            headers["TOKEX-TIMESTAMP"] = timestamp
            headers["TOKEX-SIGNATURE"] = self.hmac(self.encode(payload), self.encode(self.secret), hashlib.sha256)
        return {"url": base.rstrip("/") + target, "method": method, "body": body, "headers": headers}

    def handle_errors(self, code, reason, url, method, headers, body, response, request_headers, request_body):
        if code < 400:
            return None
        problem_code = self.safe_string(response, "code")
        message = f"{self.id} {self.safe_string(response, 'detail', body)}"
        if problem_code is not None:
            self.throw_exactly_matched_exception(self.exceptions["exact"], problem_code, message)
        raise ExchangeError(message)

    def _pages(self, path: str, api: str, request: dict, params: dict) -> list[dict]:
        """The items of one page, or with ``paginate`` of every page up to ``paginationCalls``."""
        paginate = self.safe_bool(params, "paginate", False)
        request = self.extend(request, self.omit(params, ["paginate"]))
        items: list[dict] = []
        for _ in range(self.options["paginationCalls"] if paginate else 1):
            page = self.request(path, api, "GET", request)
            items.extend(page["items"])
            self.last_cursor = page.get("next_cursor")
            if self.last_cursor is None:
                break
            request["cursor"] = self.last_cursor
        return items

    # -- public ----------------------------------------------------------------------------------------------------

    def fetch_time(self, params=None):
        return self.safe_integer(self.request("time", "public", "GET", params or {}), "epoch_ms")

    def fetch_status(self, params=None):
        try:
            self.request("health", "public", "GET", params or {})
        except ExchangeNotAvailable as exc:
            return {"status": "maintenance", "updated": self.milliseconds(), "eta": None, "url": None,
                    "info": str(exc)}
        return {"status": "ok", "updated": self.milliseconds(), "eta": None, "url": None, "info": None}

    def fetch_markets(self, params=None) -> list[dict]:
        return [self.parse_market(item) for item in self.request("instruments", "public", "GET", params or {})["items"]]

    def parse_market(self, item: dict) -> dict:
        base = item["symbol"]
        return self.safe_market_structure({
            "id": base, "symbol": f"{base}/{QUOTE}", "base": base, "quote": QUOTE, "baseId": base, "quoteId": QUOTE,
            "type": "spot", "spot": True, "margin": False, "swap": False, "future": False, "option": False,
            "contract": False, "active": item["status"] == "trading",
            "maker": item["maker_fee_bps"] / 10_000, "taker": item["taker_fee_bps"] / 10_000,
            "precision": {"amount": self.parse_number("1"), "price": self.parse_number(item["tick"])},
            "limits": {"amount": {"min": item["min_qty"], "max": item["max_qty"]},
                       "price": {"min": self.parse_number(item["tick"]), "max": None},
                       "cost": {"min": None, "max": None}, "leverage": {"min": None, "max": None}},
            "created": self.parse8601(item["created_at"]), "info": item,
        })

    def fetch_order_book(self, symbol, limit=None, params=None):
        self.load_markets()
        market = self.market(symbol)
        request = {"symbol": market["id"]}
        if limit is not None:
            request["depth"] = limit
        book = self.request("instruments/{symbol}/book", "public", "GET", self.extend(request, params or {}))
        result = self.parse_order_book(book, market["symbol"], None, "bids", "asks", "price", "qty")
        result["nonce"] = book["seq"]
        return result

    def parse_ticker(self, ticker: dict, market=None) -> dict:
        market = self.safe_market(ticker["symbol"], market)
        return self.safe_ticker({
            "symbol": market["symbol"], "timestamp": None, "datetime": None,
            "high": self.safe_string(ticker, "high_24h"), "low": self.safe_string(ticker, "low_24h"),
            "bid": self.safe_string(ticker, "best_bid"), "ask": self.safe_string(ticker, "best_ask"),
            "open": self.safe_string(ticker, "open_24h"), "last": self.safe_string(ticker, "last_price"),
            "close": self.safe_string(ticker, "last_price"), "change": self.safe_string(ticker, "change_24h"),
            "baseVolume": self.safe_string(ticker, "volume_24h"),
            "quoteVolume": self.safe_string(ticker, "notional_24h"),
            "info": ticker,
        }, market)

    def fetch_ticker(self, symbol, params=None):
        self.load_markets()
        market = self.market(symbol)
        ticker = self.request("instruments/{symbol}/ticker", "public", "GET",
                              self.extend({"symbol": market["id"]}, params or {}))
        return self.parse_ticker(ticker, market)

    def fetch_tickers(self, symbols=None, params=None):
        self.load_markets()
        tickers = self.request("tickers", "public", "GET", params or {})["items"]
        return self.filter_by_array_tickers([self.parse_ticker(ticker) for ticker in tickers], "symbol",
                                            self.market_symbols(symbols))

    def fetch_ohlcv(self, symbol, timeframe="1m", since=None, limit=None, params=None):
        self.load_markets()
        market = self.market(symbol)
        request = {"symbol": market["id"], "interval": self.safe_string(self.timeframes, timeframe, timeframe)}
        if since is not None:
            request["start"] = self.iso8601(since)
        if limit is not None:
            request["limit"] = limit
        candles = self.request("instruments/{symbol}/candles", "public", "GET", self.extend(request, params or {}))
        # A bin without trades has no prices: ccxt's candles are the bins that traded, as most exchanges send.
        return [self.parse_ohlcv(candle, market) for candle in candles["items"] if candle["volume"]]

    def parse_ohlcv(self, ohlcv, market=None) -> list:
        return [self.parse8601(ohlcv["start"]), self.safe_number(ohlcv, "open"), self.safe_number(ohlcv, "high"),
                self.safe_number(ohlcv, "low"), self.safe_number(ohlcv, "close"), self.safe_number(ohlcv, "volume")]

    def fetch_trades(self, symbol, since=None, limit=None, params=None):
        self.load_markets()
        market = self.market(symbol)
        request: dict[str, Any] = {"symbol": market["id"]}
        if since is not None:
            request.update(start=self.iso8601(since), order="asc")
        if limit is not None:
            request["limit"] = limit
        items = self._pages("instruments/{symbol}/trades", "public", request, params or {})
        return self.parse_trades(items, market, since, limit)

    def parse_trade(self, trade: dict, market=None) -> dict:
        market = self.safe_market(self.safe_string(trade, "symbol"), market)
        fee = None
        if "fee" in trade:
            fee = {"cost": self.safe_string(trade, "fee"), "currency": QUOTE}
        timestamp = self.parse8601(trade["created_at"])
        return self.safe_trade({
            "id": self.safe_string(trade, "id"), "order": self.safe_string(trade, "order_id"),
            "timestamp": timestamp, "datetime": self.iso8601(timestamp), "symbol": market["symbol"],
            "type": None, "side": trade["side"], "takerOrMaker": self.safe_string(trade, "role"),
            "price": self.safe_string(trade, "price"), "amount": self.safe_string(trade, "qty"), "cost": None,
            "fee": fee, "info": trade,
        }, market)

    # -- private ---------------------------------------------------------------------------------------------------

    def fetch_balance(self, params=None):
        balances = self.request("balances", "private", "GET", params or {})["items"]
        result: dict[str, Any] = {"info": balances}
        for balance in balances:
            account = self.account()
            account["free"] = balance["available"]
            account["used"] = balance["held"]
            result[balance["asset"]] = account
        return self.safe_balance(result)

    def create_order(self, symbol, type, side, amount, price=None, params=None):
        self.load_markets()
        market = self.market(symbol)
        params = dict(params or {})
        request: dict[str, Any] = {"symbol": market["id"], "side": side, "type": type}
        cost = params.pop("cost", None)
        if cost is not None:
            request["budget"] = self.number_to_string(cost)
        else:
            request["qty"] = int(self.amount_to_precision(market["symbol"], amount))
        if type == "limit":
            request["price"] = self.price_to_precision(market["symbol"], price)
            time_in_force = params.pop("timeInForce", None)
            if time_in_force is not None:
                request["tif"] = time_in_force
            if params.pop("postOnly", False):
                request["post_only"] = True
        client_order_id = params.pop("clientOrderId", None)
        if client_order_id is not None:
            request["client_order_id"] = client_order_id
        order = self.request("orders", "private", "POST", self.extend(request, params))
        return self.parse_order(order, market)

    def create_market_buy_order_with_cost(self, symbol, cost, params=None):
        return self.create_order(symbol, "market", "buy", None, None, self.extend(params or {}, {"cost": cost}))

    def cancel_order(self, id, symbol=None, params=None):
        return self.parse_order(self.request("orders/{order_id}", "private", "DELETE",
                                             self.extend({"order_id": id}, params or {})))

    def fetch_order(self, id, symbol=None, params=None):
        params = dict(params or {})
        client_order_id = params.pop("clientOrderId", None)
        if client_order_id is not None:
            order = self.request("orders/by-client-id/{client_order_id}", "private", "GET",
                                 self.extend({"client_order_id": client_order_id}, params))
        else:
            order = self.request("orders/{order_id}", "private", "GET", self.extend({"order_id": id}, params))
        return self.parse_order(order)

    def fetch_orders(self, symbol=None, since=None, limit=None, params=None):
        return self._orders("all", symbol, since, limit, params)

    def fetch_open_orders(self, symbol=None, since=None, limit=None, params=None):
        return self._orders("open", symbol, since, limit, params)

    def fetch_closed_orders(self, symbol=None, since=None, limit=None, params=None):
        return self._orders("closed", symbol, since, limit, params)

    def _orders(self, status, symbol, since, limit, params):
        self.load_markets()
        market = None if symbol is None else self.market(symbol)
        request: dict[str, Any] = {"status": status}
        if market is not None:
            request["symbol"] = market["id"]
        if limit is not None:
            request["limit"] = limit
        return self.parse_orders(self._pages("orders", "private", request, params or {}), market, since, limit)

    def parse_order(self, order: dict, market=None) -> dict:
        market = self.safe_market(order["symbol"], market)
        fee = {"cost": self.safe_string(order, "fee"), "currency": QUOTE}
        fills = [self.extend(fill, {"id": fill["fill_id"], "order_id": order["id"], "symbol": order["symbol"],
                                    "side": order["side"], "created_at": order["updated_at"]})
                 for fill in order.get("fills", [])]
        timestamp = self.parse8601(order["created_at"])
        return self.safe_order({
            "id": str(order["id"]), "clientOrderId": order["client_order_id"], "timestamp": timestamp,
            "datetime": self.iso8601(timestamp), "lastTradeTimestamp": None,
            "lastUpdateTimestamp": self.parse8601(order["updated_at"]), "symbol": market["symbol"],
            "type": order["type"], "timeInForce": order["tif"], "postOnly": order["post_only"],
            "side": order["side"], "price": self.safe_string(order, "price"),
            "amount": self.safe_string(order, "qty"), "filled": self.safe_string(order, "filled_qty"),
            "remaining": self.safe_string(order, "open_qty"), "cost": self.safe_string(order, "filled_notional"),
            "average": self.safe_string(order, "average_price"), "status": STATUSES[order["status"]],
            "fee": fee, "trades": self.parse_trades(fills, market) if fills else None, "info": order,
        }, market)

    def fetch_my_trades(self, symbol=None, since=None, limit=None, params=None):
        self.load_markets()
        market = None if symbol is None else self.market(symbol)
        request: dict[str, Any] = {}
        if market is not None:
            request["symbol"] = market["id"]
        if limit is not None:
            request["limit"] = limit
        return self.parse_trades(self._pages("fills", "private", request, params or {}), market, since, limit)
