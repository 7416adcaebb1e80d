/* Campaigns: per-step results from GET /api/client/campaigns, pause and resume through the API. */
(function () {
  "use strict";
  var Oree = window.Oree;

  var COLUMNS = [
    { count: "opens", rate: "open_rate", label: "Opened" },
    { count: "clicks", rate: "click_rate", label: "Clicked" },
    { count: "replies", rate: "reply_rate", label: "Replied" },
    { count: "bounces", rate: "bounce_rate", label: "Bounced" },
  ];

  var STATUS_TEXT = { active: "Active", paused: "Paused" };

  Oree.page(function () {
    var list = Oree.$("[data-campaigns]");

    function load() {
      Oree.api("GET", "/api/client/campaigns").then(render, function (error) {
        Oree.loadFailed(list, error, load);
      });
    }

    function render(data) {
      var campaigns = (data && data.campaigns) || [];
      Oree.clear(list);
      list.removeAttribute("aria-busy");
      if (!campaigns.length) {
        list.appendChild(Oree.el("p", { className: "card empty muted" }, "No campaigns yet. They appear when your first emails are queued."));
        return;
      }
      campaigns.forEach(function (campaign) {
        list.appendChild(campaignCard(campaign));
      });
    }

    function statusBadge(status) {
      return Oree.el("span", { className: "badge badge-" + status, "data-status": status }, STATUS_TEXT[status] || status);
    }

    function campaignCard(campaign) {
      var titleId = "campaign-" + campaign.id;
      var badge = statusBadge(campaign.status);
      var button = Oree.el("button", { type: "button", className: "button", "data-toggle": "" });
      var card = Oree.el(
        "section",
        { className: "card campaign", "data-campaign-id": campaign.id, "aria-labelledby": titleId },
        Oree.el(
          "div",
          { className: "card-head" },
          Oree.el("div", { className: "campaign-title" }, Oree.el("h2", { id: titleId }, campaign.name), badge),
          button
        ),
        stepsTable(campaign)
      );

      function setStatus(status) {
        campaign.status = status;
        var fresh = statusBadge(status);
        badge.replaceWith(fresh);
        badge = fresh;
        button.textContent = status === "paused" ? "Resume" : "Pause";
        button.className = "button " + (status === "paused" ? "button-primary" : "");
        button.setAttribute("aria-label", (status === "paused" ? "Resume " : "Pause ") + campaign.name);
      }
      setStatus(campaign.status);

      button.addEventListener("click", function () {
        var pausing = campaign.status !== "paused";
        var action = pausing ? "pause" : "resume";
        Oree.busy(button, pausing ? "Pausing…" : "Resuming…", Oree.api("POST", "/api/client/campaigns/" + encodeURIComponent(campaign.id) + "/" + action))
          .then(function (result) {
            setStatus((result && result.status) || (pausing ? "paused" : "active"));
            var count = result && typeof result.emails_affected === "number" ? result.emails_affected : 0;
            var emails = Oree.number(count) + (count === 1 ? " unsent email" : " unsent emails");
            Oree.notify(
              pausing
                ? "“" + campaign.name + "” is paused: " + emails + " wait until you resume it."
                : "“" + campaign.name + "” is running again: " + emails + " go out in your sending window."
            );
          })
          .catch(function (error) {
            Oree.notify("Could not " + action + " “" + campaign.name + "”: " + error.detail, "error");
          });
      });
      return card;
    }

    function stepsTable(campaign) {
      var steps = campaign.steps || [];
      if (!steps.length) return Oree.el("p", { className: "muted" }, "Nothing sent in this campaign yet.");
      var head = Oree.el("tr", null, Oree.el("th", { scope: "col" }, "Step"), Oree.el("th", { scope: "col", className: "num" }, "Sent"));
      COLUMNS.forEach(function (column) {
        head.appendChild(Oree.el("th", { scope: "col", className: "num" }, column.label));
      });
      var rows = Oree.el("tbody");
      steps.forEach(function (step) {
        var row = Oree.el(
          "tr",
          { "data-step": step.sequence_number },
          Oree.el("th", { scope: "row" }, "Step " + step.sequence_number),
          Oree.el("td", { className: "num", "data-col": "emails_sent" }, Oree.number(step.emails_sent))
        );
        COLUMNS.forEach(function (column) {
          row.appendChild(
            Oree.el(
              "td",
              { className: "num", "data-col": column.count },
              Oree.el("span", { className: "cell-count" }, Oree.number(step[column.count])),
              Oree.el("span", { className: "cell-rate" }, Oree.percent(step[column.rate]))
            )
          );
        });
        rows.appendChild(row);
      });
      return Oree.el(
        "div",
        { className: "table-wrap" },
        Oree.el("table", { className: "table" }, Oree.el("caption", { className: "visually-hidden" }, "Results per step of " + campaign.name), Oree.el("thead", null, head), rows)
      );
    }

    load();
  });
})();
