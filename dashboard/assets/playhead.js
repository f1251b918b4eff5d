// The call page's recording and its timeline move together: a line on the timeline follows
// playback, and a click on the timeline moves playback there.
(function () {
  function graph() { return document.querySelector("#call-graph .js-plotly-plot"); }
  function audio() { return document.getElementById("call-audio"); }
  function place(t) {
    var g = graph();
    if (!g || !window.Plotly || !g.layout) { return; }
    var shapes = (g.layout.shapes || []).filter(function (s) { return s.name !== "playhead"; });
    shapes.push({type: "line", name: "playhead", xref: "x", yref: "paper", x0: t, x1: t,
                 y0: 0, y1: 1, line: {color: "#000000", width: 1.5}});
    window.Plotly.relayout(g, {shapes: shapes});
  }
  ["timeupdate", "seeked"].forEach(function (kind) {
    document.addEventListener(kind, function (e) {
      if (e.target && e.target.id === "call-audio") { place(e.target.currentTime); }
    }, true);  // media events do not bubble: listen while they go down
  });
  setInterval(function () {
    var g = graph(), a = audio();
    if (g && a && g.on && !g.__callsenseSeek) {
      g.__callsenseSeek = true;
      g.on("plotly_click", function (d) {
        if (d && d.points && d.points.length) { a.currentTime = Number(d.points[0].x); }
      });
    }
  }, 500);
})();
