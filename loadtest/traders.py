"""A trader of the benchmarks and load runs: signed order and cancel requests as raw HTTP/1.1 bytes, and the mix of
limit, crossing and market orders it sends while it keeps 12 to 20 orders live."""

import hashlib
import hmac
import random
import time

import msgspec

TICK = 10_000  # 0.01 CNY
MID = 2_000 * TICK  # 20.00 CNY
LIVE_LOW, LIVE_HIGH = 12, 20


class Placed(msgspec.Struct):
    id: int
    status: str


class Problem(msgspec.Struct):
    code: str = ""


PLACED = msgspec.json.Decoder(Placed)
PROBLEM = msgspec.json.Decoder(Problem)


class Trader:
    """One connection's account, its signed requests and its share of the mix."""

    def __init__(self, host: str, key_id: str, secret: str, symbol: str, rng: random.Random) -> None:
        self.host = host.encode()
        self.key = key_id.encode()
        self.mac = hmac.new(secret.encode("ascii"), digestmod=hashlib.sha256)
        self.symbol = symbol
        self.rng = rng
        self.open: list[int] = []

    def request(self, method: bytes, target: bytes, body: bytes = b"") -> bytes:
        # Microseconds: two equal orders in one second are two requests, not a replay.
        timestamp = b"%.6f" % time.time()
        mac = self.mac.copy()
        mac.update(timestamp + method + target + body)
        head = (b"%s %s HTTP/1.1\r\nHost: %s\r\nTOKEX-KEY: %s\r\nTOKEX-TIMESTAMP: %s\r\nTOKEX-SIGNATURE: %s\r\n"
                % (method, target, self.host, self.key, timestamp, mac.hexdigest().encode()))
        if body:
            head += b"Content-Type: application/json\r\nContent-Length: %d\r\n" % len(body)
        return head + b"\r\n" + body

    def order(self, side: str, price: int | None, qty: int) -> bytes:
        if price is None:
            body = b'{"symbol":"%s","side":"%s","type":"market","qty":%d}' % (self.symbol.encode(), side.encode(), qty)
        else:
            whole, fraction = divmod(price, 1_000_000)
            body = b'{"symbol":"%s","side":"%s","type":"limit","price":"%d.%06d","qty":%d}' % (
                self.symbol.encode(), side.encode(), whole, fraction, qty)
        return self.request(b"POST", b"/v1/orders", body)

    def next(self) -> tuple[str, bytes, int | None]:
        """(kind, request, the order id a cancel names)."""
        rng = self.rng
        roll = rng.random()
        if len(self.open) >= LIVE_HIGH:
            roll = 0.6
        elif len(self.open) < LIVE_LOW:
            roll = 0.0
        if 0.55 <= roll < 0.90 and self.open:
            order_id = self.open.pop(rng.randrange(len(self.open)))
            return "cancel", self.request(b"DELETE", b"/v1/orders/%d" % order_id), order_id
        side = "buy" if rng.random() < 0.5 else "sell"
        sign = -1 if side == "buy" else 1
        if roll < 0.90:
            if rng.random() < 0.5:
                if rng.random() < 0.10:
                    return "crossing limit", self.order(side, MID - sign * 3 * TICK, rng.randint(1, 100)), None
                price = MID + sign * (1 + rng.randint(0, 5)) * TICK
            else:
                price = MID + sign * rng.randint(1, 1000) * TICK
            return "limit", self.order(side, price, rng.randint(1, 500)), None
        return "market", self.order(side, None, rng.randint(20, 400)), None

    def learn(self, kind: str, status: int, body: bytes) -> None:
        if status == 201 and kind != "market":
            placed = PLACED.decode(body)
            if placed.status == "open":
                self.open.append(placed.id)
