"use strict";
// The market watch's charts, drawn by TradingView's Lightweight Charts (vendor/, served by tokex): the candle
// chart of the instrument shown, and a small line per price index. Times on the axes are the viewer's local
// time; the library counts in UTC seconds.

const COLOURS = {
  text: "#8a94a1", grid: "#1c222a", line: "#252b33", panel: "#14181d",
  up: "#16c784", down: "#ea3943", upShade: "rgba(22, 199, 132, .35)", downShade: "rgba(234, 57, 67, .35)",
  accent: "#4aa3ff",
};

function tickMark(time, kind) {
  const date = new Date(time * 1000);
  switch (kind) {
    case 0: return String(date.getFullYear());
    case 1: return date.toLocaleDateString("en-GB", { month: "short" });
    case 2: return date.toLocaleDateString("en-GB", { day: "numeric", month: "short" });
    case 4: return clockTime(date);
    default: return shortTime(date);
  }
}

function crosshairTime(time) {
  const date = new Date(time * 1000);
  return `${date.toLocaleDateString("en-GB", { day: "numeric", month: "short" })} ${shortTime(date)}`;
}

function baseOptions() {
  return {
    autoSize: true,
    layout: {
      background: { type: "solid", color: COLOURS.panel }, textColor: COLOURS.text, fontSize: 11,
      fontFamily: "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif",
      // The attribution the licence asks for is in the page's footer; the library's own logo needs inline CSS.
      attributionLogo: false,
    },
    localization: { locale: "en-GB", timeFormatter: crosshairTime },
  };
}

// The candle chart in `box`; `onHover(bar)` gets the bar under the crosshair, or null when it leaves.
function candleChart(box, onHover) {
  const charts = window.LightweightCharts;
  const chart = charts.createChart(box, {
    ...baseOptions(),
    grid: { vertLines: { color: COLOURS.grid }, horzLines: { color: COLOURS.grid } },
    rightPriceScale: { borderColor: COLOURS.line, scaleMargins: { top: 0.08, bottom: 0.24 } },
    timeScale: {
      borderColor: COLOURS.line, timeVisible: true, secondsVisible: false, rightOffset: 6, barSpacing: 9,
      tickMarkFormatter: tickMark,
    },
    crosshair: { mode: charts.CrosshairMode.Normal },
    // A finger moving up or down scrolls the page; sideways it pans the chart.
    handleScroll: { vertTouchDrag: false },
  });
  const candles = chart.addSeries(charts.CandlestickSeries, {
    upColor: COLOURS.up, downColor: COLOURS.down, wickUpColor: COLOURS.up, wickDownColor: COLOURS.down,
    borderVisible: false,
  });
  const volume = chart.addSeries(charts.HistogramSeries, {
    priceScaleId: "volume", priceFormat: { type: "volume" }, lastValueVisible: false, priceLineVisible: false,
  });
  chart.priceScale("volume").applyOptions({ scaleMargins: { top: 0.82, bottom: 0 } });
  chart.subscribeCrosshairMove((point) => {
    const bar = point.time === undefined ? null : point.seriesData.get(candles);
    onHover(bar && bar.open !== undefined ? bar : null);
  });
  return { chart, candles, volume };
}

// The bars of one REST or feed candle: a bin without trades is whitespace, so the time axis keeps its spacing.
function candleBars(candle) {
  const time = Date.parse(candle.start) / 1000;
  if (!candle.volume) return { bar: { time }, volume: { time } };
  const open = Number(candle.open);
  const close = Number(candle.close);
  return {
    bar: { time, open, high: Number(candle.high), low: Number(candle.low), close },
    volume: { time, value: candle.volume, color: close >= open ? COLOURS.upShade : COLOURS.downShade },
  };
}

function setPriceFormat(series, tick) {
  series.applyOptions({ priceFormat: { type: "price", precision: decimalsOf(tick), minMove: Number(tick) } });
}

// A small line of one index's history in `box`.
function indexChart(box) {
  const charts = window.LightweightCharts;
  const chart = charts.createChart(box, {
    ...baseOptions(),
    layout: { ...baseOptions().layout, fontSize: 10 },
    grid: { vertLines: { visible: false }, horzLines: { color: COLOURS.grid } },
    rightPriceScale: { borderVisible: false, scaleMargins: { top: 0.15, bottom: 0.1 } },
    timeScale: { borderVisible: false, tickMarkFormatter: (time) => shortTime(new Date(time * 1000)) },
    crosshair: { horzLine: { visible: false, labelVisible: false } },
    handleScroll: false,
    handleScale: false,
  });
  const line = chart.addSeries(charts.AreaSeries, {
    lineColor: COLOURS.accent, lineWidth: 2, topColor: "rgba(74, 163, 255, .28)", bottomColor: "rgba(74, 163, 255, 0)",
    priceFormat: { type: "price", precision: 4, minMove: 0.0001 }, priceLineVisible: false,
  });
  return { chart, line };
}

// One index value as a point of its line; a stale minute (no trade in 24 h) is a gap.
function indexPoint(index) {
  const time = Date.parse(index.at) / 1000;
  return index.stale ? { time } : { time, value: Number(index.value) };
}
