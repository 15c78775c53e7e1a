"""Instruments: public reference data; an admin lists, halts and resumes them."""

from api import schemas
from api.endpoints import Call, Endpoints, money
from api.problems import Problem, known
from api.units import from_micro
from exchange.commands import ListInstrument, SetInstrumentStatus
from exchange.database.queries import sql

instruments = Endpoints("instruments")

ALL = sql("all_instruments")
ONE = sql("instrument_by_symbol")


def instrument(row) -> schemas.Instrument:
    values = dict(row)
    values["tick"] = from_micro(values["tick"])
    return schemas.Instrument(**values)


async def read_instrument(call: Call, symbol: str) -> schemas.Instrument:
    async with call.services.connection() as conn:
        row = await conn.fetchrow(ONE, symbol)
    return instrument(known(row, "unknown_instrument", "symbol"))


@instruments.route("GET", "/v1/instruments", summary="List instruments", response=schemas.InstrumentList)
async def list_instruments(call: Call) -> schemas.InstrumentList:
    """Every instrument, trading or halted, by symbol."""
    async with call.services.read_connection() as conn:
        rows = await conn.fetch(ALL)
    return schemas.InstrumentList([instrument(row) for row in rows])


@instruments.route("GET", "/v1/instruments/{symbol}", summary="One instrument", response=schemas.Instrument,
                   errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def get_instrument(call: Call) -> schemas.Instrument:
    """One instrument's attributes and status."""
    return await read_instrument(call, call.params["symbol"])


@instruments.route("POST", "/v1/instruments", summary="List a new instrument", scope="admin",
                   body=schemas.NewInstrument, response=schemas.Instrument, status=201,
                   errors=("symbol_taken", "invalid_instrument", "invalid_decimal", "too_precise", "out_of_range"))
async def create_instrument(call: Call) -> schemas.Instrument:
    """List a compute block or a dataset token; it trades at once. The tick is in yuan per lot."""
    body: schemas.NewInstrument = call.body
    if body.symbol == schemas.CASH:
        raise Problem("invalid_field", f"{schemas.CASH} is the cash asset, not an instrument symbol.", field="symbol")
    tick = money(body.tick, "tick", schemas.MAX_PRICE)
    if body.min_qty > body.max_qty:
        raise Problem("out_of_range", "max_qty must not be below min_qty.", field="max_qty")
    common = {
        "symbol": body.symbol, "tick": tick, "min_qty": body.min_qty, "max_qty": body.max_qty,
        "maker_fee_bps": body.maker_fee_bps, "taker_fee_bps": body.taker_fee_bps,
    }
    if isinstance(body, schemas.NewComputeInstrument):
        command = ListInstrument(kind="compute", model=body.model, substitution_group=body.substitution_group,
                                 quality=body.quality, tokens_per_lot=body.tokens_per_lot, **common)
    else:
        command = ListInstrument(kind="dataset", issuer_id=body.issuer_id, description=body.description,
                                 license=body.license, grants=body.grants, supply_cap=body.supply_cap, **common)
    try:
        await call.submit(command)
    except Problem as problem:
        if problem.code == "invalid_instrument" and command.kind == "dataset":
            # Everything else was validated above: what is left is the issuer.
            raise Problem("invalid_instrument", "issuer_id must name an issuer account.", field="issuer_id") from None
        raise
    return await read_instrument(call, body.symbol)


async def set_status(call: Call, status: str) -> schemas.Instrument:
    await call.submit(SetInstrumentStatus(call.params["symbol"], status))
    return await read_instrument(call, call.params["symbol"])


@instruments.route("POST", "/v1/instruments/{symbol}/halt", summary="Halt trading", scope="admin",
                   response=schemas.Instrument, errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def halt(call: Call) -> schemas.Instrument:
    """Stop trading: new orders and amendments are refused, cancels still work. Halting twice is harmless."""
    return await set_status(call, "halted")


@instruments.route("POST", "/v1/instruments/{symbol}/resume", summary="Resume trading", scope="admin",
                   response=schemas.Instrument, errors=("unknown_instrument",), params=schemas.SYMBOL_PARAM)
async def resume(call: Call) -> schemas.Instrument:
    """Trade again after a halt."""
    return await set_status(call, "trading")
