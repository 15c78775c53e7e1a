"""The rejection codes of the exchange and the message a person reads with each.

A command that changes nothing answers ``Rejection(code, message)``: the code is a stable snake_case string that
clients act on, the message says what to do. The engine, routed orders and packages reject through ``reject``;
the API maps every code here to an HTTP status (``api.problems.CODES``, which a test keeps complete).
"""

from exchange.commands import Rejection

MESSAGES = {
    "unknown_account": "No such account.",
    "unknown_instrument": "No such instrument; list them with GET /v1/instruments.",
    "unknown_order": "No such open order in this account.",
    "not_permitted": "This account's role does not allow that.",
    "instrument_halted": "Trading in this instrument is halted; only cancels are accepted.",
    "insufficient_funds": "Available balance does not cover the order and its maximum fee.",
    "insufficient_tokens": "Available token balance is lower than the quantity.",
    "invalid_amount": "The amount must be a positive whole number of micro-yuan.",
    "invalid_qty": "The quantity must be a positive whole number of lots.",
    "invalid_price": "The price must be a positive whole number of micro-yuan per lot.",
    "off_tick_price": "The price must be a multiple of the instrument's tick.",
    "invalid_budget": "The budget must be a positive whole number of micro-yuan, for market buys only.",
    "budget_too_small": "The budget does not even cover the taker fee on one micro-yuan; raise it.",
    "invalid_order_type": "The order type must be 'limit' or 'market'.",
    "invalid_side": "The side must be 'buy' or 'sell'.",
    "invalid_time_in_force": "Time in force must be GTC, IOC or FOK (market orders are IOC).",
    "invalid_stp_mode": "Self-trade prevention must be cancel_newest, cancel_oldest, cancel_both or decrement "
                        "(decrement is not available for budget orders).",
    "post_only_requires_gtc": "A post-only order must be GTC.",
    "would_take": "A post-only order may not trade on arrival; change its price.",
    "duplicate_order_id": "That order id is already on the book.",
    "no_change": "The amendment changes nothing.",
    "qty_below_minimum": "The quantity is below the instrument's minimum order size.",
    "qty_above_maximum": "The quantity is above the instrument's maximum order size.",
    "qty_not_above_filled": "The new quantity must be larger than what is already filled.",
    "name_taken": "An account with that name exists.",
    "invalid_text": "Text fields may not contain the NUL character.",
    "amount_too_large": "The amount would take a balance beyond what the exchange can record.",
    "invalid_role": "The role must be admin, issuer or trader.",
    "symbol_taken": "An instrument with that symbol exists.",
    "invalid_instrument": "The instrument's attributes are incomplete or out of range.",
    "invalid_status": "The status must be 'trading' or 'halted'.",
    "not_approved": "This issuer is not approved to mint this instrument.",
    "over_capacity": "Minting that much would exceed the issuer's declared capacity.",
    "over_supply_cap": "Minting that much would exceed the dataset's supply cap.",
    "capacity_below_issued": "The capacity is below what the issuer has already minted.",
    "unknown_group": "No compute instrument is in that substitution group; see GET /v1/instruments.",
    "invalid_route_mode": "The mode must be 'cost', 'quality' or 'balance'.",
    "limit_or_budget_required": "Give a limit price per lot, a total budget, or both.",
    "invalid_route_budget": "The budget must be a positive whole number of micro-yuan, and is for buys only.",
    "rest_requires_price": "Resting the remainder needs a limit price to rest at.",
    "invalid_period": "The period must be 'day', 'week' or 'month'.",
    "invalid_max_cost": "The cost cap per period must be a positive whole number of micro-yuan.",
    "invalid_start": "The start time must carry a time zone and lie before the year 9000.",
    "unknown_package": "No such package in this account.",
    "invalid_package_status": "The status must be 'active', 'paused' or 'cancelled'.",
    "package_cancelled": "The package is cancelled; create a new one.",
    "package_not_active": "The package is paused or cancelled.",
    "period_not_due": "That period is not the package's next one, or has not started yet.",
    "not_a_dataset": "Only dataset tokens have license terms, files and access grants.",
    "invalid_terms": "Terms need one or more permitted uses (research, internal, commercial, model_training), "
                     "days_per_token (1-36600) and/or downloads_per_token (1-1000000), a text of at most 32000 "
                     "characters and an attribution of at most 500.",
    "no_terms": "This dataset has no license terms yet; its issuer publishes them first.",
    "terms_not_accepted": "Redeeming dataset tokens accepts their license terms: send terms_version, the version "
                          "shown at GET /v1/instruments/{symbol}/terms.",
    "terms_changed": "The dataset's terms have a newer version than the one accepted; read them at "
                     "GET /v1/instruments/{symbol}/terms and redeem again.",
    "grant_too_large": "The access these tokens grant goes beyond what can be recorded; redeem fewer.",
    "unknown_file": "No such file of this dataset; list them with GET /v1/instruments/{symbol}/files.",
    "no_access": "No access grant of this account covers this dataset now; redeem its tokens to get one.",
    "not_compute": "Only compute instruments have providers and quotas of tokens.",
    "invalid_provider": "The base URL must start with http:// or https:// and be at most 512 characters, the model "
                        "name 1 to 128 characters, and the credential at most 1 KiB.",
    "unknown_model": "No compute instrument or substitution group by that name; list them with GET /v1/instruments "
                     "or GET /inference/v1/models.",
    "invalid_tokens": "The tokens to reserve must be a positive whole number.",
    "no_provider": "No provider serves this instrument yet; try another model.",
    "quota_exceeded": "Your quota does not cover this call's worst case (its prompt plus max_tokens): redeem more "
                      "lots of the instrument (POST /v1/redemptions) or lower max_tokens. GET /v1/quotas shows what "
                      "is left.",
    "unknown_reservation": "No such open reservation: it settled, or expired past its deadline.",
    "invalid_attempts": "A settlement lists 1 to 8 attempts on providers of the reservation's instrument, at most "
                        "one of them ok, with whole non-negative counts.",
    "invalid_offer": "A subscription offer needs 1 to 10^15 tokens a period, a period of 'day', 'week' or 'month', "
                     "and a price of 1 micro-yuan to one billion CNY.",
    "unknown_offer": "No such subscription offer; list them with GET /v1/subscription-offers.",
    "offer_withdrawn": "The seller has withdrawn this offer; it takes no new subscribers.",
    "unknown_subscription": "No such subscription in this account.",
    "replayed_request": "This signed request was already accepted; it runs once. Sign a new one (a new "
                        "timestamp) to do it again, or send a client id to make retries safe.",
}

WITHDRAWAL_NOT_COVERED = "Available cash is lower than the amount to withdraw."
"""The ``insufficient_funds`` message for a withdrawal, which has no order and no fee."""


def reject(code: str) -> Rejection:
    """The rejection of ``code``; an unknown code is a programmer error (KeyError)."""
    return Rejection(code, MESSAGES[code])
