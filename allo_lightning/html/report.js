/* allo_lightning report page script: sortable tables, and for predict pages the per-protein view
   (3-D structure by 3Dmol.js, sequence track, tables) loaded lazily from report_files/proteins/<name>.js.
   Data only ever reaches the page through textContent / setAttribute: never as HTML. */
(function () {
  "use strict";
  var DATA = JSON.parse(document.getElementById("allo-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var state = { protein: null, focused: null, viewer: null, views: [], loaded: {}, errors: [],
                timings: { start: performance.now() } };
  window.alloReport = state;  // read by the browser test

  function el(tag, attrs, text) {
    var e = document.createElement(tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function sv(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    if (attrs) { Object.keys(attrs).forEach(function (k) { e.setAttribute(k, String(attrs[k])); }); }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function fmt(v, d) { return (v === null || v === undefined || !isFinite(v)) ? "" : Number(v).toFixed(d === undefined ? 3 : d); }

  // -- sortable tables ------------------------------------------------------------------------
  function sortable(table) {
    var ths = table.querySelectorAll("thead th");
    ths.forEach(function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows);
        var asc = th.getAttribute("data-sort") !== "asc";
        ths.forEach(function (t) { t.removeAttribute("data-sort"); });
        th.setAttribute("data-sort", asc ? "asc" : "desc");
        function val(r) {
          var c = r.cells[col]; if (!c) { return ""; }
          var v = c.getAttribute("data-v");
          if (v !== null && v !== "" && !isNaN(Number(v))) { return Number(v); }
          return c.textContent;
        }
        rows.sort(function (a, b) {
          var x = val(a), y = val(b), r;
          if (typeof x === "number" && typeof y === "number") { r = x - y; }
          else { r = String(x).localeCompare(String(y), undefined, { numeric: true }); }
          return asc ? r : -r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }
  function cell(tr, v, digits) {
    var td;
    if (typeof v === "number") { td = el("td", { "class": "num", "data-v": v }, Number.isInteger(v) ? v : fmt(v, digits)); }
    else { td = el("td", null, v === null || v === undefined ? "" : v); }
    tr.appendChild(td);
    return td;
  }
  function buildTable(header, rows, numeric, onClick, caption) {
    var t = el("table", { "class": "sortable" });
    if (caption) { t.appendChild(el("caption", null, caption)); }
    var thead = el("thead"), tr = el("tr");
    header.forEach(function (h, i) { tr.appendChild(el("th", numeric.indexOf(i) >= 0 ? { "class": "num" } : null, h)); });
    thead.appendChild(tr); t.appendChild(thead);
    var body = el("tbody");
    rows.forEach(function (row) {
      var r = el("tr", onClick ? { "class": "clickable" } : null);
      row.cells.forEach(function (v) { cell(r, v); });
      if (onClick) { r.addEventListener("click", function () { onClick(row); }); }
      body.appendChild(r);
    });
    t.appendChild(body);
    sortable(t);
    return t;
  }
  document.querySelectorAll("table.sortable").forEach(sortable);

  // tooltips on SVG charts drawn in Python: <g data-tip="...">
  var tip = el("div", { "class": "tip" });
  document.body.appendChild(tip);
  function showTip(text, ev) {
    tip.textContent = text; tip.style.display = "block";
    tip.style.left = (ev.clientX + 12) + "px"; tip.style.top = (ev.clientY + 12) + "px";
  }
  function hideTip() { tip.style.display = "none"; }
  document.querySelectorAll("[data-tip]").forEach(function (g) {
    g.addEventListener("mousemove", function (ev) { showTip(g.getAttribute("data-tip"), ev); });
    g.addEventListener("mouseleave", hideTip);
  });

  if (DATA.kind !== "predict") { state.ready = true; return; }

  // -- predict: one protein at a time, loaded on demand ---------------------------------------
  var panel = document.getElementById("protein");
  var index = document.getElementById("protein-index");
  window.alloProtein = function (d) {
    state.loaded[d.file] = d;
    state.timings.data = performance.now();
    if (state.pending === d.file) { show(d); }
  };
  function load(i) {
    var entry = DATA.proteins[i];
    if (!entry) { return; }
    if (index) {
      index.querySelectorAll("tr.current").forEach(function (r) { r.classList.remove("current"); });
      var row = index.querySelector('tr[data-i="' + i + '"]');
      if (row) { row.classList.add("current"); }
    }
    state.pending = entry.file;
    if (state.loaded[entry.file]) { show(state.loaded[entry.file]); return; }
    var s = document.createElement("script");
    s.src = DATA.files_dir + "/proteins/" + encodeURIComponent(entry.file) + ".js";
    s.onerror = function () {
      panel.textContent = "";
      panel.appendChild(el("p", { "class": "warn" }, "Could not load the data of " + entry.id + " (" + s.src +
        "): keep report.html next to its folder " + DATA.files_dir + "/."));
    };
    document.head.appendChild(s);
  }
  if (index) {
    index.querySelectorAll("tr[data-i]").forEach(function (r) {
      r.classList.add("clickable");
      r.addEventListener("click", function () { load(Number(r.getAttribute("data-i"))); });
    });
  }

  function key(chain, resi, icode) { return chain + "|" + resi + "|" + String(icode || "").trim(); }

  function show(d) {
    state.protein = d; state.focused = null; state.views = [];
    if (state.viewer) { try { state.viewer.clear(); } catch (e) { /* a new viewer replaces it */ } }
    state.viewer = null;
    panel.textContent = "";
    panel.appendChild(el("h2", null, d.id));
    d.notes.forEach(function (n) { panel.appendChild(el("p", { "class": "muted small" }, n)); });
    var status = el("div", { "class": "status", id: "focus-status" }, "Click a residue in the track, a table or the structure.");
    // structure
    var scoreOf = {}, posOf = {};
    var n = d.scores.length;
    var order = d.scores.map(function (v, i) { return i; }).sort(function (a, b) { return d.scores[a] - d.scores[b]; });
    var pct = new Array(n);
    order.forEach(function (i, r) { pct[i] = n > 1 ? r / (n - 1) : 1; });
    d.mapping.forEach(function (m, i) { if (m) { var k = key(m[0], m[1], m[2]); scoreOf[k] = pct[i]; posOf[k] = i + 1; } });
    var sticks = {};
    d.sticks.forEach(function (p) { var m = d.mapping[p - 1]; if (m) { sticks[key(m[0], m[1], m[2])] = true; } });
    function atomKey(a) { return key(a.chain, a.resi, a.icode); }
    function colour(a) {
      var v = scoreOf[atomKey(a)];
      if (v === undefined) { return "#c8c8c8"; }
      var g = Math.round(255 * (1 - v)); // white (lowest) -> red (highest), within-protein percentile
      return "rgb(255," + g + "," + g + ")";
    }
    var viewerDiv = null;
    if (d.structure) {
      panel.appendChild(el("h3", null, "Structure: " + d.structure.name));
      viewerDiv = el("div", { id: "viewer" });
      panel.appendChild(viewerDiv);
      var lg = el("div", { "class": "legend" });
      lg.appendChild(document.createTextNode("Cartoon colour = the residue's percentile of score within this protein:"));
      lg.appendChild(el("span", { "class": "sw", style: "background:#fff" })); lg.appendChild(document.createTextNode("lowest"));
      lg.appendChild(el("span", { "class": "sw", style: "background:#ff0000" })); lg.appendChild(document.createTextNode("highest"));
      lg.appendChild(el("span", { "class": "sw", style: "background:#c8c8c8" })); lg.appendChild(document.createTextNode("not this protein / unmapped;"));
      lg.appendChild(document.createTextNode(" sticks: top residues and predicted sites (orange carbons), ligands (green carbons)."));
      panel.appendChild(lg);
    } else {
      panel.appendChild(el("p", { "class": "muted" }, "No structure for this protein (predict --structure gives one): sequence view only."));
    }
    panel.appendChild(status);
    // track
    panel.appendChild(el("h3", null, "Sequence track"));
    var trackBox = el("div", { "class": "track" });
    panel.appendChild(trackBox);
    var tl = el("div", { "class": "legend" });
    tl.appendChild(document.createTextNode("bars: score (red: at or above the threshold " + fmt(d.threshold) + ", dashed line); rows below: known sites, windows, structure segments"));
    panel.appendChild(tl);
    var track = drawTrack(d, trackBox);
    // tables
    var cols = el("div", { "class": "cols" });
    var left = el("div"), right = el("div");
    cols.appendChild(left); cols.appendChild(right); panel.appendChild(cols);
    left.appendChild(el("h3", null, "Top residues"));
    var topHeader = ["rank", "position", "residue", "score"].concat(d.probability ? ["probability"] : [])
      .concat(["predicted", "known site", "structure residue"]);
    var topRows = d.top.map(function (p) {
      var i = p - 1, m = d.mapping[i];
      return { pos: p, cells: [d.rank[i], p, d.sequence[i], d.scores[i]].concat(d.probability ? [d.probability[i]] : [])
        .concat([d.scores[i] >= d.threshold ? "yes" : "no", d.known[i] ? "yes" : "", m ? m[0] + ":" + m[1] + (m[2] || "") : ""]) };
    });
    var wrapTop = el("div", { "class": "scroll" });
    wrapTop.appendChild(buildTable(topHeader, topRows, [0, 1, 3, 4], function (r) { focus(r.pos); }));
    left.appendChild(wrapTop);
    right.appendChild(el("h3", null, "Predicted sites"));
    right.appendChild(el("p", { "class": "muted small" }, d.sites_rule));
    var siteRows = d.sites.map(function (s) {
      return { pos: s.positions[0], all: s.positions, cells: [s.rank, s.label, s.positions.length, s.score, s.structure || "", s.judged || ""] };
    });
    var wrapSites = el("div", { "class": "scroll" });
    wrapSites.appendChild(buildTable(["rank", "positions", "n", "score", "residues", "known site"], siteRows, [0, 2, 3],
      function (r) { focus(r.pos, r.all); }));
    right.appendChild(wrapSites);
    if (d.segments && d.segments.length) {
      panel.appendChild(el("p", { "class": "small" }, "Mapped structure segments: " + d.segments.map(function (s) {
        return s.chain + ":" + s.start + "-" + s.end + " (positions " + s.first + "-" + s.last + ")"; }).join(", ")));
    }

    if (d.structure) {
      if (typeof $3Dmol === "undefined") {
        viewerDiv.appendChild(el("p", { "class": "warn" }, "The 3-D viewer (" + DATA.files_dir + "/3Dmol-min.js) did not load."));
      } else {
        var viewer = $3Dmol.createViewer(viewerDiv, { backgroundColor: "white" });
        state.viewer = viewer;
        viewer.addModel(d.structure.text, d.structure.format);
        var styled = function (extra) {
          viewer.setStyle({}, { cartoon: { colorfunc: colour } });
          viewer.addStyle({ hetflag: true, not: { resn: ["HOH", "WAT", "DOD"] } }, { stick: { colorscheme: "greenCarbon", radius: 0.2 } });
          viewer.addStyle({ predicate: function (a) { return !a.hetflag && sticks[atomKey(a)] === true; } },
            { stick: { colorscheme: "orangeCarbon", radius: 0.2 } });
          if (extra) { viewer.addStyle({ predicate: function (a) { return extra[atomKey(a)] === true; } }, { stick: { colorscheme: "magentaCarbon", radius: 0.3 } }); }
        };
        state.styled = styled;
        styled(null);
        viewer.setClickable({}, true, function (atom) {
          var p = posOf[atomKey(atom)];
          if (p) { focus(p); } else { status.textContent = "Residue " + atom.resn + " " + atom.chain + ":" + atom.resi + " is not part of " + d.id + "."; }
        });
        var mapped = {};
        Object.keys(posOf).forEach(function (k) { mapped[k] = true; });
        state.timings.model = performance.now();
        viewer.zoomTo({ predicate: function (a) { return mapped[atomKey(a)] === true; } });
        viewer.render();
        state.timings.drawn = performance.now();
        state.views.push(viewer.getView());
      }
    }

    function focus(pos, group) {
      var i = pos - 1, m = d.mapping[i];
      state.focused = pos;
      track.mark(pos);
      var text = d.sequence[i] + pos + ": score " + fmt(d.scores[i]) + ", rank " + d.rank[i] + " of " + n;
      if (d.probability) { text += ", probability " + fmt(d.probability[i]); }
      if (d.known[i]) { text += ", known site"; }
      text += m ? "; structure " + m[0] + ":" + m[1] + (m[2] || "") : "; not in the structure";
      status.textContent = text;
      var viewer = state.viewer;
      if (!viewer || !m) { return; }
      var keys = {};
      (group || [pos]).forEach(function (p) { var mm = d.mapping[p - 1]; if (mm) { keys[key(mm[0], mm[1], mm[2])] = true; } });
      state.styled(keys);
      viewer.removeAllLabels();
      var sel = { predicate: function (a) { return keys[atomKey(a)] === true; } };
      viewer.addLabel(d.sequence[i] + pos + " (" + m[0] + ":" + m[1] + (m[2] || "") + ")",
        { backgroundColor: "black", fontColor: "white", fontSize: 12, backgroundOpacity: 0.7 },
        { predicate: function (a) { return atomKey(a) === key(m[0], m[1], m[2]) && a.atom === "CA"; } });
      viewer.zoomTo(sel);
      viewer.zoom(0.6);
      viewer.render();
      state.views.push(viewer.getView());
    }
    state.focus = focus;
    track.onclick = focus;
    state.timings.shown = performance.now();
    state.ready = true;
  }

  function drawTrack(d, box) {
    var n = d.scores.length, px = Math.max(2, Math.min(14, 1080 / n)), W = Math.ceil(n * px) + 50, H = 150;
    var top = 8, barH = 70, base = top + barH;
    var lo = Math.min.apply(null, d.scores.concat([d.threshold])), hi = Math.max.apply(null, d.scores.concat([d.threshold]));
    if (hi - lo < 1e-9) { hi = lo + 1; }
    function y(v) { return base - (v - lo) / (hi - lo) * barH; }
    var svg = sv("svg", { width: W, height: H, viewBox: "0 0 " + W + " " + H, role: "img" });
    var x0 = 64;
    svg.appendChild(sv("text", { x: 2, y: top + 8 }, fmt(hi, 2)));
    svg.appendChild(sv("text", { x: 2, y: base }, fmt(lo, 2)));
    var bars = sv("g");
    d.scores.forEach(function (v, i) {
      bars.appendChild(sv("rect", { x: x0 + i * px, y: y(v), width: Math.max(px - 0.5, 0.5), height: base - y(v),
        fill: v >= d.threshold ? "#d62728" : "#7f9fbf" }));
    });
    svg.appendChild(bars);
    svg.appendChild(sv("line", { x1: x0, x2: x0 + n * px, y1: y(d.threshold), y2: y(d.threshold), stroke: "#333", "stroke-dasharray": "4 3" }));
    var rows = [["sites", base + 6], ["windows", base + 20], ["structure", base + 34]];
    rows.forEach(function (r) { svg.appendChild(sv("text", { x: 2, y: r[1] + 9 }, r[0])); });
    var g = sv("g");
    d.known.forEach(function (k, i) { if (k) { g.appendChild(sv("rect", { x: x0 + i * px, y: rows[0][1], width: Math.max(px, 1), height: 10, fill: "#000" })); } });
    (d.windows || []).forEach(function (w, j) {
      g.appendChild(sv("rect", { x: x0 + (w[0] - 1) * px, y: rows[1][1] + (j % 2) * 5, width: (w[1] - w[0] + 1) * px, height: 5, fill: "#9467bd", opacity: 0.7 }));
    });
    (d.segments || []).forEach(function (s) {
      g.appendChild(sv("rect", { x: x0 + (s.first - 1) * px, y: rows[2][1], width: (s.last - s.first + 1) * px, height: 10, fill: "#2ca02c", opacity: 0.8 }));
    });
    svg.appendChild(g);
    var step = n > 1000 ? 200 : n > 400 ? 100 : n > 100 ? 50 : 10;
    for (var p = step; p <= n; p += step) {
      svg.appendChild(sv("line", { x1: x0 + (p - 0.5) * px, x2: x0 + (p - 0.5) * px, y1: base + 46, y2: base + 50, stroke: "#555" }));
      svg.appendChild(sv("text", { x: x0 + (p - 0.5) * px - 8, y: base + 62 }, p));
    }
    var marker = sv("rect", { x: -10, y: top, width: Math.max(px, 2), height: base + 46 - top, fill: "none", stroke: "#1f4fff", "stroke-width": 2 });
    svg.appendChild(marker);
    box.appendChild(svg);
    var api = { onclick: null };
    function posAt(ev) {
      var r = svg.getBoundingClientRect();
      var p = Math.floor((ev.clientX - r.left - x0) / px) + 1;
      return p >= 1 && p <= n ? p : null;
    }
    svg.addEventListener("mousemove", function (ev) {
      var p = posAt(ev);
      if (!p) { hideTip(); return; }
      var m = d.mapping[p - 1];
      showTip(d.sequence[p - 1] + p + "  score " + fmt(d.scores[p - 1]) + "  rank " + d.rank[p - 1] +
        (d.known[p - 1] ? "  known site" : "") + (m ? "  " + m[0] + ":" + m[1] + (m[2] || "") : ""), ev);
    });
    svg.addEventListener("mouseleave", hideTip);
    svg.addEventListener("click", function (ev) { var p = posAt(ev); if (p && api.onclick) { api.onclick(p); } });
    api.mark = function (p) { marker.setAttribute("x", x0 + (p - 1) * px); };
    api.x = function (p) { return x0 + (p - 0.5) * px; };
    state.track = api;
    return api;
  }

  var start = DATA.start || 0;
  if (DATA.proteins.length) { load(start); } else { state.ready = true; }
})();
