// planrun's charts: draws a report's `charts` data with uPlot, for report.html and the live
// dashboard alike (one page, one data shape). In the dashboard (PLANRUN_LIVE), the data is
// replaced from the server's event stream and everything is drawn again. Every chart drawn is
// counted in #charts[data-drawn] (and those expected in data-expected), and any script error in
// body[data-errors], so a browser test can tell a page that drew from one that did not.
(function () {
  "use strict";
  var errors = 0;
  window.addEventListener("error", function () {
    errors += 1;
    document.body.setAttribute("data-errors", String(errors));
  });
  var COLORS = ["#0969da", "#cf222e", "#1a7f37", "#9a6700", "#8250df", "#bf3989", "#57606a"];

  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text != null) e.textContent = text;
    return e;
  }

  var plots = [];

  // One chart of several lines over the same x (unix seconds); 1 if it drew a line with data.
  function chart(parent, title, unit, t, lines) {
    var box = el("div", "chart");
    parent.appendChild(box);
    var width = Math.max(320, Math.min(1060, parent.clientWidth || 1060));
    var opts = {
      title: title,
      width: width,
      height: 200,
      series: [{}].concat(lines.map(function (l, i) {
        return { label: l.label, stroke: COLORS[i % COLORS.length], width: 1.5, spanGaps: false };
      })),
      axes: [{}, { label: unit, size: 60 }],
      scales: { x: { time: true } },
    };
    var plot = new uPlot(opts, [t].concat(lines.map(function (l) { return l.values; })), box);
    plots.push(plot);
    var canvas = box.querySelector("canvas");
    var hasData = t.length > 0 && lines.some(function (l) { return l.values.some(function (v) { return v != null; }); });
    return plot && canvas && canvas.width > 0 && hasData ? 1 : 0;
  }

  // Memory lines (bytes) with their own x values, in MiB on one x axis (the union; missing
  // points are gaps).
  function aligned(lines) {
    var xs = {};
    lines.forEach(function (l) { l.t.forEach(function (x) { xs[x] = true; }); });
    var t = Object.keys(xs).map(Number).sort(function (a, b) { return a - b; });
    return {
      t: t,
      lines: lines.map(function (l) {
        var at = {};
        l.t.forEach(function (x, i) { at[x] = l.v[i]; });
        return { label: l.name, values: t.map(function (x) { return x in at ? at[x] / 1048576 : null; }) };
      }),
    };
  }

  function render(data) {
    var root = document.getElementById("charts");
    if (!root || !data || !data.charts) return;
    // uPlot keeps every plot it made until it is destroyed: the old ones go first.
    plots.forEach(function (p) { p.destroy(); });
    plots = [];
    root.textContent = "";
    var drawn = 0, expected = 0;
    data.charts.stages.forEach(function (s) {
      var sec = el("section", "stage-charts");
      sec.appendChild(el("h3", null, s.key));
      root.appendChild(sec);
      expected += s.users ? 3 : 2;
      drawn += chart(sec, "throughput and failures", "per second", s.t, [
        { label: "measured/s", values: s.throughput },
        { label: "failed/s", values: s.failures },
      ]);
      drawn += chart(sec, "latency", "ms", s.t, [
        { label: "p50", values: s.p50 },
        { label: "p95", values: s.p95 },
        { label: "p99", values: s.p99 },
      ]);
      if (s.users) drawn += chart(sec, "users", "running", s.t, [{ label: "users", values: s.users }]);
    });
    if (data.charts.memory && data.charts.memory.length) {
      expected += 1;
      var m = aligned(data.charts.memory);
      var mem = el("section", "run-charts");
      root.appendChild(mem);
      drawn += chart(mem, "memory", "MiB", m.t, m.lines);
    }
    if (data.charts.cost) {
      expected += 1;
      var c = el("section", "run-charts");
      root.appendChild(c);
      var lines = [{ label: "cost", values: data.charts.cost.v }];
      if (data.budget_usd != null) {
        lines.push({ label: "budget", values: data.charts.cost.t.map(function () { return data.budget_usd; }) });
      }
      drawn += chart(c, "cost accumulated", "USD", data.charts.cost.t, lines);
    }
    if (expected === 0) root.appendChild(el("p", null, "No measured events yet."));
    root.setAttribute("data-drawn", String(drawn));
    root.setAttribute("data-expected", String(expected));
  }

  function cell(row, text, cls) {
    var td = el("td", cls, text);
    row.appendChild(td);
  }

  // The dashboard's tables, from the same data (text only: nothing from the run becomes markup).
  function tables(data) {
    var crit = document.getElementById("criteria-rows");
    if (crit && data.criteria) {
      crit.textContent = "";
      data.criteria.forEach(function (c) {
        var tr = el("tr");
        cell(tr, c.check);
        cell(tr, c.scope);
        cell(tr, c.observed_text);
        cell(tr, c.op + " " + c.threshold_text);
        cell(tr, c.status, c.status);
        crit.appendChild(tr);
      });
    }
    var st = document.getElementById("stage-rows");
    if (st && data.stages) {
      st.textContent = "";
      data.stages.forEach(function (s) {
        var tr = el("tr");
        cell(tr, s.phase);
        cell(tr, s.stage);
        cell(tr, s.driver);
        cell(tr, s.status, s.ok ? "pass" : "fail");
        cell(tr, s.duration_ms == null ? "" : (s.duration_ms / 1000).toFixed(1) + " s");
        cell(tr, String(s.events));
        st.appendChild(tr);
      });
    }
    var metrics = document.getElementById("metric-rows");
    if (metrics && data.metrics_stages) {
      metrics.textContent = "";
      data.metrics_stages.forEach(function (m) {
        var tr = el("tr");
        cell(tr, m.phase + "/" + m.stage);
        cell(tr, String(m.count));
        cell(tr, String(m.failed));
        cell(tr, m.success_rate == null ? "" : (m.success_rate * 100).toFixed(1) + "%");
        cell(tr, m.throughput == null ? "" : Number(m.throughput).toFixed(1));
        cell(tr, m.latency_p50 == null ? "" : Number(m.latency_p50).toFixed(1));
        cell(tr, m.latency_p95 == null ? "" : Number(m.latency_p95).toFixed(1));
        cell(tr, m.latency_p99 == null ? "" : Number(m.latency_p99).toFixed(1));
        metrics.appendChild(tr);
      });
    }
    var names = document.getElementById("name-rows");
    var f1 = function (x) { return x == null ? "" : Number(x).toFixed(1); };
    if (names && data.names) {
      names.textContent = "";
      data.names.forEach(function (m) {
        var tr = el("tr");
        cell(tr, m.phase + "/" + m.stage);
        cell(tr, m.kind);
        cell(tr, m.name);
        cell(tr, String(m.count));
        cell(tr, String(m.failed));
        cell(tr, f1(m.latency_p50));
        cell(tr, f1(m.latency_p95));
        cell(tr, f1(m.latency_p99));
        names.appendChild(tr);
      });
    }
    var v = document.getElementById("verdict");
    if (v && data.verdict) {
      v.textContent = data.verdict.label;
      v.className = data.verdict.label;
    }
  }

  window.planrunCharts = { render: render, tables: tables };
  render(window.PLANRUN_DATA);
  if (window.PLANRUN_LIVE && window.EventSource) {
    // `?updates=N` stops listening after N updates (a screenshot, a kiosk that reloads).
    var most = Number(new URLSearchParams(window.location.search).get("updates") || 0);
    var es = new EventSource("events");
    var updates = 0;
    es.onmessage = function (m) {
      var d = JSON.parse(m.data);
      window.PLANRUN_DATA = d;
      render(d);
      tables(d);
      updates += 1;
      document.body.setAttribute("data-updates", String(updates));
      if (most && updates >= most) es.close();
    };
  }
})();
