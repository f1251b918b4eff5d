// The live wall's cards (callsense.dashboard.live): one element a call, rebuilt only when the
// server sends a new view of it, otherwise moved into place. Returns what is drawn
// ({call: digest}), which the server diffs its next update against.
(function () {
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = text; }
    return e;
  }
  function badge(text, kind) { return el("span", "badge badge-" + kind, text); }

  function card(v, d) {
    var c = el("div", "call-card" + (v.alerts.length ? " has-alert" : ""));
    c.setAttribute("data-call", v.call_id);
    c.setAttribute("data-windows", String(v.windows));
    c.setAttribute("data-digest", d);
    var top = el("div");
    var link = el("a", "call-link", v.call_id);
    link.href = "/call/" + encodeURIComponent(v.call_id);
    top.append(link, badge(v.status, "status"), el("span", "muted", "  " + v.time));
    c.append(top, el("div", "muted", v.who));
    var row = el("div", "card-row"), table = el("table", "speakers"), body = el("tbody");
    v.speakers.forEach(function (s) {
      var tr = el("tr"), emo = el("td", "emotion" + (s.uncertain ? " uncertain" : ""));
      var sw = el("span", "swatch", "●");
      sw.style.color = s.color;
      emo.append(sw, document.createTextNode(s.label));
      tr.append(el("td", null, s.role), el("td", "muted", s.speaker), emo,
                el("td", null, s.confidence));
      body.append(tr);
    });
    table.append(body);
    var spark = el("div"), img = el("img", "spark");
    img.src = v.spark;
    img.alt = "P(angry)";
    spark.append(img, el("div", "spark-caption", "P(angry), last 3 min"));
    row.append(table, spark);
    var alerts = el("div", "alerts");
    v.alerts.forEach(function (a) {
      var item = el("div", "alert-item");
      item.setAttribute("data-alert", a.id);
      item.setAttribute("data-rule", a.rule);
      var ack;
      if (a.ack.kind === "button") {
        ack = el("button", "ack-btn", a.ack.text);
        ack.setAttribute("data-ack", a.id);
      } else {
        ack = el("span", a.ack.kind, a.ack.text);
      }
      item.append(badge(a.severity, a.severity), badge(a.status, "status"),
                  el("span", "alert-msg", " " + a.rule + ": " + a.message + " "), ack);
      alerts.append(item);
    });
    c.append(row, alerts);
    return c;
  }

  function wall() { return document.getElementById("live-calls"); }

  function renderWall(data) {
    var root = wall();
    if (!root || !data) { return window.dash_clientside.no_update; }
    var have = {};
    Array.prototype.forEach.call(root.children, function (c) {
      have[c.getAttribute("data-call")] = c;
    });
    var drawn = {}, keep = {};
    data.order.forEach(function (pair, i) {
      var id = pair[0], d = pair[1], node = have[id];
      var view = data.cards[id];
      if (view) {
        var fresh = card(view, d);
        if (node) { root.replaceChild(fresh, node); } else { root.appendChild(fresh); }
        node = fresh;
      }
      if (!node) { return; }  // neither drawn nor sent: the next update sends it
      if (root.children[i] !== node) { root.insertBefore(node, root.children[i] || null); }
      keep[id] = true;
      drawn[id] = node.getAttribute("data-digest");
    });
    Object.keys(have).forEach(function (id) {
      if (!keep[id] && have[id].parentNode === root) { root.removeChild(have[id]); }
    });
    return drawn;
  }

  // a card's links navigate inside the app; its Acknowledge buttons go to the server
  document.addEventListener("click", function (e) {
    var root = wall();
    if (!root || !root.contains(e.target)) { return; }
    var btn = e.target.closest("[data-ack]");
    if (btn) {
      btn.disabled = true;
      window.dash_clientside.set_props("live-ack", {data: {alert: btn.getAttribute("data-ack"),
                                                           at: Date.now()}});
      return;
    }
    var link = e.target.closest("a.call-link");
    if (link && !(e.ctrlKey || e.metaKey || e.shiftKey || e.button)) {
      e.preventDefault();
      window.history.pushState({}, "", link.getAttribute("href"));
      window.dispatchEvent(new PopStateEvent("popstate", {}));
    }
  });

  window.dash_clientside = Object.assign({}, window.dash_clientside);
  window.dash_clientside.callsense = Object.assign({}, window.dash_clientside.callsense,
                                                   {renderWall: renderWall});
})();
