/* Overview: headline figures from GET /api/client/stats and the chart from GET /api/client/timeline. */
(function () {
  "use strict";
  var Oree = window.Oree;

  var SERIES = [
    { key: "sent", label: "Sent", kind: "bar", className: "series-sent", swatch: "swatch-sent" },
    { key: "opens", label: "Opens", kind: "line", className: "series-opens", swatch: "swatch-opens" },
    { key: "clicks", label: "Clicks", kind: "line", className: "series-clicks", swatch: "swatch-clicks" },
    { key: "replies", label: "Replies", kind: "line", className: "series-replies", swatch: "swatch-replies" },
  ];

  // Each rate card shows the rate big and the count it comes from below it.
  var RATE_COUNTS = {
    open_rate: ["opens", "opened"],
    click_rate: ["clicks", "clicked"],
    reply_rate: ["replies", "replied"],
    bounce_rate: ["bounces", "bounced"],
  };

  Oree.page(function () {
    var stats = null;
    var figures = Oree.$("[data-figures]");
    var picker = Oree.$("[data-period-picker]");
    var stored = window.sessionStorage.getItem("oree.period");
    if (stored) {
      var radio = Oree.$('input[value="' + stored.replace(/[^a-z0-9_]/g, "") + '"]', picker);
      if (radio) radio.checked = true;
    }

    function period() {
      var checked = Oree.$("input:checked", picker);
      return checked ? checked.value : "last_30_days";
    }

    function renderFigures() {
      if (!stats) return;
      var p = stats[period()] || {};
      figures.setAttribute("data-period", period());
      Oree.$$("[data-metric]", figures).forEach(function (card) {
        var metric = card.getAttribute("data-metric");
        var value = Oree.$("[data-value]", card);
        var sub = Oree.$("[data-sub]", card);
        if (metric === "emails_sent") {
          value.textContent = Oree.number(p.emails_sent);
          sub.textContent = Oree.number(p.unsubscribes) + " unsubscribed";
          sub.setAttribute("data-unsubscribes", p.unsubscribes);
          return;
        }
        var count = RATE_COUNTS[metric];
        value.textContent = Oree.percent(p[metric]);
        value.setAttribute("data-raw", p[metric]);
        sub.textContent = Oree.number(p[count[0]]) + " " + count[1];
        sub.setAttribute("data-count", p[count[0]]);
      });
      Oree.$("[data-machine-opens]").textContent = Oree.number(p.machine_opens);
      Oree.$("[data-machine-clicks]").textContent = Oree.number(p.machine_clicks);
      figures.removeAttribute("aria-busy");
    }

    function loadStats() {
      Oree.api("GET", "/api/client/stats").then(
        function (data) {
          stats = data;
          renderFigures();
        },
        function (error) {
          Oree.notify("Could not load your figures: " + error.detail, "error");
        }
      );
    }

    picker.addEventListener("change", function () {
      window.sessionStorage.setItem("oree.period", period());
      renderFigures();
    });

    var chart = Oree.$("[data-chart]");
    var daysSelect = Oree.$("[data-timeline-days]");
    function loadTimeline() {
      chart.setAttribute("aria-busy", "true");
      Oree.api("GET", "/api/client/timeline?days=" + encodeURIComponent(daysSelect.value)).then(
        function (data) {
          var days = (data && data.days) || [];
          chart.removeAttribute("aria-busy");
          chart.setAttribute("data-days", days.length);
          Oree.timelineChart(chart, days, SERIES);
          var rows = Oree.clear(Oree.$("[data-timeline-rows]"));
          days
            .slice()
            .reverse()
            .forEach(function (day) {
              rows.appendChild(
                Oree.el(
                  "tr",
                  { "data-date": day.date },
                  Oree.el("th", { scope: "row" }, day.date),
                  Oree.el("td", { className: "num" }, Oree.number(day.sent)),
                  Oree.el("td", { className: "num" }, Oree.number(day.opens)),
                  Oree.el("td", { className: "num" }, Oree.number(day.clicks)),
                  Oree.el("td", { className: "num" }, Oree.number(day.replies))
                )
              );
            });
        },
        function (error) {
          Oree.loadFailed(chart, error, loadTimeline);
        }
      );
    }
    daysSelect.addEventListener("change", loadTimeline);

    loadStats();
    loadTimeline();
  });
})();
