"use strict";
// tokex market watch. Reference data and history come from the REST API, everything live from the feed at
// /v1/ws (its protocol is described in api/feed/protocol.py): the level2 book is rebuilt from a snapshot and updates,
// checked by sequence and CRC32 checksum, and resynced by subscribing again after a gap; a closed connection
// is reopened with backoff and every subscription made again. Each substitution group's token price index comes
// from GET /v1/indices and its history, then from the feed's index channel. Prices are padded to the tick
// (format.js); the charts are charts.js.
//
// The page is drawn from REST first (book, tickers, trades, candles, indices), then kept live by the feed, and the
// socket is opened at once, while those requests are in flight. A browser running the page on virtual time (a
// headless screenshot with --virtual-time-budget) only holds that time still while an HTTP request is pending:
// once none is, the budget runs out in a few real milliseconds, so a page that waited for its REST answers
// before opening the socket, and drew the book only from the feed, was still "connecting" in the picture.

const LADDER_DEPTH = 40; // levels a side; the panel shows as many as fit
const TAPE_LENGTH = 60;
const MAX_TICKERS = 40;
const CHART_BINS = 300;
const INDEX_POINTS = 360; // one value a minute: the last six hours

const state = {
  instruments: [],
  symbol: null,
  interval: "1m",
  book: null, // {seq, bids: Map(price string -> lots), asks: Map}, from the feed
  restBook: null, // the same from GET /book, shown until the feed's snapshot comes
  tradesSeq: -1,
  trades: new Map(), // id -> trade
  candles: new Map(), // start (ms) -> candle
  liveCandles: new Set(), // starts set by the feed since the last REST load
  chartFresh: true, // the candles were replaced: draw them all and scroll to the newest
  chartUpdates: [], // candles from the feed not drawn yet
  hovered: null, // the bar under the chart's crosshair
  tickers: new Map(),
  indices: new Map(), // substitution group -> the newest index object
  indexHistory: new Map(), // substitution group -> Map(at (ms) -> index object)
  resyncs: 0,
  reconnects: 0,
  status: "connecting",
  socket: null,
  retry: 0,
  chart: null, // {chart, candles, volume}: charts.js
  indexCharts: new Map(), // substitution group -> {chart, line}
};
window.tokex = state; // for tests, and for the curious

const $ = (selector) => document.querySelector(selector);

// CRC-32 (ISO-HDLC), as the server computes level2 checksums.
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c >>> 0;
  }
  return table;
})();

function crc32(text) {
  let c = 0xffffffff;
  for (let i = 0; i < text.length; i++) c = CRC_TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function sortedLevels(levels, descending) {
  const entries = [...levels.entries()];
  entries.sort((a, b) => (descending ? Number(b[0]) - Number(a[0]) : Number(a[0]) - Number(b[0])));
  return entries;
}

function checksumOf(book) {
  const side = (levels) => levels.slice(0, 10).map(([price, qty]) => `${price}:${qty}`).join(",");
  return crc32(`${side(sortedLevels(book.bids, true))}|${side(sortedLevels(book.asks, false))}`);
}

// The connection

function connect() {
  const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`;
  const socket = new WebSocket(url);
  state.socket = socket;
  socket.onopen = () => {
    state.retry = 0;
    setStatus("live", "live");
    subscribeAll();
    // After a reconnect, what the feed sent meanwhile is caught up from REST; the book comes as a new snapshot.
    if (state.reconnects && state.symbol) loadHistory();
  };
  socket.onmessage = (event) => {
    for (const message of JSON.parse(event.data)) handle(message);
  };
  socket.onclose = (event) => {
    if (state.socket !== socket) return;
    state.socket = null;
    state.book = null;
    state.reconnects += 1;
    const why = event.reason ? `: ${event.reason}` : "";
    setStatus("reconnecting", `connection closed (${event.code}${why}); reconnecting`);
    setTimeout(connect, Math.min(10000, 250 * 2 ** state.retry++));
  };
}

function send(message) {
  if (state.socket && state.socket.readyState === WebSocket.OPEN) state.socket.send(JSON.stringify(message));
}

// Every subscription the page holds, when the socket opens.
function subscribeAll() {
  subscribeOverview();
  if (state.symbol) subscribeMarket();
}

// The tickers of the instrument list and the price indices.
function subscribeOverview() {
  for (const instrument of state.instruments.slice(0, MAX_TICKERS)) {
    send({ type: "subscribe", channel: "ticker", symbol: instrument.symbol });
  }
  for (const group of groups()) send({ type: "subscribe", channel: "index", group });
}

function groups() {
  const found = state.instruments.filter((i) => i.kind === "compute").map((i) => i.substitution_group);
  return [...new Set(found)].sort();
}

function subscribeMarket() {
  state.book = null;
  state.tradesSeq = -1;
  send({ type: "subscribe", channel: "level2", symbol: state.symbol });
  send({ type: "subscribe", channel: "trades", symbol: state.symbol });
  send({ type: "subscribe", channel: "candles", symbol: state.symbol, interval: state.interval });
}

function warn(error) {
  console.warn("tokex:", error.message);
}

function resync(why) {
  // A new snapshot replaces the book; the updates until then are dropped.
  state.book = null;
  state.resyncs += 1;
  setStatus("resyncing", `resyncing (${why})`);
  send({ type: "subscribe", channel: "level2", symbol: state.symbol });
}

function setStatus(kind, text) {
  state.status = kind;
  const status = $("#status");
  status.dataset.state = kind;
  status.textContent = text;
}

// Messages

function handle(message) {
  if (message.group !== undefined) return handleIndex(message);
  const mine = message.symbol === state.symbol;
  switch (message.type) {
    case "snapshot":
      if (!mine) return;
      state.book = { seq: message.seq, bids: new Map(message.bids), asks: new Map(message.asks) };
      state.restBook = null;
      if (checksumOf(state.book) !== message.checksum) return resync("snapshot checksum");
      setStatus("live", "live");
      return render();
    case "update": {
      const book = state.book;
      if (!mine || !book || message.seq <= book.seq) return;
      if (message.prev_seq > book.seq) return resync(`missed updates after ${book.seq}`);
      for (const [price, qty] of message.bids) qty ? book.bids.set(price, qty) : book.bids.delete(price);
      for (const [price, qty] of message.asks) qty ? book.asks.set(price, qty) : book.asks.delete(price);
      book.seq = message.seq;
      if (checksumOf(book) !== message.checksum) return resync(`checksum at ${book.seq}`);
      return render();
    }
    case "subscribed":
      if (mine && message.channel === "trades") state.tradesSeq = message.seq;
      return;
    case "trades":
      if (!mine || message.seq <= state.tradesSeq) return;
      if (state.tradesSeq >= 0 && message.prev_seq > state.tradesSeq) loadTrades().catch(warn);
      state.tradesSeq = message.seq;
      for (const trade of message.trades) state.trades.set(trade.id, { ...trade, ts: message.ts, fresh: true });
      return render();
    case "ticker":
      setTicker(message);
      return render();
    case "candle": {
      if (!mine || message.interval !== state.interval) return;
      const start = Date.parse(message.candle.start);
      state.candles.set(start, message.candle);
      state.liveCandles.add(start);
      state.chartUpdates.push(message.candle);
      return render();
    }
    case "heartbeat":
      if (!mine) return;
      if (state.book && message.level2_seq > state.book.seq) return resync(`heartbeat at ${message.level2_seq}`);
      if (state.tradesSeq >= 0 && message.trades_seq > state.tradesSeq) {
        state.tradesSeq = message.trades_seq;
        loadTrades().catch(warn);
      }
      return;
    case "error":
      console.warn("feed:", message.code, message.detail);
      return;
    default:
      return;
  }
}

function handleIndex(message) {
  const known = state.indices.get(message.group);
  if (message.type === "index") {
    addIndex(message.index);
    return render();
  }
  // A heartbeat names the newest minute computed: a newer one than shown means a value was missed.
  if (message.type === "heartbeat" && message.at !== null && (!known || message.at > known.at)) {
    loadIndexHistory(message.group).catch(warn);
  }
}

function addIndex(index) {
  const known = state.indices.get(index.group);
  if (!known || index.at >= known.at) state.indices.set(index.group, index);
  if (!state.indexHistory.has(index.group)) state.indexHistory.set(index.group, new Map());
  state.indexHistory.get(index.group).set(Date.parse(index.at), index);
}

// A ticker from REST or the feed, whichever is newer.
function setTicker(ticker) {
  const known = state.tickers.get(ticker.symbol);
  if (!known || ticker.seq >= known.seq) state.tickers.set(ticker.symbol, ticker);
}

// REST

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

const path = (symbol, what) => `/v1/instruments/${encodeURIComponent(symbol)}/${what}`;

async function loadInstruments() {
  const answer = await getJSON("/v1/instruments");
  state.instruments = answer.items;
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = state.instruments.find((i) => i.symbol === wanted) ||
    state.instruments.find((i) => i.kind === "compute") || state.instruments[0];
  if (first) select(first.symbol);
  subscribeOverview();
  render();
  await Promise.all([
    ...state.instruments.slice(0, MAX_TICKERS).map((i) => loadTicker(i.symbol).catch(warn)),
    ...groups().map((group) => loadIndexHistory(group).catch(warn)),
  ]);
}

async function loadTicker(symbol) {
  setTicker(await getJSON(path(symbol, "ticker")));
  render();
}

async function loadIndexHistory(group) {
  const answer = await getJSON(`/v1/indices/${encodeURIComponent(group)}/history?interval=1m&limit=${INDEX_POINTS}`);
  for (const item of answer.items) addIndex(item.index);
  render();
}

// The book, the tape and the candles of the instrument shown.
function loadHistory() {
  loadBook().catch(warn);
  loadTrades().catch(warn);
  loadCandles().catch(warn);
}

async function loadBook() {
  const symbol = state.symbol;
  const book = await getJSON(`${path(symbol, "book")}?depth=${LADDER_DEPTH}`);
  if (symbol !== state.symbol) return;
  const levels = (side) => new Map(side.map((level) => [level.price, level.qty]));
  state.restBook = { seq: book.seq, bids: levels(book.bids), asks: levels(book.asks) };
  render();
}

async function loadTrades() {
  const symbol = state.symbol;
  const page = await getJSON(`${path(symbol, "trades")}?limit=${TAPE_LENGTH}`);
  if (symbol !== state.symbol) return;
  for (const trade of page.items) {
    if (!state.trades.has(trade.id)) state.trades.set(trade.id, { ...trade, ts: Date.parse(trade.created_at) * 1000 });
  }
  render();
}

async function loadCandles() {
  const { symbol, interval } = state;
  state.liveCandles = new Set();
  const answer = await getJSON(`${path(symbol, "candles")}?interval=${interval}&limit=${CHART_BINS}`);
  if (symbol !== state.symbol || interval !== state.interval) return;
  for (const candle of answer.items) {
    const start = Date.parse(candle.start);
    if (!state.liveCandles.has(start)) state.candles.set(start, candle); // the feed's is newer
  }
  state.chartFresh = true;
  render();
}

// Choices

function instrument(symbol = state.symbol) {
  return state.instruments.find((i) => i.symbol === symbol);
}

function decimals(symbol = state.symbol) {
  const found = instrument(symbol);
  return found ? decimalsOf(found.tick) : 0;
}

function select(symbol) {
  if (symbol === state.symbol) return;
  if (state.symbol) {
    for (const channel of ["level2", "trades"]) send({ type: "unsubscribe", channel, symbol: state.symbol });
    send({ type: "unsubscribe", channel: "candles", symbol: state.symbol, interval: state.interval });
  }
  state.symbol = symbol;
  state.restBook = null;
  state.trades = new Map();
  clearCandles();
  if (state.chart) setPriceFormat(state.chart.candles, instrument().tick);
  document.body.dataset.symbol = symbol;
  history.replaceState(null, "", `#${encodeURIComponent(symbol)}`);
  subscribeMarket();
  loadHistory();
  render();
}

function chooseInterval(interval) {
  if (interval === state.interval) return;
  send({ type: "unsubscribe", channel: "candles", symbol: state.symbol, interval: state.interval });
  state.interval = interval;
  clearCandles();
  for (const button of document.querySelectorAll(".intervals button")) {
    button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
  }
  send({ type: "subscribe", channel: "candles", symbol: state.symbol, interval });
  loadCandles().catch(warn);
  render();
}

function clearCandles() {
  state.candles = new Map();
  state.chartUpdates = [];
  state.chartFresh = true;
  state.hovered = null;
}

// Rendering, at most once a frame

let frameWanted = false;

function render() {
  if (frameWanted) return;
  frameWanted = true;
  requestAnimationFrame(() => {
    frameWanted = false;
    renderInstruments();
    renderIndices();
    renderTicker();
    renderBook();
    renderTrades();
    drawChart();
    renderOhlc();
  });
}

function cell(text, className) {
  const element = document.createElement("td");
  element.textContent = text;
  if (className) element.className = className;
  return element;
}

function direction(number) {
  return number > 0 ? "up" : number < 0 ? "down" : "";
}

function changeOf(ticker) {
  if (!ticker || ticker.change_24h === null) return { amount: DASH, percent: DASH, kind: "" };
  const places = decimals(ticker.symbol);
  return {
    amount: signed(padded(ticker.change_24h, places)),
    percent: percent(ticker.change_24h, ticker.open_24h),
    kind: direction(Number(ticker.change_24h)),
  };
}

function renderInstruments() {
  for (const kind of ["compute", "dataset"]) {
    const list = $(`#${kind}`);
    const items = state.instruments.filter((i) => i.kind === kind);
    if (list.children.length !== items.length) {
      list.replaceChildren(...items.map((instrument) => {
        const item = document.createElement("li");
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.symbol = instrument.symbol;
        for (const part of ["name", "price", "volume", "change"]) {
          const span = document.createElement("span");
          span.className = part;
          button.append(span);
        }
        button.querySelector(".name").textContent = instrument.symbol;
        button.title = instrument.symbol;
        button.addEventListener("click", () => select(instrument.symbol));
        item.append(button);
        return item;
      }));
    }
    for (const button of list.querySelectorAll("button")) {
      const symbol = button.dataset.symbol;
      const ticker = state.tickers.get(symbol);
      const moved = changeOf(ticker);
      button.querySelector(".price").textContent = padded(ticker ? ticker.last_price : null, decimals(symbol));
      button.querySelector(".volume").textContent = ticker ? `${lots(ticker.volume_24h)} lots 24h` : "";
      const change = button.querySelector(".change");
      change.textContent = moved.percent;
      change.className = `change ${moved.kind}`;
      button.setAttribute("aria-current", String(symbol === state.symbol));
    }
  }
}

function renderIndices() {
  const list = $("#indices");
  const shown = groups();
  if ([...list.children].map((item) => item.dataset.group).join() !== shown.join()) {
    for (const { chart } of state.indexCharts.values()) chart.remove();
    state.indexCharts.clear();
    list.replaceChildren(...shown.map((group) => {
      const item = document.createElement("li");
      item.dataset.group = group;
      for (const part of ["name", "value", "meta", "history"]) {
        const element = document.createElement(part === "history" ? "div" : "span");
        element.className = part;
        item.append(element);
      }
      item.querySelector(".name").textContent = group;
      return item;
    }));
  }
  for (const item of list.children) {
    const group = item.dataset.group;
    const index = state.indices.get(group);
    const value = item.querySelector(".value");
    const meta = item.querySelector(".meta");
    if (!index) {
      value.textContent = DASH;
      meta.textContent = "not computed yet";
      continue;
    }
    item.dataset.at = index.at;
    item.dataset.stale = String(index.stale);
    const at = shortTime(new Date(index.at));
    // Stale means no trade in 24 hours: no value is shown rather than an old one.
    value.textContent = index.stale ? "stale" : Number(index.value).toFixed(4);
    value.title = index.stale ? "" : `${index.value} CNY per 1M tokens at ${at}`;
    meta.textContent = index.stale
      ? `no trades in the 24 h to ${at}`
      : `${index.trades.toLocaleString("en")} trades · ${tokenCount(index.volume_tokens)} tokens in 24 h · ${at}`;
    drawIndexHistory(group, item.querySelector(".history"));
  }
}

function drawIndexHistory(group, box) {
  const points = [...(state.indexHistory.get(group) || new Map()).values()]
    .sort((a, b) => Date.parse(a.at) - Date.parse(b.at)).map(indexPoint);
  // Stale minutes before the first value would only squeeze the line to the right.
  points.splice(0, Math.max(0, points.findIndex((point) => point.value !== undefined)));
  box.dataset.points = String(points.filter((point) => point.value !== undefined).length);
  if (!window.LightweightCharts) return;
  if (!state.indexCharts.has(group)) state.indexCharts.set(group, indexChart(box));
  const drawn = state.indexCharts.get(group);
  if (drawn.count !== points.length) {
    drawn.count = points.length;
    drawn.line.setData(points);
  }
  // The whole history across the panel, whatever its width now.
  drawn.chart.timeScale().fitContent();
}

function renderTicker() {
  const shown = instrument();
  $("#symbol").textContent = state.symbol || DASH;
  if (shown) {
    $("#about").textContent = shown.kind === "compute"
      ? `${shown.model} · ${shown.substitution_group} · quality ${shown.quality} · ` +
        `1 lot = ${tokenCount(shown.tokens_per_lot)} tokens · tick ${shown.tick} CNY`
      : `${shown.description} · 1 token = ${shown.grants} · ${shown.license}`;
  }
  const ticker = state.tickers.get(state.symbol);
  const places = decimals();
  const moved = changeOf(ticker);
  const last = $("#last");
  last.textContent = padded(ticker ? ticker.last_price : null, places);
  last.className = moved.kind;
  $("#change").textContent = ticker && ticker.change_24h !== null ? `${moved.amount} (${moved.percent})` : DASH;
  $("#change").className = moved.kind;
  $("#high").textContent = padded(ticker ? ticker.high_24h : null, places);
  $("#low").textContent = padded(ticker ? ticker.low_24h : null, places);
  $("#volume").textContent = ticker ? `${lots(ticker.volume_24h)} lots` : DASH;
  $("#turnover").textContent = ticker ? `${yuan(ticker.notional_24h)} CNY` : DASH;
}

// One side of the ladder, best level first, each with the lots up to it; `widest` is the largest such total
// shown on either side, the full width of a depth bar.
function ladderRows(levels, widest, places) {
  let total = 0;
  return levels.map(([price, qty]) => {
    total += qty;
    const row = document.createElement("tr");
    row.dataset.price = price;
    row.style.setProperty("--depth", `${((100 * total) / widest).toFixed(1)}%`);
    row.append(cell(padded(price, places)), cell(lots(qty)), cell(lots(total)));
    return row;
  });
}

function renderBook() {
  const ladder = $("#ladder");
  const book = state.book || state.restBook;
  if (!book) {
    ladder.dataset.seq = "";
    return;
  }
  const places = decimals();
  const bids = sortedLevels(book.bids, true).slice(0, LADDER_DEPTH);
  const asks = sortedLevels(book.asks, false).slice(0, LADDER_DEPTH);
  const sum = (levels) => levels.reduce((total, level) => total + level[1], 0);
  const widest = Math.max(1, sum(bids), sum(asks));
  $("#asks").replaceChildren(...ladderRows(asks, widest, places).reverse());
  $("#bids").replaceChildren(...ladderRows(bids, widest, places));
  const ticker = state.tickers.get(state.symbol);
  const newest = [...state.trades.values()].reduce((a, b) => (!a || b.id > a.id ? b : a), null);
  const last = $("#book-last");
  last.textContent = padded(ticker ? ticker.last_price : null, places);
  last.className = `book-last ${newest ? (newest.side === "buy" ? "up" : "down") : ""}`;
  if (bids.length && asks.length) {
    const spread = differenceOf(asks[0][0], bids[0][0], places);
    const mid = midOf(bids[0][0], asks[0][0], places);
    $("#mid").textContent = `mid ${mid} · spread ${spread} (${percent(spread, mid).replace("+", "")})`;
  } else {
    $("#mid").textContent = bids.length || asks.length ? "one-sided book" : "empty book";
  }
  ladder.dataset.seq = String(book.seq);
}

function renderTrades() {
  const trades = [...state.trades.values()].sort((a, b) => b.id - a.id).slice(0, TAPE_LENGTH);
  for (const id of [...state.trades.keys()]) {
    if (!trades.some((t) => t.id === id)) state.trades.delete(id);
  }
  const places = decimals();
  $("#trades").replaceChildren(...trades.map((trade) => {
    const row = document.createElement("tr");
    row.dataset.id = String(trade.id);
    row.className = trade.side + (trade.fresh ? " fresh" : "");
    trade.fresh = false;
    row.append(cell(padded(trade.price, places)), cell(lots(trade.qty)), cell(clockTime(new Date(trade.ts / 1000))));
    return row;
  }));
}

function drawChart() {
  const box = $("#candles");
  const bins = [...state.candles.entries()].sort((a, b) => a[0] - b[0]).map(([, candle]) => candle);
  const traded = bins.filter((candle) => candle.volume > 0);
  box.dataset.bins = String(bins.length);
  box.dataset.traded = String(traded.length);
  let note = box.querySelector(".note");
  if (!traded.length) {
    if (!note) {
      note = document.createElement("p");
      note.className = "note";
      box.append(note);
    }
    note.textContent = bins.length ? "no trades in this range" : "loading…";
  } else if (note) {
    note.remove();
  }
  if (!window.LightweightCharts) return;
  if (!state.chart) {
    state.chart = candleChart(box, (bar) => {
      state.hovered = bar;
      renderOhlc();
    });
    if (instrument()) setPriceFormat(state.chart.candles, instrument().tick);
  }
  const { chart, candles, volume } = state.chart;
  const drawnTo = candles.data().length ? candles.data().at(-1).time : -Infinity;
  const updates = state.chartUpdates;
  state.chartUpdates = [];
  if (state.chartFresh || updates.some((candle) => Date.parse(candle.start) / 1000 < drawnTo)) {
    const bars = bins.map(candleBars);
    candles.setData(bars.map((b) => b.bar));
    volume.setData(bars.map((b) => b.volume));
    if (state.chartFresh) chart.timeScale().scrollToRealTime();
    state.chartFresh = false;
    return;
  }
  for (const candle of updates) {
    const { bar, volume: shade } = candleBars(candle);
    candles.update(bar);
    volume.update(shade);
  }
}

// The readout over the chart: the bin under the crosshair, else the newest traded one.
function renderOhlc() {
  const readout = $("#ohlc");
  const hovered = state.hovered && state.candles.get(state.hovered.time * 1000);
  const candle = hovered || [...state.candles.values()].filter((c) => c.volume > 0)
    .sort((a, b) => Date.parse(b.start) - Date.parse(a.start))[0];
  if (!candle || !candle.volume) {
    readout.replaceChildren();
    return;
  }
  const places = decimals();
  const move = differenceOf(candle.close, candle.open, places);
  const parts = [["O", padded(candle.open, places)], ["H", padded(candle.high, places)],
    ["L", padded(candle.low, places)], ["C", padded(candle.close, places)],
    ["", `${signed(move)} (${percent(move, candle.open)})`], ["V", `${lots(candle.volume)} lots`]];
  readout.replaceChildren(...parts.flatMap(([label, value]) => {
    const strong = document.createElement("b");
    strong.textContent = value;
    if (!label) strong.className = direction(Number(move));
    return label ? [`${label} `, strong] : [strong];
  }));
  readout.title = crosshairTime(Date.parse(candle.start) / 1000);
}

// Providers' measured effect (GET /v1/providers/stats): each served instrument's listed and measured quality, and
// each provider's success rate, median time to first token and tokens per second over its last calls.

const PROVIDER_SECONDS = 10;

async function loadProviders() {
  try {
    renderProviders(await getJSON("/v1/providers/stats"));
  } catch (error) {
    warn(error);
  }
}

function renderProviders(stats) {
  const items = stats.instruments.map((effect) => {
    const item = document.createElement("li");
    item.dataset.symbol = effect.symbol;
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = `${effect.symbol} quality ${effect.listed_quality} → measured ${effect.measured_quality}`;
    item.append(name);
    for (const provider of stats.providers.filter((p) => p.symbol === effect.symbol)) {
      const meta = document.createElement("span");
      meta.className = "meta";
      const figures = provider.attempts
        ? `${Math.round(provider.success_rate * 100)}% ok · first token ${Math.round(provider.ttft_ms)} ms · ` +
          `${(provider.tokens_per_second ?? 0).toLocaleString("en")} tokens/s`
        : "no calls yet";
      meta.textContent = `${provider.provider}: ${figures} · ${tokenCount(provider.delivered)} delivered`;
      item.append(meta);
    }
    return item;
  });
  $("#providers").replaceChildren(...items);
}

// Start

for (const button of document.querySelectorAll(".intervals button")) {
  button.addEventListener("click", () => chooseInterval(button.dataset.interval));
}
connect();
// The providers' panel waits for the market: the market is what a visitor came for, and is drawn first.
loadInstruments()
  .catch((error) => setStatus("reconnecting", `cannot load instruments: ${error.message}`))
  .finally(() => {
    loadProviders();
    setInterval(loadProviders, PROVIDER_SECONDS * 1000);
  });
