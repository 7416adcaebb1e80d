/* Replies: the paginated feed from GET /api/client/replies, newest first.
 * Subjects, snippets and addresses are written by recipients: they go on the page as text only. */
(function () {
  "use strict";
  var Oree = window.Oree;

  var KINDS = {
    reply: { label: "Reply", className: "badge-reply" },
    auto_reply: { label: "Auto-reply", className: "badge-auto" },
    bounce: { label: "Bounce", className: "badge-bounce" },
  };

  Oree.page(function () {
    var feed = Oree.$("[data-replies]");
    var empty = Oree.$("[data-empty]");
    var pager = Oree.$("[data-pager]");
    var prev = Oree.$("[data-prev]", pager);
    var next = Oree.$("[data-next]", pager);
    var label = Oree.$("[data-page-label]", pager);

    function currentPage() {
      var page = parseInt(new URLSearchParams(window.location.search).get("page") || "1", 10);
      return page > 0 ? page : 1;
    }

    function load(page, focusFeed) {
      feed.setAttribute("aria-busy", "true");
      Oree.api("GET", "/api/client/replies?page=" + page).then(
        function (data) {
          render(data, page);
          if (focusFeed) feed.focus();
        },
        function (error) {
          if (error.status === 404 && page > 1) return go(1);
          Oree.loadFailed(feed, error, function () {
            load(page);
          });
        }
      );
    }

    function go(page) {
      var url = new URL(window.location.href);
      if (page > 1) url.searchParams.set("page", page);
      else url.searchParams.delete("page");
      window.history.pushState({ page: page }, "", url.pathname + url.search);
      load(page, true);
    }

    function render(data, page) {
      var items = (data && data.results) || [];
      Oree.clear(feed);
      feed.removeAttribute("aria-busy");
      feed.tabIndex = -1;
      empty.hidden = items.length > 0 || page > 1;
      items.forEach(function (reply) {
        feed.appendChild(item(reply));
      });
      var hasNext = Boolean(data && data.has_next);
      var hasPrev = page > 1;
      pager.hidden = !hasNext && !hasPrev;
      prev.disabled = !hasPrev;
      next.disabled = !hasNext;
      label.textContent = "Page " + page;
      prev.onclick = function () {
        go(page - 1);
      };
      next.onclick = function () {
        go(page + 1);
      };
    }

    function item(reply) {
      var kind = KINDS[reply.kind] || { label: reply.kind || "Reply", className: "badge-reply" };
      var meta = Oree.el(
        "div",
        { className: "reply-meta" },
        Oree.el("span", { className: "badge " + kind.className, "data-kind": reply.kind }, kind.label),
        Oree.el("span", { className: "reply-lead", "data-lead": "" }, reply.lead_email || "unknown sender"),
        reply.sequence_number ? Oree.el("span", { className: "reply-step muted" }, "Step " + reply.sequence_number) : null,
        Oree.el("span", { className: "reply-time muted" }, Oree.timeElement(reply.received_at))
      );
      return Oree.el(
        "li",
        { className: "reply reply-" + (reply.kind || "reply") },
        meta,
        Oree.el("p", { className: "reply-subject", "data-subject": "" }, reply.subject || "(no subject)"),
        reply.snippet ? Oree.el("p", { className: "reply-snippet", "data-snippet": "" }, reply.snippet) : null
      );
    }

    window.addEventListener("popstate", function () {
      load(currentPage(), false);
    });
    load(currentPage(), false);
  });
})();
