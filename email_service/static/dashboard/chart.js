/* A small SVG chart of daily activity: sent as bars, opens, clicks and replies as lines.
 * Our own code (no chart library): it draws what the timeline API returns, nothing more.
 * Colours come from the stylesheet (classes), so the Content-Security-Policy needs no inline style.
 */
(function () {
  "use strict";
  var Oree = window.Oree;
  var SVG = "http://www.w3.org/2000/svg";

  function svg(tag, attrs) {
    var node = document.createElementNS(SVG, tag);
    Object.keys(attrs || {}).forEach(function (key) {
      node.setAttribute(key, String(attrs[key]));
    });
    return node;
  }

  /* A round axis maximum and step: 0, step, 2·step … ≥ max, with 3–5 gridlines. */
  function niceScale(max) {
    if (max <= 4) return { max: 4, step: 1 };
    var rough = max / 4;
    var power = Math.pow(10, Math.floor(Math.log10(rough)));
    var step = [1, 2, 2.5, 5, 10]
      .map(function (m) {
        return m * power;
      })
      .filter(function (s) {
        return s >= rough && (s >= 1 || s === Math.round(s));
      })[0];
    step = Math.max(1, Math.ceil(step));
    return { max: Math.ceil(max / step) * step, step: step };
  }

  function parseDay(value) {
    var parts = String(value).split("-");
    return new Date(Number(parts[0]), Number(parts[1]) - 1, Number(parts[2]));
  }

  var shortDate = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric" });
  var longDate = new Intl.DateTimeFormat(undefined, { weekday: "short", month: "short", day: "numeric", year: "numeric" });

  /* Draws `days` ([{date, sent, opens, clicks, replies}]) into `container`; redraws on resize. */
  Oree.timelineChart = function (container, days, series) {
    var state = { active: -1 };

    function draw() {
      Oree.clear(container);
      var width = Math.max(280, container.clientWidth || 600);
      var height = width < 520 ? 220 : 300;
      var margin = { top: 14, right: 12, bottom: 30, left: 44 };
      var plotW = width - margin.left - margin.right;
      var plotH = height - margin.top - margin.bottom;
      var n = days.length;
      var max = 0;
      days.forEach(function (day) {
        series.forEach(function (s) {
          max = Math.max(max, Number(day[s.key]) || 0);
        });
      });
      var scale = niceScale(max);
      var slot = n ? plotW / n : plotW;
      var x = function (i) {
        return margin.left + slot * i + slot / 2;
      };
      var y = function (v) {
        return margin.top + plotH - (plotH * v) / scale.max;
      };

      var root = svg("svg", {
        width: width,
        height: height,
        viewBox: "0 0 " + width + " " + height,
        class: "chart-svg",
        "aria-hidden": "true",
        focusable: "false",
      });

      for (var v = 0; v <= scale.max; v += scale.step) {
        root.appendChild(svg("line", { x1: margin.left, x2: width - margin.right, y1: y(v), y2: y(v), class: v === 0 ? "axis" : "grid" }));
        var label = svg("text", { x: margin.left - 8, y: y(v) + 4, class: "tick tick-y" });
        label.textContent = Oree.number(v);
        root.appendChild(label);
      }

      var labelEvery = Math.max(1, Math.ceil(n / Math.max(2, Math.floor(plotW / 78))));
      days.forEach(function (day, i) {
        if ((n - 1 - i) % labelEvery !== 0) return;
        var text = svg("text", { x: x(i), y: height - 8, class: "tick tick-x" });
        text.textContent = shortDate.format(parseDay(day.date));
        root.appendChild(text);
      });

      series.forEach(function (s) {
        if (s.kind === "bar") {
          var barW = Math.max(2, Math.min(28, slot * 0.62));
          days.forEach(function (day, i) {
            var value = Number(day[s.key]) || 0;
            if (!value) return;
            root.appendChild(
              svg("rect", { x: x(i) - barW / 2, y: y(value), width: barW, height: Math.max(1, y(0) - y(value)), rx: Math.min(3, barW / 3), class: "bar " + s.className })
            );
          });
        }
      });
      series.forEach(function (s) {
        if (s.kind !== "line" || !n) return;
        var d = days
          .map(function (day, i) {
            return (i ? "L" : "M") + x(i).toFixed(1) + "," + y(Number(day[s.key]) || 0).toFixed(1);
          })
          .join(" ");
        root.appendChild(svg("path", { d: d, class: "line " + s.className }));
        if (slot >= 14) {
          days.forEach(function (day, i) {
            root.appendChild(svg("circle", { cx: x(i), cy: y(Number(day[s.key]) || 0), r: 2.6, class: "dot " + s.className }));
          });
        }
      });

      var guide = svg("line", { x1: 0, x2: 0, y1: margin.top, y2: margin.top + plotH, class: "guide", visibility: "hidden" });
      root.appendChild(guide);
      container.appendChild(root);

      var tip = Oree.el("div", { className: "chart-tip", hidden: true });
      container.appendChild(tip);

      function show(i) {
        if (i < 0 || i >= n) {
          guide.setAttribute("visibility", "hidden");
          tip.hidden = true;
          return;
        }
        state.active = i;
        var day = days[i];
        guide.setAttribute("x1", x(i));
        guide.setAttribute("x2", x(i));
        guide.setAttribute("visibility", "visible");
        Oree.clear(tip);
        tip.appendChild(Oree.el("strong", null, longDate.format(parseDay(day.date))));
        series.forEach(function (s) {
          tip.appendChild(
            Oree.el("span", { className: "tip-row" }, Oree.el("span", { className: "swatch " + s.swatch }), s.label, Oree.el("b", null, Oree.number(day[s.key])))
          );
        });
        tip.hidden = false;
        var left = x(i) + 12;
        if (left + tip.offsetWidth > width) left = x(i) - tip.offsetWidth - 12;
        tip.style.left = Math.max(0, left) + "px";
        tip.style.top = margin.top + "px";
      }

      root.addEventListener("pointermove", function (event) {
        var box = root.getBoundingClientRect();
        var i = Math.floor((event.clientX - box.left - margin.left) / slot);
        show(Math.min(n - 1, Math.max(0, i)));
      });
      root.addEventListener("pointerleave", function () {
        show(-1);
      });
      container.onkeydown = function (event) {
        if (event.key !== "ArrowLeft" && event.key !== "ArrowRight") return;
        event.preventDefault();
        var next = state.active < 0 ? n - 1 : state.active + (event.key === "ArrowRight" ? 1 : -1);
        show(Math.min(n - 1, Math.max(0, next)));
      };
      container.onblur = function () {
        show(-1);
      };
    }

    container.tabIndex = 0;
    draw();
    if (container._oreeResize) container._oreeResize.disconnect();
    if (window.ResizeObserver) {
      var lastWidth = container.clientWidth;
      container._oreeResize = new ResizeObserver(function () {
        if (container.clientWidth !== lastWidth) {
          lastWidth = container.clientWidth;
          draw();
        }
      });
      container._oreeResize.observe(container);
    }
  };
})();
