"""The exchange's state machine: apply one command at a time, in memory, and record what to commit.

Every command has one handler: a method here for accounts, instruments, cash and tokens, and the client request
ids that make a request answer the same when sent again; a function of the module of its concept for the rest
(orders in ``exchange.orders``, then packages, datasets, subscriptions and delivery). A refusal is a
``Rejection`` value and changes nothing.

Effects accumulate in the settlement's ledger and ``Effects`` until the sequencer takes them with ``take_effects`` and
commits them in one transaction. The engine never does I/O and never reads the clock: the caller passes
``ts`` (microseconds since the epoch) and ``at`` (the same instant as a datetime, for the rows).
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import ClassVar

from exchange import datasets, delivery, orders, packages, subscriptions
from exchange.checks import MAX_BIGINT, account_and_instrument, positive_int, storable, trading_account
from exchange.commands import (
    AmendOrder,
    ApproveIssuer,
    Burn,
    CancelAll,
    CancelOrder,
    CancelSubscription,
    CashMovement,
    Command,
    CreateAccount,
    CreatePackage,
    Deposit,
    Done,
    Download,
    ExpireReservations,
    ListInstrument,
    Mint,
    PlaceOrder,
    PublishSubscriptionOffer,
    PublishTerms,
    Redeem,
    RegisterProvider,
    Rejection,
    RenewSubscription,
    Reserve,
    Result,
    RouteOrder,
    RunPackage,
    SetInstrumentStatus,
    SetPackageStatus,
    Settle,
    Subscribe,
    TokenMovement,
    Withdraw,
    WithdrawSubscriptionOffer,
    decode_result,
    encode_result,
)
from exchange.ledger import AVAILABLE, CASH, EXTERNAL, ISSUANCE, REDEMPTION, SYSTEM_ACCOUNTS
from exchange.quotas import Quotas
from exchange.records import KINDS, ROLES, STATUSES, Account, Approval, Instrument, OrderFill, OrderView, Package
from exchange.rejections import WITHDRAWAL_NOT_COVERED, reject
from exchange.replay import KEEP_ROWS_SECONDS, RecentRequests
from exchange.settlement import Effects, Ids, Settlement
from matching.book import OrderBook

ClientRequest = Deposit | Withdraw | Mint | Burn | Redeem | CreatePackage | Subscribe
CLIENT_REQUEST_KINDS: dict[type, str] = {Deposit: "deposit", Withdraw: "withdrawal", Mint: "mint", Burn: "burn",
                                         Redeem: "redemption", CreatePackage: "package", Subscribe: "subscription"}
"""The kinds a ``client_request_id`` is unique within, per account (the account whose balance moves)."""


def answered(act: Callable[..., Result | str]) -> Callable[..., Result]:
    """The handler of a command that ``act`` (a function of another exchange module, ``act(engine, cmd, at)``)
    carries out, answering a rejection code or a result."""

    def handler(engine: "Engine", cmd: Command, ts: int, at: datetime) -> Result:
        outcome = act(engine, cmd, at)
        return reject(outcome) if isinstance(outcome, str) else outcome

    return handler


class Engine:
    """All accounts, instruments, open orders and balances, changed only through ``apply``."""

    def __init__(self, ids: Ids | None = None) -> None:
        self.ids = ids or Ids()
        self.settlement = Settlement(self.ids)
        # The settlement's own objects, under the names the handlers and readers use (never replaced).
        self.ledger = self.settlement.ledger
        self.volume = self.settlement.volume
        self.orders = self.settlement.orders
        """Open orders, plus those touched since the last ``take_effects``."""
        self.open_by_account = self.settlement.open_by_account
        self.accounts: dict[int, Account] = {}
        self.account_names: set[str] = set()
        self.instruments: dict[str, Instrument] = {}
        self.instruments_by_id: dict[int, Instrument] = {}
        self.approvals: dict[tuple[int, int], Approval] = {}
        self.client_orders: dict[tuple[int, str], int] = {}
        self.routed_client_orders: dict[tuple[int, str], int] = {}
        self.client_requests: dict[tuple[int, str, str], int] = {}
        """(account, kind, client_request_id) -> what that request made: an entry, redemption or package id."""
        self.requests = RecentRequests()
        self.packages: dict[int, Package] = {}
        self.datasets = datasets.Datasets()
        self.subscriptions = subscriptions.Subscriptions()
        self.quotas = Quotas(self.settlement)
        self.delivery = delivery.Delivery()

    # Entry point

    def apply(self, command: Command, ts: int, at: datetime, request: bytes | None = None,
              retry: bool = False) -> Result:
        """Apply ``command`` at time ``ts`` (microseconds) / ``at``; return its result.

        ``request`` is the digest of the signed request that carries the command (``exchange.replay``): a
        request applied before is refused with ``replayed_request``, unless its client id names what it did
        the first time, which is then the answer. Every request applied counts, refused ones too: a refused
        withdrawal sent again after a deposit must not run then. A ``retry`` (a gateway sending the command again
        because it lost the answer) of a request applied before gets that request's original result."""
        handler = self._handlers.get(type(command))
        if handler is None:
            raise TypeError(f"no handler for {type(command).__name__}")
        if request is None:
            return handler(self, command, ts, at)
        if request in self.requests:
            original = self.requests.result(request) if retry else None
            if original is not None:
                return decode_result(original)
            if self._original(command) is None:
                return reject("replayed_request")
            return handler(self, command, ts, at)
        result = handler(self, command, ts, at)
        encoded = encode_result(result)
        if self.requests.add(request, ts, encoded):
            self.effects.forget_requests_before = at - timedelta(seconds=KEEP_ROWS_SECONDS)
        self.effects.requests.append((request, at, encoded))
        return result

    def _original(self, command: Command) -> int | None:
        """What the client id of ``command`` already names, if it carries one that does."""
        kind = type(command)
        if kind is PlaceOrder or kind is RouteOrder:
            return orders.named(self, command)
        client_kind = CLIENT_REQUEST_KINDS.get(kind)
        client_id = getattr(command, "client_request_id", None)
        if client_kind is None or client_id is None:
            return None
        return self.client_requests.get((command.account_id, client_kind, client_id))

    def _repeat(self, cmd: ClientRequest) -> Done | Rejection | None:
        """The answer when ``cmd``'s client request id already names what it made; None when it is new (or not
        given), and nothing has been done yet."""
        if cmd.client_request_id is None:
            return None
        if not storable(cmd.client_request_id):
            return reject("invalid_text")
        made = self.client_requests.get((cmd.account_id, CLIENT_REQUEST_KINDS[type(cmd)], cmd.client_request_id))
        return None if made is None else Done(made)

    def _once(self, cmd: ClientRequest, act: Callable[..., Result | str], at: datetime) -> Result:
        """Carry out ``cmd`` with ``act`` (``act(engine, cmd, at)``, a function of another exchange module) unless its
        client request id already names what it made; remember what it makes."""
        repeat = self._repeat(cmd)
        if repeat is not None:
            return repeat
        outcome = act(self, cmd, at)
        if isinstance(outcome, str):
            return reject(outcome)
        self._remember(cmd, outcome.id, at)
        return outcome

    def _remember(self, cmd: ClientRequest, result_id: int, at: datetime) -> None:
        """Record what ``cmd`` made under its client request id, if it has one."""
        if cmd.client_request_id is not None:
            kind = CLIENT_REQUEST_KINDS[type(cmd)]
            self.client_requests[(cmd.account_id, kind, cmd.client_request_id)] = result_id
            self.effects.client_requests.append((cmd.account_id, kind, cmd.client_request_id, result_id, at))

    @property
    def effects(self) -> Effects:
        """The rows to commit so far, kept by the settlement."""
        return self.settlement.effects

    def take_effects(self) -> Effects:
        """Everything to commit since the last call; closed orders are forgotten from memory."""
        return self.settlement.take_effects()

    # Accounts, instruments, issuers

    def _create_account(self, cmd: CreateAccount, ts: int, at: datetime) -> Result:
        if cmd.role not in ROLES:
            return reject("invalid_role")
        if not storable(cmd.name):
            return reject("invalid_text")
        if cmd.name in self.account_names or cmd.name in SYSTEM_ACCOUNTS.values():
            return reject("name_taken")
        account = Account(self.ids.account, cmd.name, cmd.role, at)
        self.ids.account += 1
        self.add_account(account)
        self.effects.accounts.append((account.id, account.name, account.role, at))
        return Done(account.id)

    def add_account(self, account: Account) -> None:
        self.accounts[account.id] = account
        self.account_names.add(account.name)

    def _list_instrument(self, cmd: ListInstrument, ts: int, at: datetime) -> Result:
        if cmd.symbol in self.instruments:
            return reject("symbol_taken")
        if not self._valid_listing(cmd):
            return reject("invalid_instrument")
        instrument = Instrument(
            self.ids.instrument, cmd.symbol, cmd.kind, "trading", cmd.tick, cmd.min_qty, cmd.max_qty,
            cmd.maker_fee_bps, cmd.taker_fee_bps, cmd.model, cmd.substitution_group, cmd.quality,
            cmd.tokens_per_lot, cmd.issuer_id, cmd.description, cmd.license, cmd.grants, cmd.supply_cap, 0, at,
        )
        self.ids.instrument += 1
        self.add_instrument(instrument, OrderBook(instrument.tick))
        self.effects.new_instruments.append(instrument)
        self.effects.instruments[instrument.id] = instrument
        return Done(instrument.id)

    def _valid_listing(self, cmd: ListInstrument) -> bool:
        if not (cmd.symbol and cmd.symbol.isascii() and cmd.symbol != CASH and len(cmd.symbol) <= 32):
            return False
        if not storable(cmd.symbol, cmd.model, cmd.substitution_group, cmd.description, cmd.license, cmd.grants):
            return False
        if cmd.kind not in KINDS or not positive_int(cmd.tick):
            return False
        if not (positive_int(cmd.min_qty) and positive_int(cmd.max_qty) and cmd.min_qty <= cmd.max_qty):
            return False
        if not all(type(b) is int and 0 <= b <= 10_000 for b in (cmd.maker_fee_bps, cmd.taker_fee_bps)):
            return False
        if cmd.kind == "compute":
            return bool(cmd.model and cmd.substitution_group and type(cmd.quality) is int
                        and 0 <= cmd.quality <= 100 and positive_int(cmd.tokens_per_lot))
        issuer = self.accounts.get(cmd.issuer_id) if type(cmd.issuer_id) is int else None
        return issuer is not None and issuer.role == "issuer" and positive_int(cmd.supply_cap)

    def add_instrument(self, instrument: Instrument, book: OrderBook) -> None:
        instrument.book = book
        self.instruments[instrument.symbol] = instrument
        self.instruments_by_id[instrument.id] = instrument

    def _set_instrument_status(self, cmd: SetInstrumentStatus, ts: int, at: datetime) -> Result:
        instrument = self.instruments.get(cmd.symbol)
        if instrument is None:
            return reject("unknown_instrument")
        if cmd.status not in STATUSES:
            return reject("invalid_status")
        instrument.status = cmd.status
        self.effects.statuses[instrument.id] = instrument
        return Done(instrument.id)

    def _approve_issuer(self, cmd: ApproveIssuer, ts: int, at: datetime) -> Result:
        found = account_and_instrument(self.accounts, self.instruments, cmd.account_id, cmd.symbol)
        if isinstance(found, str):
            return reject(found)
        account, instrument = found
        if account.role != "issuer" or (instrument.kind == "dataset" and instrument.issuer_id != account.id):
            return reject("not_permitted")
        if type(cmd.capacity) is not int or not 0 <= cmd.capacity <= MAX_BIGINT:
            return reject("invalid_qty")
        key = (account.id, instrument.id)
        approval = self.approvals.get(key)
        if approval is None:
            approval = self.approvals[key] = Approval(account.id, instrument.id, cmd.capacity, 0, at)
        elif cmd.capacity < delivery.outstanding(self, approval):
            return reject("capacity_below_issued")
        approval.capacity = cmd.capacity
        approval.approved_at = at
        self.effects.approvals[key] = approval
        return Done(account.id)

    # Cash and tokens

    def _deposit(self, cmd: Deposit, ts: int, at: datetime) -> Result:
        """Credit cash; the answer names the journal entry (as does a repeat of its client request id)."""
        early = self._cash_answer(cmd)
        if early is not None:
            return early
        # The external account is minus all cash ever deposited: it bounds every other balance.
        if self.ledger.available(EXTERNAL, CASH) - cmd.amount < -MAX_BIGINT:
            return reject("amount_too_large")
        entry_id = self.ledger.post("deposit", at, [(EXTERNAL, CASH, AVAILABLE, -cmd.amount),
                                                    (cmd.account_id, CASH, AVAILABLE, cmd.amount)])
        self._remember(cmd, entry_id, at)
        return Done(entry_id)

    def _withdraw(self, cmd: Withdraw, ts: int, at: datetime) -> Result:
        """Debit cash; the answer names the journal entry (as does a repeat of its client request id)."""
        early = self._cash_answer(cmd)
        if early is not None:
            return early
        if self.ledger.available(cmd.account_id, CASH) < cmd.amount:
            return Rejection("insufficient_funds", WITHDRAWAL_NOT_COVERED)
        entry_id = self.ledger.post("withdrawal", at, [(cmd.account_id, CASH, AVAILABLE, -cmd.amount),
                                                       (EXTERNAL, CASH, AVAILABLE, cmd.amount)])
        self._remember(cmd, entry_id, at)
        return Done(entry_id)

    def _cash_answer(self, cmd: CashMovement) -> Result | None:
        """The answer of a deposit or withdrawal that moves nothing: a refusal, or the repeat of an earlier request."""
        if cmd.account_id not in self.accounts:
            return reject("unknown_account")
        repeat = self._repeat(cmd)
        if repeat is not None:
            return repeat
        if not positive_int(cmd.amount):
            return reject("invalid_amount")
        return None

    def _token_command(self, cmd: TokenMovement) -> tuple[Account, Instrument] | Rejection:
        found = account_and_instrument(self.accounts, self.instruments, cmd.account_id, cmd.symbol)
        if isinstance(found, str):
            return reject(found)
        if not positive_int(cmd.qty):
            return reject("invalid_qty")
        return found

    def _approved(self, cmd: Mint | Burn) -> tuple[Instrument, Approval] | Result:
        """The instrument and the issuer's approval for it, when the command's account may mint or burn it; else
        the command's answer: a refusal, or the repeat of an earlier request."""
        found = self._token_command(cmd)
        if isinstance(found, Rejection):
            return found
        account, instrument = found
        if account.role != "issuer":
            return reject("not_permitted")
        approval = self.approvals.get((account.id, instrument.id))
        if approval is None:
            return reject("not_approved")
        repeat = self._repeat(cmd)
        if repeat is not None:
            return repeat
        return instrument, approval

    def _mint(self, cmd: Mint, ts: int, at: datetime) -> Result:
        """Mint lots; the answer names the journal entry (as does a repeat of its client request id)."""
        found = self._approved(cmd)
        if not isinstance(found, tuple):
            return found
        instrument, approval = found
        if delivery.outstanding(self, approval) + cmd.qty > approval.capacity:
            return reject("over_capacity")
        if instrument.supply_cap is not None and instrument.issued + cmd.qty > instrument.supply_cap:
            return reject("over_supply_cap")
        entry_id = self._issue(instrument, approval, cmd.qty, at)
        self._remember(cmd, entry_id, at)
        return Done(entry_id)

    def _burn(self, cmd: Burn, ts: int, at: datetime) -> Result:
        """Burn lots; the answer names the journal entry (as does a repeat of its client request id)."""
        found = self._approved(cmd)
        if not isinstance(found, tuple):
            return found
        instrument, approval = found
        if self.ledger.available(cmd.account_id, instrument.symbol) < cmd.qty or approval.issued < cmd.qty:
            return reject("insufficient_tokens")
        entry_id = self._issue(instrument, approval, -cmd.qty, at)
        self._remember(cmd, entry_id, at)
        return Done(entry_id)

    def _issue(self, instrument: Instrument, approval: Approval, qty: int, at: datetime) -> int:
        """Mint ``qty`` lots into the issuer's holdings, or burn them when negative; return the entry's id."""
        approval.issued += qty
        instrument.issued += qty
        self.effects.approvals[(approval.account_id, instrument.id)] = approval
        return self.ledger.post("mint" if qty > 0 else "burn", at, [
            (ISSUANCE, instrument.symbol, AVAILABLE, -qty),
            (approval.account_id, instrument.symbol, AVAILABLE, qty),
        ])

    def _redeem(self, cmd: Redeem, ts: int, at: datetime) -> Result:
        found = self._token_command(cmd)
        if isinstance(found, Rejection):
            return found
        repeat = self._repeat(cmd)
        if repeat is not None:
            return repeat
        account, instrument = found
        if self.ledger.available(account.id, instrument.symbol) < cmd.qty:
            return reject("insufficient_tokens")
        refusal = (delivery.redemption_refusal(instrument, cmd.qty)
                   or datasets.redemption_refusal(self, cmd, instrument, at))
        if refusal is not None:
            return reject(refusal)
        redemption_id = self.ids.redemption
        self.ids.redemption += 1
        self.ledger.post("redemption", at, [(account.id, instrument.symbol, AVAILABLE, -cmd.qty),
                                            (REDEMPTION, instrument.symbol, AVAILABLE, cmd.qty)])
        self.effects.redemptions.append((redemption_id, instrument.id, account.id, cmd.qty, at))
        if instrument.kind == "dataset":
            datasets.grant(self, redemption_id, account.id, instrument, cmd.qty, at)
        delivery.redeemed(self, redemption_id, account.id, instrument, cmd.qty, at)
        self._remember(cmd, redemption_id, at)
        return Done(redemption_id)

    # Packages (exchange.packages)

    def _create_package(self, cmd: CreatePackage, ts: int, at: datetime) -> Result:
        account = trading_account(self.accounts, cmd.account_id)
        if isinstance(account, Rejection):
            return account
        return self._once(cmd, packages.create, at)

    def _run_package(self, cmd: RunPackage, ts: int, at: datetime) -> Result:
        outcome = packages.run(self, cmd, ts, at)
        return reject(outcome) if isinstance(outcome, str) else outcome

    # Delivery: providers, reservations and settlements of inference calls (exchange.delivery)

    def _expire_reservations(self, cmd: ExpireReservations, ts: int, at: datetime) -> Result:
        return delivery.expire(self, cmd, at)

    # Subscriptions (exchange.subscriptions)

    def _subscribe(self, cmd: Subscribe, ts: int, at: datetime) -> Result:
        if cmd.account_id not in self.accounts:
            return reject("unknown_account")
        return self._once(cmd, subscriptions.subscribe, at)

    # Views

    def view(self, order_id: int, fills: list[OrderFill] | None = None) -> OrderView | Done:
        """The order as it stands, or ``Done(order_id)`` when it is no longer in memory (look it up)."""
        return orders.view(self, order_id, fills)

    _handlers: ClassVar[dict[type, Callable[..., Result]]] = {
        CreateAccount: _create_account,
        ListInstrument: _list_instrument,
        SetInstrumentStatus: _set_instrument_status,
        ApproveIssuer: _approve_issuer,
        Deposit: _deposit,
        Withdraw: _withdraw,
        Mint: _mint,
        Burn: _burn,
        Redeem: _redeem,
        PlaceOrder: orders.place,
        CancelOrder: orders.cancel,
        CancelAll: orders.cancel_all,
        AmendOrder: orders.amend,
        RouteOrder: orders.route,
        CreatePackage: _create_package,
        SetPackageStatus: answered(packages.set_status),
        RunPackage: _run_package,
        PublishTerms: answered(datasets.publish_terms),
        Download: answered(datasets.download),
        PublishSubscriptionOffer: answered(subscriptions.publish),
        WithdrawSubscriptionOffer: answered(subscriptions.withdraw),
        Subscribe: _subscribe,
        CancelSubscription: answered(subscriptions.cancel),
        RenewSubscription: answered(subscriptions.renew),
        RegisterProvider: answered(delivery.register),
        Reserve: answered(delivery.reserve),
        Settle: answered(delivery.settle),
        ExpireReservations: _expire_reservations,
    }
