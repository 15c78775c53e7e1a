"""The whole exchange under random commands, against a real PostgreSQL, every invariant checked after each step.

Each run of the machine gets a database of its own and drives the (async) sequencer from a dedicated event
loop, because Hypothesis state machines are synchronous. After every step: ``invariants.problems`` on what
is committed, no negative balance outside the system accounts, every asset summing to zero over all
accounts, and a small model of what the system accounts must show (cash deposited less withdrawn, tokens
minted less burned, tokens redeemed, the fees of the fills, the downloads each account's dataset grants have
left) and of delivery (quotas granted for the lots redeemed, the tokens charged for inference calls delivered by
the provider, which frees its capacity) and of subscriptions (each period paid or not, as the buyer's cash, the
subscription's status and the engine's clock say, moved forward days at a time). A refused command or a replayed
client order id must leave the engine exactly as it was, and a restart must rebuild it identically.
"""

import asyncio
import hashlib
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from exchange import dataset_files, fees, invariants, route_planner, subscriptions
from exchange.commands import (
    AmendOrder,
    ApproveIssuer,
    Attempt,
    Burn,
    CancelAll,
    CancelOrder,
    CancelSubscription,
    Command,
    CreateAccount,
    Deposit,
    Done,
    Download,
    ListInstrument,
    Mint,
    OrderView,
    PlaceOrder,
    PublishSubscriptionOffer,
    PublishTerms,
    Redeem,
    RegisterProvider,
    Rejection,
    RenewSubscription,
    ReservationView,
    Reserve,
    Result,
    RouteOrder,
    SetInstrumentStatus,
    Settle,
    Subscribe,
    Withdraw,
)
from exchange.ledger import CASH, EXTERNAL, FEES, ISSUANCE, REDEMPTION, SYSTEM_ACCOUNTS
from exchange.packages import period_start
from exchange.records import RoutedOrder
from exchange.sequencer import EPOCH, Sequencer, wall_clock
from matching.types import BUY, FOK, GTC, IOC, SELL, STP_MODES
from tests.support.engine import engine_state

ADMIN, ISSUER, ALICE, BOB = 100, 101, 102, 103
NOBODY = 999
TRADERS = (ISSUER, ALICE, BOB)
COMPUTE, DATASET = "DEEPSEEK-V3", "DS-STEEL-QC"
SYMBOLS = (COMPUTE, DATASET)
STEP = {COMPUTE: 100, DATASET: 1}
"""Micro-yuan per price step: small prices, so fees have fractions of a micro-yuan and rounding shows."""
COMPUTE_CAPACITY, SUPPLY_CAP = 400, 200
TOKENS_PER_LOT = 1_000_000
START_CASH = 2_000_000
DOWNLOADS_PER_TOKEN = 2
OFFER, SUBSCRIPTION_TOKENS, SUBSCRIPTION_PRICE = 1, 40_000, 150_000
"""The issuer's daily subscription offer on COMPUTE (the setup publishes it first, so its id is 1)."""
DAY_US = 86_400 * 1_000_000
FILE = b"steel plant QC images"

accounts = st.sampled_from((ISSUER, ALICE, BOB, ADMIN, NOBODY))
traders = st.sampled_from(TRADERS)
order_accounts = st.sampled_from((*TRADERS, *TRADERS, *TRADERS, ADMIN, NOBODY))
"""Mostly traders; sometimes an admin or an unknown account, which must be refused."""
symbols = st.sampled_from(SYMBOLS)
sides = st.sampled_from((BUY, SELL))
steps = st.integers(90, 110)
qtys = st.integers(1, 25)
stps = st.sampled_from(sorted(STP_MODES))
client_order_ids = st.sampled_from((None, None, "c1", "c2", "c3"))
deals = st.fixed_dictionaries({
    "maker": traders, "taker": st.sampled_from((ALICE, BOB, ISSUER)), "symbol": symbols, "side": sides,
    "step": steps, "qty": st.integers(2, 25),
    "taken": st.integers(1, 30), "how": st.sampled_from(("limit", "market", "budget")),
})


class ExchangeMachine(RuleBasedStateMachine):
    databases = None
    """Set by the test before the machine runs (the ``databases`` fixture): each run creates its own."""

    orders = Bundle("orders")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.pool: asyncpg.Pool | None = None
        self.exchange: Sequencer | None = None
        self.database, dsn = self.run(self.databases.create("tokex_test_sm"))
        self.pool = self.run(self.open_pool(dsn))
        self.ahead = 0
        """Microseconds the engine's clock runs ahead of the wall clock: days pass in a step."""
        self.exchange = self.run(Sequencer.open(self.pool, clock=self.clock))
        # The model: what the system accounts must show.
        self.deposited = len(TRADERS) * START_CASH
        self.minted = {COMPUTE: 100, DATASET: 60}
        self.redeemed = dict.fromkeys(SYMBOLS, 0)
        self.terms_version = 1
        self.downloads_left = dict.fromkeys(TRADERS, 0)
        self.file_id = 0
        self.delivered = 0
        self.subscription_ids: list[int] = []
        self.subscription_fees = 0
        self.subscription_tokens = 0
        """Tokens charged for inference calls (exchange.delivery), all delivered by the one provider."""
        self.commands_since_restart = 0
        self.run(self.setup())

    def clock(self) -> int:
        return wall_clock() + self.ahead

    def now(self) -> datetime:
        return EPOCH + timedelta(microseconds=self.clock())

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    @staticmethod
    async def open_pool(dsn: str) -> asyncpg.Pool:
        # Made inside the loop: a pool binds to the event loop that is current when it is created.
        return await asyncpg.create_pool(dsn, min_size=1, max_size=2)

    async def setup(self) -> None:
        """Accounts, two instruments, and a first round of trades so that every trader holds tokens."""
        commands: list[Command] = [
            CreateAccount("admin", "admin"), CreateAccount("issuer", "issuer"),
            CreateAccount("alice", "trader"), CreateAccount("bob", "trader"),
            ListInstrument(COMPUTE, "compute", tick=STEP[COMPUTE], min_qty=1, max_qty=25, model="deepseek-v3",
                           substitution_group="chat-general", quality=90, tokens_per_lot=1_000_000),
            ListInstrument(DATASET, "dataset", tick=STEP[DATASET], min_qty=2, max_qty=25, maker_fee_bps=25,
                           taker_fee_bps=50, issuer_id=ISSUER, description="Steel plant QC images",
                           license="research only", grants="1,000 records", supply_cap=SUPPLY_CAP),
            ApproveIssuer(ISSUER, COMPUTE, COMPUTE_CAPACITY),
            ApproveIssuer(ISSUER, DATASET, 10 * SUPPLY_CAP),
            Mint(ISSUER, COMPUTE, self.minted[COMPUTE]),
            Mint(ISSUER, DATASET, self.minted[DATASET]),
            RegisterProvider(ISSUER, COMPUTE, "http://127.0.0.1:9/v1", "deepseek-v3", b"sealed"),
            PublishSubscriptionOffer(ISSUER, COMPUTE, SUBSCRIPTION_TOKENS, "day", SUBSCRIPTION_PRICE),
            *(Deposit(account, START_CASH) for account in TRADERS),
        ]
        for symbol in SYMBOLS:
            for buyer in (ALICE, BOB):
                commands.append(PlaceOrder(ISSUER, symbol, SELL, price=100 * STEP[symbol], qty=20))
                commands.append(PlaceOrder(buyer, symbol, BUY, price=100 * STEP[symbol], qty=20))
            commands.append(PlaceOrder(ISSUER, symbol, SELL, price=104 * STEP[symbol], qty=10))
            commands.append(PlaceOrder(ALICE, symbol, SELL, price=106 * STEP[symbol], qty=5))
            commands.append(PlaceOrder(BOB, symbol, BUY, price=96 * STEP[symbol], qty=10))
        commands.append(self.terms())
        results = await asyncio.gather(*(self.exchange.submit(command) for command in commands))
        for command, result in zip(commands, results, strict=True):
            assert not isinstance(result, Rejection), (command, result)
        async with self.pool.acquire() as conn:
            stored = await dataset_files.store(conn, self.exchange.engine.instruments[DATASET].id, "images.tar",
                                               _once(FILE), hashlib.sha256(FILE).digest(), len(FILE), datetime.now(UTC))
        self.file_id = stored.id

    @staticmethod
    def terms() -> PublishTerms:
        return PublishTerms(ISSUER, DATASET, ("research",), False, None, None, DOWNLOADS_PER_TOKEN, "Research only.")

    def teardown(self) -> None:
        try:
            if self.exchange is not None:
                self.run(self.exchange.stop())
            if self.pool is not None:
                self.run(self.pool.close())
            self.run(self.databases.drop(self.database))
        finally:
            self.loop.close()

    def submit(self, command: Command) -> Result:
        """Apply ``command``; a refusal must leave the engine exactly as it was."""
        before = engine_state(self.exchange.engine)
        self.commands_since_restart += 1
        result = self.run(self.exchange.submit(command))
        if isinstance(result, Rejection):
            assert engine_state(self.exchange.engine) == before, (command, result)
        return result

    def symbol_of(self, order_id: int) -> str | None:
        engine = self.exchange.engine
        order = engine.orders.get(order_id)
        return None if order is None else engine.instruments_by_id[order.instrument_id].symbol

    # Cash and tokens

    @rule(account=accounts, amount=st.integers(0, 600_000), withdraw=st.booleans())
    def cash(self, account: int, amount: int, withdraw: bool) -> None:
        if withdraw:
            if isinstance(self.submit(Withdraw(account, amount)), Done):
                self.deposited -= amount
        elif isinstance(self.submit(Deposit(account, amount)), Done):
            self.deposited += amount

    @rule(account=st.sampled_from((ISSUER, ISSUER, ALICE, BOB)), symbol=symbols, qty=st.integers(1, 120),
          action=st.sampled_from(("mint", "burn", "redeem")))
    def tokens(self, account: int, symbol: str, qty: int, action: str) -> None:
        if action == "mint":
            result = self.submit(Mint(account, symbol, qty))
            if isinstance(result, Done):
                self.minted[symbol] += qty
            else:
                assert result.code in {"over_capacity", "over_supply_cap", "not_approved", "not_permitted"}, result
        elif action == "burn":
            if isinstance(self.submit(Burn(account, symbol, qty)), Done):
                self.minted[symbol] -= qty
        else:
            version = self.terms_version if symbol == DATASET else None
            if isinstance(self.submit(Redeem(account, symbol, qty, terms_version=version)), Done):
                self.redeemed[symbol] += qty
                if symbol == DATASET:
                    self.downloads_left[account] += qty * DOWNLOADS_PER_TOKEN

    # Datasets

    @rule(stale=st.booleans())
    def publish_terms_then_redeem(self, stale: bool) -> None:
        """A new version of the terms; a redemption that accepts the one before is refused."""
        assert self.submit(self.terms()) == Done(self.terms_version + 1)
        self.terms_version += 1
        if stale:
            result = self.submit(Redeem(ALICE, DATASET, 1, terms_version=self.terms_version - 1))
            assert result.code in {"terms_changed", "insufficient_tokens"}, result

    @rule(account=traders, qty=st.integers(0, 2), downloads=st.integers(1, 3))
    def redeem_then_download(self, account: int, qty: int, downloads: int) -> None:
        """Redeem a few dataset tokens (or none), then download: each download spends one the grants hold."""
        if qty and isinstance(self.submit(Redeem(account, DATASET, qty, terms_version=self.terms_version)), Done):
            self.redeemed[DATASET] += qty
            self.downloads_left[account] += qty * DOWNLOADS_PER_TOKEN
        for _ in range(downloads):
            result = self.submit(Download(account, DATASET, self.file_id, len(FILE)))
            if self.downloads_left[account]:
                assert isinstance(result, Done), result
                self.downloads_left[account] -= 1
            else:
                assert result.code == "no_access", result

    # Delivery: an inference call reserves from the quota redeemed lots grant, then settles (or stays open)

    @rule(account=order_accounts, tokens=st.integers(1, 3 * TOKENS_PER_LOT),
          outcome=st.sampled_from(("ok", "ok", "failed", "open")), prompt=st.integers(0, 2 * TOKENS_PER_LOT),
          completion=st.integers(0, 2 * TOKENS_PER_LOT))
    def call(self, account: int, tokens: int, outcome: str, prompt: int, completion: int) -> None:
        engine = self.exchange.engine
        instrument = engine.instruments[COMPUTE]
        free = engine.quotas.largest(account, instrument.id, self.now())
        held = self.submit(Reserve(account, COMPUTE, tokens))
        if not isinstance(held, ReservationView):
            assert held.code in {"quota_exceeded", "not_permitted", "unknown_account"}, held
            assert held.code != "quota_exceeded" or free < tokens
            return
        assert held.tokens == tokens and [p.provider_id for p in held.providers] == [1]
        if outcome == "open":
            return
        self.submit(Settle(held.id, [Attempt(1, outcome, prompt, completion, 10, 20)]))
        if outcome == "ok":
            self.delivered += min(tokens, prompt + completion)

    # Subscriptions: the issuer's daily offer; days pass and each due period is paid, or not, and lapses

    def paid(self) -> None:
        self.subscription_fees += fees.fee_on(SUBSCRIPTION_PRICE, fees.rate_ppm(20, 100))
        self.subscription_tokens += SUBSCRIPTION_TOKENS

    @rule(account=st.sampled_from((ISSUER, ALICE, BOB, NOBODY)))
    def subscribe(self, account: int) -> None:
        cash = self.exchange.engine.ledger.available(account, CASH)
        result = self.submit(Subscribe(account, OFFER))
        if isinstance(result, Done):
            assert cash >= SUBSCRIPTION_PRICE
            self.subscription_ids.append(result.id)
            self.paid()
        else:
            assert result.code in {"not_permitted", "unknown_account"} or (
                result.code == "insufficient_funds" and cash < SUBSCRIPTION_PRICE), result

    @precondition(lambda self: self.subscription_ids)
    @rule(pick=st.integers(0, 100), account=traders)
    def cancel_subscription(self, pick: int, account: int) -> None:
        subscription_id = self.subscription_ids[pick % len(self.subscription_ids)]
        running = self.exchange.engine.subscriptions.subscriptions.get(subscription_id)
        result = self.submit(CancelSubscription(account, subscription_id))
        if running is not None and running.account_id == account:
            assert result == Done(subscription_id) and running.status == "cancelling"
        else:
            assert result.code == "unknown_subscription", result

    @precondition(lambda self: self.subscription_ids)
    @rule(days=st.integers(1, 2))
    def days_pass(self, days: int) -> None:
        """Move the engine's clock ``days`` on and renew what is due, as the period scheduler does."""
        self.ahead += days * DAY_US
        engine = self.exchange.engine
        for period, subscription_id in subscriptions.due(engine, self.now()):
            subscription = engine.subscriptions.subscriptions[subscription_id]
            cash = engine.ledger.available(subscription.account_id, CASH)
            status = subscription.status
            ends = period_start(subscription.start_at, "day", period + 1)
            assert self.submit(RenewSubscription(subscription_id, period)) == Done(period)
            paid = cash - engine.ledger.available(subscription.account_id, CASH)
            if status == "cancelling":
                assert paid == 0 and subscription_id not in engine.subscriptions.subscriptions
            elif paid:
                assert paid == SUBSCRIPTION_PRICE and ends > self.now()
                self.paid()
            else:
                assert cash < SUBSCRIPTION_PRICE or ends <= self.now()

    # Orders

    def place(self, command: PlaceOrder):
        engine = self.exchange.engine
        original = engine.client_orders.get((command.account_id, command.client_order_id))
        if original is not None:
            # A replay answers the original order, whatever else it says, and changes nothing.
            before = engine_state(engine)
            assert self.submit(command) == engine.view(original)
            assert engine_state(engine) == before
            return multiple()
        result = self.submit(command)
        if command.account_id not in TRADERS:
            assert result.code in {"not_permitted", "unknown_account"}, result
        if isinstance(result, Rejection):
            return multiple()
        assert isinstance(result, OrderView), result
        for fill in result.fills:
            if command.type == "limit":
                assert fill.price <= command.price if command.side == BUY else fill.price >= command.price
            assert fill.fee >= 0 and fill.role == "taker"
        assert result.filled_qty == sum(fill.qty for fill in result.fills)
        assert result.filled_notional == sum(fill.price * fill.qty for fill in result.fills)
        if command.budget is not None:
            assert result.filled_notional + result.fee <= command.budget, result
        return multiple(result.id)

    @rule(target=orders, account=order_accounts, symbol=symbols, step=st.integers(95, 110), qty=qtys, stp=stps,
          client=client_order_ids)
    def buy_limit(self, account, symbol, step, qty, stp, client):
        return self.place(PlaceOrder(account, symbol, BUY, price=step * STEP[symbol], qty=qty, stp=stp,
                                     client_order_id=client))

    @rule(target=orders, account=order_accounts, symbol=symbols, step=st.integers(90, 105), qty=qtys, stp=stps,
          client=client_order_ids)
    def sell_limit(self, account, symbol, step, qty, stp, client):
        return self.place(PlaceOrder(account, symbol, SELL, price=step * STEP[symbol], qty=qty, stp=stp,
                                     client_order_id=client))

    @rule(target=orders, account=traders, symbol=symbols, side=sides, step=steps, qty=qtys,
          tif=st.sampled_from((IOC, FOK, GTC)), stp=stps)
    def limit_now_or_post_only(self, account, symbol, side, step, qty, tif, stp):
        """IOC and FOK orders; a GTC here is post-only."""
        return self.place(PlaceOrder(account, symbol, side, price=step * STEP[symbol], qty=qty, tif=tif, stp=stp,
                                     post_only=tif == GTC))

    @rule(target=orders, account=traders, symbol=symbols, side=sides, qty=qtys, stp=stps,
          budget=st.none() | st.integers(1, 300_000))
    def market(self, account, symbol, side, qty, stp, budget):
        """By quantity, or a buy by budget (``decrement`` is refused for those)."""
        if budget is None:
            return self.place(PlaceOrder(account, symbol, side, "market", qty=qty, stp=stp))
        return self.place(PlaceOrder(account, symbol, BUY, "market", budget=budget, stp=stp))

    @rule(deal=deals)
    def rest_then_take(self, deal: dict) -> None:
        """Rest an order, then take from it: trades in most runs, partial fills, and sometimes self-trades.

        One argument and no target make this Hypothesis's simplest rule, the one its simplest runs repeat.
        """
        symbol, side, price = deal["symbol"], deal["side"], deal["step"] * STEP[deal["symbol"]]
        self.place(PlaceOrder(deal["maker"], symbol, side, price=price, qty=deal["qty"]))
        taker, taken, other = deal["taker"], max(deal["taken"], 2), SELL if side == BUY else BUY
        if deal["how"] == "limit":
            self.place(PlaceOrder(taker, symbol, other, price=price, qty=taken))
        elif deal["how"] == "market" or other == SELL:
            self.place(PlaceOrder(taker, symbol, other, "market", qty=taken))
        else:
            self.place(PlaceOrder(taker, symbol, BUY, "market", budget=taken * price))

    @rule(target=orders, account=order_accounts, side=sides, qty=qtys, mode=st.sampled_from(route_planner.MODES),
          step=st.none() | steps, budget=st.none() | st.integers(1, 300_000), rest=st.booleans())
    def route(self, account, side, qty, mode, step, budget, rest):
        """A routed order over the one compute book of the group; its remainder may rest."""
        price = None if step is None else step * STEP[COMPUTE]
        result = self.submit(RouteOrder(account, "chat-general", side, qty, mode, price,
                                        budget if side == BUY else None, rest))
        if not isinstance(result, RoutedOrder):
            return multiple()
        assert result.filled_qty + result.remainder == qty
        for child in result.children:
            for fill in child.fills:
                assert price is None or (fill.price <= price if side == BUY else fill.price >= price)
        if budget is not None and side == BUY:
            resting = self.exchange.engine.orders.get(result.resting_order_id)
            assert result.filled_notional + result.fee + (resting.held if resting else 0) <= budget, result
        return multiple(*(() if result.resting_order_id is None else (result.resting_order_id,)))

    @rule(order=orders, owner=st.booleans(), account=traders)
    def cancel(self, order: int, owner: bool, account: int) -> None:
        live = self.exchange.engine.orders.get(order)
        if owner and live is not None:
            account = live.account_id
        result = self.submit(CancelOrder(account, order))
        if isinstance(result, OrderView):
            assert (result.status, result.open_qty) == ("cancelled", 0)
            assert live is not None and live.account_id == account
        else:
            assert result.code == "unknown_order"

    @rule(account=traders, symbol=symbols)
    def cancel_all(self, account: int, symbol: str) -> None:
        self.submit(CancelAll(account, symbol))
        engine = self.exchange.engine
        instrument_id = engine.instruments[symbol].id
        assert not [o for o in engine.orders.values()
                    if o.account_id == account and o.instrument_id == instrument_id and o.status == "open"]

    @rule(order=orders, step=st.none() | steps, qty=st.none() | st.integers(1, 30))
    def amend(self, order: int, step: int | None, qty: int | None) -> None:
        live = self.exchange.engine.orders.get(order)
        account = ALICE if live is None else live.account_id
        price = None if step is None else step * STEP[self.symbol_of(order) or COMPUTE]
        result = self.submit(AmendOrder(account, order, price=price, qty=qty))
        if isinstance(result, OrderView):
            for fill in result.fills:
                assert fill.price <= result.price if result.side == BUY else fill.price >= result.price

    # Hypothesis favours rules with few arguments; these two would otherwise crowd out the trading.
    @precondition(lambda self: self.commands_since_restart % 5 == 4)
    @rule(symbol=symbols, order=orders, step=steps)
    def halt_then_resume(self, symbol: str, order: int, step: int) -> None:
        """While halted, orders and amends are refused and cancels work; then trading resumes."""
        assert self.submit(SetInstrumentStatus(symbol, "halted")) == Done(self.exchange.engine.instruments[symbol].id)
        result = self.submit(PlaceOrder(BOB, symbol, BUY, price=step * STEP[symbol], qty=2))
        assert result.code == "instrument_halted"
        live = self.exchange.engine.orders.get(order)
        if live is not None and live.status == "open" and self.symbol_of(order) == symbol:
            assert self.submit(AmendOrder(live.account_id, order, qty=live.qty + 1)).code == "instrument_halted"
            assert self.submit(CancelOrder(live.account_id, order)).status == "cancelled"
        self.submit(SetInstrumentStatus(symbol, "trading"))

    @precondition(lambda self: self.commands_since_restart >= 10)
    @rule()
    def restart(self) -> None:
        """Stop, and start again from the database: the engine must come back identical."""
        before = engine_state(self.exchange.engine)
        self.run(self.exchange.stop())
        self.exchange = None
        self.exchange = self.run(Sequencer.open(self.pool, clock=self.clock))
        self.commands_since_restart = 0
        assert engine_state(self.exchange.engine) == before

    # Checks after every step

    @invariant()
    def invariants_hold(self) -> None:
        async def check() -> tuple[list[str], int]:
            async with self.pool.acquire() as conn:
                found = await invariants.problems(conn, self.exchange.engine)
                fees = await conn.fetchval("SELECT coalesce(sum(maker_fee + taker_fee), 0) FROM fill")
            return found, fees

        found, fees = self.run(check())
        assert found == []
        engine = self.exchange.engine
        totals: dict[str, int] = {}
        for (account, asset), (available, held) in engine.ledger.balances.items():
            if account not in SYSTEM_ACCOUNTS:
                assert available >= 0 and held >= 0, (account, asset, available, held)
            totals[asset] = totals.get(asset, 0) + available + held
        assert all(total == 0 for total in totals.values()), totals
        assert engine.ledger.available(EXTERNAL, CASH) == -self.deposited
        assert engine.ledger.available(FEES, CASH) == fees + self.subscription_fees
        for symbol in SYMBOLS:
            assert engine.ledger.available(ISSUANCE, symbol) == -self.minted[symbol]
            assert engine.ledger.available(REDEMPTION, symbol) == self.redeemed[symbol]
            assert engine.instruments[symbol].issued == self.minted[symbol]
        assert self.minted[COMPUTE] - self.delivered // TOKENS_PER_LOT <= COMPUTE_CAPACITY
        assert self.minted[DATASET] <= SUPPLY_CAP
        quotas = engine.quotas.rows.values()
        assert sum(q.granted for q in quotas) == self.redeemed[COMPUTE] * TOKENS_PER_LOT + self.subscription_tokens
        assert sum(q.used for q in quotas) == engine.delivery.providers[1].delivered == self.delivered
        assert all(q.free >= 0 for q in quotas)


async def _once(data: bytes):
    yield data


# A fuzzer: 40 runs of 40 random commands, each committed to PostgreSQL; the engine alone is tested in memory by
# test_engine_commands.py in the quick loop.
@pytest.mark.slow
def test_the_exchange_keeps_its_invariants_under_random_commands(databases) -> None:
    ExchangeMachine.databases = databases
    run_state_machine_as_test(ExchangeMachine, settings=settings(
        max_examples=40, stateful_step_count=40, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    ))
