/* Mailboxes: GET /api/client/mailboxes; Connect / Reconnect through GET /api/oauth/initiate/<client_id>. */
(function () {
  "use strict";
  var Oree = window.Oree;

  var STATUS = {
    active: { label: "Active", hint: "Sending normally." },
    limited: { label: "Daily limit reached", hint: "Sends again tomorrow." },
    paused: { label: "Paused", hint: "Paused by an operator." },
    disconnected: { label: "Disconnected", hint: "Not sending: reconnect it to go on." },
  };

  // Google's and Gmail's terse errors, said plainly; anything else is shown as it is.
  var PLAIN_ERRORS = [
    [/invalid_grant|revoked|expired or revoked|token has been expired/i, "Google no longer lets OreeStats use this mailbox (access was revoked, the password changed, or the permission expired). Reconnect it to resume sending."],
    [/insufficient.*(scope|permission)|access_denied/i, "OreeStats was not given permission to send from this mailbox. Reconnect it and allow sending."],
    [/daily.*limit|quota|rateLimitExceeded|userRateLimitExceeded|429/i, "Gmail's own sending limit was reached. Sending resumes automatically when Gmail allows it."],
    [/disconnected by|disconnected at the client/i, "You disconnected this mailbox."],
    [/timeout|timed out|unavailable|5\d\d/i, "Gmail did not answer in time. OreeStats retries on its own."],
  ];

  function plainError(text) {
    if (!text) return "";
    for (var i = 0; i < PLAIN_ERRORS.length; i++) {
      if (PLAIN_ERRORS[i][0].test(text)) return PLAIN_ERRORS[i][1];
    }
    return text;
  }

  Oree.page(function (session) {
    var list = Oree.$("[data-mailboxes]");
    var connect = Oree.$("[data-connect]");

    function load() {
      Oree.api("GET", "/api/client/mailboxes").then(render, function (error) {
        Oree.loadFailed(list, error, load);
      });
    }

    function render(data) {
      var mailboxes = (data && data.mailboxes) || [];
      Oree.clear(list);
      list.removeAttribute("aria-busy");
      if (!mailboxes.length) {
        list.appendChild(
          Oree.el("div", { className: "card empty" }, Oree.el("p", null, "No mailbox connected yet."), Oree.el("p", { className: "muted" }, "Connect a Gmail mailbox to start sending from it."))
        );
        return;
      }
      mailboxes.forEach(function (mailbox) {
        list.appendChild(card(mailbox));
      });
    }

    function card(mailbox) {
      var status = STATUS[mailbox.status] || { label: mailbox.status, hint: "" };
      var limit = Number(mailbox.daily_limit) || 0;
      var sent = Number(mailbox.sent_today) || 0;
      var titleId = "mailbox-" + mailbox.id;
      var actions = Oree.el("div", { className: "card-actions" });
      if (mailbox.status === "disconnected") {
        var reconnect = Oree.el("button", { type: "button", className: "button button-primary", "data-reconnect": "", "aria-label": "Reconnect " + mailbox.email }, "Reconnect");
        reconnect.addEventListener("click", function () {
          startConnect(reconnect);
        });
        actions.appendChild(reconnect);
      } else {
        var disconnect = Oree.el("button", { type: "button", className: "button button-quiet", "data-disconnect": "", "aria-label": "Disconnect " + mailbox.email }, "Disconnect");
        disconnect.addEventListener("click", function () {
          if (!window.confirm("Disconnect " + mailbox.email + "? Its unsent emails wait until you connect a mailbox again.")) return;
          Oree.busy(disconnect, "Disconnecting…", Oree.api("DELETE", "/api/client/mailboxes/" + encodeURIComponent(mailbox.id)))
            .then(function () {
              Oree.notify(mailbox.email + " is disconnected.");
              load();
            })
            .catch(function (error) {
              Oree.notify("Could not disconnect " + mailbox.email + ": " + error.detail, "error");
            });
        });
        actions.appendChild(disconnect);
      }

      var usage = Oree.el(
        "div",
        { className: "usage" },
        Oree.el("div", { className: "usage-label" }, Oree.el("span", null, "Sent today"), Oree.el("strong", { "data-sent-today": sent }, Oree.number(sent) + " / " + Oree.number(limit))),
        Oree.el("progress", { max: Math.max(1, limit), value: Math.min(sent, limit), "aria-label": "Sent today for " + mailbox.email }),
        Oree.el("div", { className: "muted small" }, Oree.number(mailbox.remaining_today) + " left today · last sent ", Oree.timeElement(mailbox.last_sent_at))
      );
      var body = Oree.el(
        "section",
        { className: "card mailbox mailbox-" + mailbox.status, "data-mailbox-id": mailbox.id, "aria-labelledby": titleId },
        Oree.el(
          "div",
          { className: "card-head" },
          Oree.el(
            "div",
            null,
            Oree.el("h2", { id: titleId, className: "mailbox-email" }, mailbox.email),
            Oree.el("p", { className: "mailbox-status" }, Oree.el("span", { className: "badge badge-" + mailbox.status, "data-status": mailbox.status }, status.label), " ", Oree.el("span", { className: "muted small" }, status.hint))
          ),
          actions
        ),
        usage
      );
      if (mailbox.last_error) {
        body.appendChild(
          Oree.el("p", { className: "alert " + (mailbox.status === "disconnected" ? "alert-error" : "alert-warning"), "data-last-error": "", title: mailbox.last_error }, plainError(mailbox.last_error))
        );
      }
      return body;
    }

    /* Asks the API for Google's consent URL (as JSON) and goes there; Google brings the user back here. */
    function startConnect(button) {
      var clientId = session.client && session.client.id;
      if (!clientId) {
        Oree.goToLogin("expired");
        return;
      }
      var returnTo = window.location.pathname;
      var path = "/api/oauth/initiate/" + encodeURIComponent(clientId) + "?return_to=" + encodeURIComponent(returnTo);
      Oree.busy(button, "Opening Google…", Oree.api("GET", path))
        .then(function (data) {
          var url = data && data.authorization_url;
          if (typeof url !== "string" || !/^https?:\/\//i.test(url)) throw new Oree.ApiError(502, { detail: "OreeStats did not return a Google sign-in address." });
          button.disabled = true;
          window.location.assign(url);
        })
        .catch(function (error) {
          Oree.notify("Could not start connecting Gmail: " + error.detail, "error");
        });
    }

    connect.addEventListener("click", function () {
      startConnect(connect);
    });
    load();
  });
})();
