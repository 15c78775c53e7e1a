"use strict";
// tokex market watch. Reference data and history come from the REST API, everything live from the feed at
// /v1/ws (its protocol is described in api/feed.py): the level2 book is rebuilt from a snapshot and updates,
// checked by sequence and CRC32 checksum, and resynced by subscribing again after a gap; a closed connection
// is reopened with backoff and every subscription made again. Each substitution group's token price index comes
// from GET /v1/indices and then from the feed's index channel.

const LADDER_DEPTH = 15;
const TAPE_LENGTH = 60;
const MAX_TICKERS = 40;
const CHART_BINS = 60;

const state = {
  instruments: [],
  symbol: null,
  interval: "1m",
  book: null, // {seq, bids: Map(price string -> lots), asks: Map}
  tradesSeq: -1,
  trades: new Map(), // id -> trade
  candles: new Map(), // start (ms) -> candle
  liveCandles: new Set(), // starts set by the feed since the last REST load
  tickers: new Map(),
  indices: new Map(), // substitution group -> the newest index object
  resyncs: 0,
  reconnects: 0,
  status: "connecting",
  socket: null,
  retry: 0,
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

function subscribeAll() {
  for (const instrument of state.instruments.slice(0, MAX_TICKERS)) {
    send({ type: "subscribe", channel: "ticker", symbol: instrument.symbol });
  }
  for (const group of groups()) send({ type: "subscribe", channel: "index", group });
  if (state.symbol) subscribeMarket();
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
  loadTrades().catch(warn);
  loadCandles().catch(warn);
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
      state.tickers.set(message.symbol, message);
      return render();
    case "candle":
      if (!mine || message.interval !== state.interval) return;
      state.candles.set(Date.parse(message.candle.start), message.candle);
      state.liveCandles.add(Date.parse(message.candle.start));
      return render();
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
    if (!known || message.index.at >= known.at) state.indices.set(message.group, message.index);
    return render();
  }
  // A heartbeat names the newest minute computed: a newer one than shown means a value was missed.
  if (message.type === "heartbeat" && message.at !== null && (!known || message.at > known.at)) {
    loadIndices().catch(warn);
  }
}

// REST

async function getJSON(path) {
  const response = await fetch(path, { headers: { Accept: "application/json" } });
  if (!response.ok) throw new Error(`${path}: ${response.status}`);
  return response.json();
}

async function loadInstruments() {
  const answer = await getJSON("/v1/instruments");
  state.instruments = answer.items;
  const wanted = decodeURIComponent(location.hash.slice(1));
  const first = state.instruments.find((i) => i.symbol === wanted) ||
    state.instruments.find((i) => i.kind === "compute") || state.instruments[0];
  renderInstruments();
  if (first) select(first.symbol);
}

async function loadIndices() {
  const answer = await getJSON("/v1/indices");
  for (const index of answer.items) {
    const known = state.indices.get(index.group);
    if (!known || index.at >= known.at) state.indices.set(index.group, index);
  }
  render();
}

async function loadTrades() {
  const symbol = state.symbol;
  const page = await getJSON(`/v1/instruments/${encodeURIComponent(symbol)}/trades?limit=${TAPE_LENGTH}`);
  if (symbol !== state.symbol) return;
  for (const trade of page.items) {
    if (!state.trades.has(trade.id)) state.trades.set(trade.id, { ...trade, ts: Date.parse(trade.created_at) * 1000 });
  }
  render();
}

async function loadCandles() {
  const { symbol, interval } = state;
  state.liveCandles = new Set();
  const path = `/v1/instruments/${encodeURIComponent(symbol)}/candles?interval=${interval}&limit=${CHART_BINS}`;
  const answer = await getJSON(path);
  if (symbol !== state.symbol || interval !== state.interval) return;
  for (const candle of answer.items) {
    const start = Date.parse(candle.start);
    if (!state.liveCandles.has(start)) state.candles.set(start, candle); // the feed's is newer
  }
  render();
}

// Choices

function select(symbol) {
  if (symbol === state.symbol) return;
  if (state.symbol) {
    for (const channel of ["level2", "trades"]) send({ type: "unsubscribe", channel, symbol: state.symbol });
    send({ type: "unsubscribe", channel: "candles", symbol: state.symbol, interval: state.interval });
  }
  state.symbol = symbol;
  state.trades = new Map();
  state.candles = new Map();
  document.body.dataset.symbol = symbol;
  history.replaceState(null, "", `#${encodeURIComponent(symbol)}`);
  subscribeMarket();
  render();
}

function chooseInterval(interval) {
  if (interval === state.interval) return;
  send({ type: "unsubscribe", channel: "candles", symbol: state.symbol, interval: state.interval });
  state.interval = interval;
  state.candles = new Map();
  for (const button of document.querySelectorAll(".intervals button")) {
    button.setAttribute("aria-pressed", String(button.dataset.interval === interval));
  }
  send({ type: "subscribe", channel: "candles", symbol: state.symbol, interval });
  loadCandles().catch(warn);
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
  });
}

function change(ticker) {
  if (!ticker || ticker.change_24h === null) return { text: "—", kind: "" };
  const delta = Number(ticker.change_24h);
  const percent = Number(ticker.open_24h) ? (100 * delta) / Number(ticker.open_24h) : 0;
  const sign = delta > 0 ? "+" : "";
  return { text: `${sign}${ticker.change_24h} (${sign}${percent.toFixed(2)}%)`, kind: delta > 0 ? "up" : delta < 0 ? "down" : "" };
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
        button.innerHTML = '<span class="name"></span><span class="price"></span>';
        button.querySelector(".name").textContent = instrument.symbol;
        button.addEventListener("click", () => select(instrument.symbol));
        item.append(button);
        return item;
      }));
    }
    for (const button of list.querySelectorAll("button")) {
      const ticker = state.tickers.get(button.dataset.symbol);
      const price = button.querySelector(".price");
      price.textContent = ticker && ticker.last_price !== null ? ticker.last_price : "—";
      price.className = `price ${change(ticker).kind}`;
      button.setAttribute("aria-current", String(button.dataset.symbol === state.symbol));
    }
  }
}

function renderIndices() {
  const list = $("#indices");
  list.replaceChildren(...groups().map((group) => {
    const index = state.indices.get(group);
    const item = document.createElement("li");
    item.dataset.group = group;
    item.innerHTML = '<span class="name"></span><span class="value"></span><span class="meta"></span>';
    item.querySelector(".name").textContent = group;
    if (!index) {
      item.querySelector(".value").textContent = "—";
      item.querySelector(".meta").textContent = "not computed yet";
      return item;
    }
    item.dataset.at = index.at;
    item.dataset.stale = String(index.stale);
    const at = new Date(index.at).toTimeString().slice(0, 5);
    // Stale means no trade in 24 hours: no value is shown rather than an old one.
    item.querySelector(".value").textContent = index.stale ? "stale" : index.value;
    item.querySelector(".meta").textContent = index.stale
      ? `no trades in the 24 h to ${at}`
      : `${index.trades.toLocaleString("en")} trades · ${(index.volume_tokens / 1e6).toLocaleString("en")}M tokens · ${at}`;
    return item;
  }));
}

function renderTicker() {
  const instrument = state.instruments.find((i) => i.symbol === state.symbol);
  $("#symbol").textContent = state.symbol || "—";
  if (instrument) {
    $("#about").textContent = instrument.kind === "compute"
      ? `${instrument.model} · ${instrument.substitution_group} · quality ${instrument.quality} · ` +
        `${Number(instrument.tokens_per_lot).toLocaleString("en")} tokens per lot`
      : `${instrument.description} · ${instrument.grants} per token · ${instrument.license}`;
  }
  const ticker = state.tickers.get(state.symbol);
  const moved = change(ticker);
  $("#last").textContent = ticker && ticker.last_price !== null ? ticker.last_price : "—";
  $("#change").textContent = moved.text;
  $("#change").className = moved.kind;
  $("#high").textContent = ticker && ticker.high_24h !== null ? ticker.high_24h : "—";
  $("#low").textContent = ticker && ticker.low_24h !== null ? ticker.low_24h : "—";
  $("#volume").textContent = ticker ? `${ticker.volume_24h.toLocaleString("en")} lots` : "—";
  $("#seq").textContent = state.book ? state.book.seq : "—";
}

function ladderRows(levels, widest) {
  return levels.map(([price, qty]) => {
    const row = document.createElement("tr");
    row.dataset.price = price;
    row.style.setProperty("--depth", `${Math.round((100 * qty) / widest)}%`);
    const priceCell = document.createElement("td");
    priceCell.textContent = price;
    const qtyCell = document.createElement("td");
    qtyCell.textContent = qty.toLocaleString("en");
    row.append(priceCell, qtyCell);
    return row;
  });
}

function renderBook() {
  const ladder = $("#ladder");
  const book = state.book;
  if (!book) {
    ladder.dataset.seq = "";
    return;
  }
  const bids = sortedLevels(book.bids, true).slice(0, LADDER_DEPTH);
  const asks = sortedLevels(book.asks, false).slice(0, LADDER_DEPTH);
  const widest = Math.max(1, ...bids.map((l) => l[1]), ...asks.map((l) => l[1]));
  $("#asks").replaceChildren(...ladderRows(asks.slice().reverse(), widest));
  $("#bids").replaceChildren(...ladderRows(bids, widest));
  $("#spread").textContent = bids.length && asks.length
    ? `spread ${(Number(asks[0][0]) - Number(bids[0][0])).toFixed(6).replace(/\.?0+$/, "")}`
    : "—";
  ladder.dataset.seq = String(book.seq);
}

function renderTrades() {
  const trades = [...state.trades.values()].sort((a, b) => b.id - a.id).slice(0, TAPE_LENGTH);
  for (const id of [...state.trades.keys()]) {
    if (!trades.some((t) => t.id === id)) state.trades.delete(id);
  }
  $("#trades").replaceChildren(...trades.map((trade) => {
    const row = document.createElement("tr");
    row.dataset.id = String(trade.id);
    row.className = trade.side + (trade.fresh ? " fresh" : "");
    trade.fresh = false;
    const time = new Date(trade.ts / 1000).toLocaleTimeString("en-GB");
    for (const text of [time, trade.price, trade.qty.toLocaleString("en")]) {
      const cell = document.createElement("td");
      cell.textContent = text;
      row.append(cell);
    }
    return row;
  }));
}

function drawChart() {
  const canvas = $("#candles");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth || 720;
  const height = Math.round(width / 2);
  if (canvas.width !== Math.round(width * ratio)) {
    canvas.width = Math.round(width * ratio);
    canvas.height = Math.round(height * ratio);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  ctx.clearRect(0, 0, width, height);
  ctx.font = "11px system-ui, sans-serif";
  const bins = [...state.candles.entries()].sort((a, b) => a[0] - b[0]).slice(-CHART_BINS);
  const traded = bins.filter(([, c]) => c.volume > 0);
  canvas.dataset.bins = String(bins.length);
  canvas.dataset.traded = String(traded.length);
  if (!traded.length) {
    ctx.fillStyle = "#7d8a96";
    ctx.fillText(bins.length ? "no trades in this range" : "loading…", 12, 20);
    return;
  }
  const axis = 56;
  const volumeHeight = height * 0.18;
  const top = 10;
  const bottom = height - volumeHeight - 18;
  const high = Math.max(...traded.map(([, c]) => Number(c.high)));
  const low = Math.min(...traded.map(([, c]) => Number(c.low)));
  const pad = (high - low) * 0.08 || high * 0.01 || 1;
  const y = (price) => top + ((high + pad - price) / (high - low + 2 * pad)) * (bottom - top);
  const step = (width - axis - 8) / CHART_BINS;
  const x = (index) => 4 + (CHART_BINS - bins.length + index + 0.5) * step;
  const maxVolume = Math.max(...traded.map(([, c]) => c.volume));

  ctx.strokeStyle = "#26303a";
  ctx.fillStyle = "#7d8a96";
  ctx.lineWidth = 1;
  for (let i = 0; i <= 4; i++) {
    const price = low - pad + ((high - low + 2 * pad) * i) / 4;
    const at = Math.round(y(price)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(0, at);
    ctx.lineTo(width - axis, at);
    ctx.stroke();
    ctx.fillText(price.toFixed(price < 10 ? 3 : 2), width - axis + 4, at + 4);
  }
  bins.forEach(([start, candle], index) => {
    if (index % 15 === 0) {
      const label = new Date(start);
      const text = state.interval === "1d" ? label.toISOString().slice(5, 10) : label.toTimeString().slice(0, 5);
      ctx.fillStyle = "#7d8a96";
      ctx.fillText(text, Math.max(2, x(index) - 12), height - 4);
    }
    if (!candle.volume) return; // no trade: nothing to draw, nothing invented
    const open = Number(candle.open);
    const close = Number(candle.close);
    const colour = close >= open ? "#2fbf71" : "#e5534b";
    ctx.strokeStyle = colour;
    ctx.fillStyle = colour;
    ctx.beginPath();
    ctx.moveTo(Math.round(x(index)) + 0.5, y(Number(candle.high)));
    ctx.lineTo(Math.round(x(index)) + 0.5, y(Number(candle.low)));
    ctx.stroke();
    const body = Math.max(1, Math.abs(y(open) - y(close)));
    ctx.fillRect(x(index) - step * 0.35, Math.min(y(open), y(close)), step * 0.7, body);
    ctx.globalAlpha = 0.35;
    const bar = (candle.volume / maxVolume) * volumeHeight;
    ctx.fillRect(x(index) - step * 0.35, height - 16 - bar, step * 0.7, bar);
    ctx.globalAlpha = 1;
  });
}

// Start

for (const button of document.querySelectorAll(".intervals button")) {
  button.addEventListener("click", () => chooseInterval(button.dataset.interval));
}
window.addEventListener("resize", render);
loadInstruments()
  .then(() => loadIndices().catch(warn))
  .then(connect)
  .catch((error) => setStatus("reconnecting", `cannot load instruments: ${error.message}`));
