"use strict";
// How the market watch writes numbers. Prices stay the exact decimal strings of the API: they are padded with
// zeros to their instrument's tick, never rounded, so that columns of prices line up digit for digit.

const DASH = "—";

// The number of decimals of a tick written as a decimal string: "0.01" -> 2, "0.005" -> 3, "1" -> 0.
function decimalsOf(tick) {
  const dot = tick.indexOf(".");
  return dot < 0 ? 0 : tick.length - dot - 1;
}

// `price` (a decimal string, or null) with at least `decimals` decimals.
function padded(price, decimals) {
  if (price === null || price === undefined) return DASH;
  const [whole, fraction = ""] = String(price).split(".");
  if (fraction.length >= decimals) return String(price);
  return decimals ? `${whole}.${fraction.padEnd(decimals, "0")}` : whole;
}

// A decimal string as a whole number of 10^-decimals units, exactly, for sums and differences of prices.
function unitsOf(price, decimals) {
  const [whole, fraction = ""] = String(price).split(".");
  const negative = whole.startsWith("-");
  const units = BigInt(whole.replace("-", "") || "0") * 10n ** BigInt(decimals) +
    BigInt(fraction.padEnd(decimals, "0").slice(0, decimals) || "0");
  return negative ? -units : units;
}

function fromUnits(units, decimals) {
  const negative = units < 0n;
  const digits = (negative ? -units : units).toString().padStart(decimals + 1, "0");
  const text = decimals ? `${digits.slice(0, -decimals)}.${digits.slice(-decimals)}` : digits;
  return negative ? `-${text}` : text;
}

// The mid of two prices: at the tick's decimals when it falls on them, else one decimal more (half a tick).
function midOf(bid, ask, decimals) {
  const sum = unitsOf(bid, decimals) + unitsOf(ask, decimals);
  return sum % 2n === 0n ? fromUnits(sum / 2n, decimals) : fromUnits(sum * 5n, decimals + 1);
}

function differenceOf(high, low, decimals) {
  return fromUnits(unitsOf(high, decimals) - unitsOf(low, decimals), decimals);
}

function signed(text) {
  return text.startsWith("-") || /^0(\.0*)?$/.test(text) ? text : `+${text}`;
}

function percent(part, whole) {
  const value = (100 * Number(part)) / Number(whole);
  return Number.isFinite(value) ? `${value > 0 ? "+" : ""}${value.toFixed(2)}%` : DASH;
}

function lots(qty) {
  return Number(qty).toLocaleString("en");
}

// A CNY amount with thousands separated and at least fen (two decimals): "12345.6" -> "12,345.60".
function yuan(amount) {
  const [whole, fraction = ""] = padded(amount, 2).split(".");
  return `${BigInt(whole).toLocaleString("en")}.${fraction}`;
}

// A count of tokens as people say it: 3000000000 -> "3.0B", 229000000 -> "229M".
function tokenCount(count) {
  for (const [size, unit] of [[1e12, "T"], [1e9, "B"], [1e6, "M"], [1e3, "K"]]) {
    if (count >= size) {
      const value = count / size;
      return `${value.toFixed(value < 100 ? 1 : 0)}${unit}`;
    }
  }
  return String(count);
}

function clockTime(date) {
  return date.toLocaleTimeString("en-GB");
}

function shortTime(date) {
  return date.toLocaleTimeString("en-GB", { hour: "2-digit", minute: "2-digit" });
}
