/* OreeStats dashboard: the session, the API client and small DOM helpers shared by every page.
 *
 * Rules kept everywhere: the pages read and write only the JSON API with the dashboard JWT;
 * anything that comes from the server is put on the page as text (textContent, never
 * innerHTML), so a recipient's HTML in a subject or snippet can never run.
 */
(function () {
  "use strict";

  var SESSION_KEY = "oree.session";
  var body = document.body;
  var LOGIN_URL = body.getAttribute("data-login-url") || "/dashboard/login/";
  var HOME_URL = body.getAttribute("data-home-url") || "/dashboard/";

  var Oree = (window.Oree = {});

  /* ---------- session (sessionStorage: gone when the tab closes) ---------- */

  Oree.session = {
    get: function () {
      var raw;
      try {
        raw = window.sessionStorage.getItem(SESSION_KEY);
      } catch (e) {
        return null;
      }
      if (!raw) return null;
      try {
        var session = JSON.parse(raw);
        if (!session || typeof session.token !== "string") return null;
        if (session.expiresAt && Date.parse(session.expiresAt) <= Date.now()) {
          Oree.session.clear();
          return null;
        }
        return session;
      } catch (e) {
        return null;
      }
    },
    save: function (login) {
      var session = {
        token: login.access_token,
        expiresAt: login.expires_at || null,
        client: login.client || {},
      };
      window.sessionStorage.setItem(SESSION_KEY, JSON.stringify(session));
      return session;
    },
    clear: function () {
      try {
        window.sessionStorage.removeItem(SESSION_KEY);
      } catch (e) {
        /* storage disabled: nothing to clear */
      }
    },
  };

  /* A local dashboard path to return to after signing in; anything else (another origin,
   * a protocol-relative "//host", backslash tricks) falls back to the overview. */
  Oree.safeNext = function (value) {
    if (typeof value !== "string" || value.length > 500) return HOME_URL;
    if (!/^\/dashboard\/[A-Za-z0-9\-._~%\/?=&#]*$/.test(value)) return HOME_URL;
    if (value.indexOf("//") !== -1 || value.indexOf("\\") !== -1) return HOME_URL;
    if (value.indexOf("/dashboard/login") === 0) return HOME_URL;
    return value;
  };

  Oree.loginUrl = function (reason) {
    var here = window.location.pathname + window.location.search + window.location.hash;
    var url = LOGIN_URL + "?next=" + encodeURIComponent(here);
    if (reason) url += "&reason=" + encodeURIComponent(reason);
    return url;
  };

  Oree.goToLogin = function (reason) {
    Oree.session.clear();
    window.location.replace(Oree.loginUrl(reason));
  };

  /* ---------- API client ---------- */

  function ApiError(status, data, response) {
    this.name = "ApiError";
    this.status = status;
    this.data = data || {};
    this.detail = (data && typeof data.detail === "string" && data.detail) || defaultMessage(status);
    this.code = (data && data.code) || "";
    this.field = (data && data.field) || "";
    this.retryAfter = response ? parseInt(response.headers.get("Retry-After") || "", 10) || 0 : 0;
    this.message = this.detail;
  }
  ApiError.prototype = Object.create(Error.prototype);
  Oree.ApiError = ApiError;

  function defaultMessage(status) {
    if (status === 0) return "Cannot reach OreeStats. Check your connection and try again.";
    if (status === 401) return "Your session has ended. Please sign in again.";
    if (status === 404) return "Not found.";
    if (status === 429) return "Too many attempts. Please wait a moment.";
    if (status >= 500) return "Something went wrong on our side. Please try again in a moment.";
    return "The request could not be completed.";
  }

  /* request(method, path, {body, auth=true, headers}) → parsed JSON (or null).
   * A 401 on an authenticated call without a field (the token is gone, expired or revoked)
   * sends the user to the login page, which brings them back here afterwards. */
  Oree.api = function (method, path, options) {
    options = options || {};
    var auth = options.auth !== false;
    var headers = { Accept: "application/json" };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    if (auth) {
      var session = Oree.session.get();
      if (!session) {
        Oree.goToLogin("expired");
        return new Promise(function () {});
      }
      headers.Authorization = "Bearer " + session.token;
    }
    return window
      .fetch(path, {
        method: method,
        headers: headers,
        body: options.body === undefined ? undefined : JSON.stringify(options.body),
        credentials: "omit",
        cache: "no-store",
        redirect: "error",
      })
      .then(
        function (response) {
          var type = response.headers.get("Content-Type") || "";
          var parsed =
            response.status === 204 || type.indexOf("json") === -1
              ? Promise.resolve(null)
              : response.json().catch(function () {
                  return null;
                });
          return parsed.then(function (data) {
            if (response.ok) return data;
            if (auth && response.status === 401 && !(data && data.field)) {
              Oree.goToLogin("expired");
              return new Promise(function () {});
            }
            throw new ApiError(response.status, data, response);
          });
        },
        function () {
          throw new ApiError(0, null, null);
        }
      );
  };

  /* ---------- DOM helpers (text only) ---------- */

  /* el("td", {className: "num", "data-x": "1"}, "text", otherNode…): children are text or nodes. */
  Oree.el = function (tag, attrs) {
    var node = document.createElement(tag);
    if (attrs) {
      Object.keys(attrs).forEach(function (key) {
        var value = attrs[key];
        if (value === null || value === undefined || value === false) return;
        if (key === "className") node.className = value;
        else if (key === "text") node.textContent = value;
        else if (key === "hidden") node.hidden = true;
        else node.setAttribute(key, value === true ? "" : String(value));
      });
    }
    for (var i = 2; i < arguments.length; i++) {
      var child = arguments[i];
      if (child === null || child === undefined || child === false) continue;
      node.appendChild(typeof child === "string" || typeof child === "number" ? document.createTextNode(String(child)) : child);
    }
    return node;
  };

  Oree.clear = function (node) {
    while (node.firstChild) node.removeChild(node.firstChild);
    return node;
  };

  Oree.$ = function (selector, root) {
    return (root || document).querySelector(selector);
  };

  Oree.$$ = function (selector, root) {
    return Array.prototype.slice.call((root || document).querySelectorAll(selector));
  };

  /* ---------- formatting ---------- */

  var numberFormat = new Intl.NumberFormat(undefined);
  Oree.number = function (value) {
    if (value === null || value === undefined || isNaN(value)) return "—";
    return numberFormat.format(value);
  };

  /* Rates come from the API as percentages of the period's sends, rounded to two decimals:
   * shown as given (42.86%, 12.5%, 0%), never re-rounded. */
  var percentFormat = new Intl.NumberFormat(undefined, { minimumFractionDigits: 0, maximumFractionDigits: 2 });
  Oree.percent = function (value) {
    if (value === null || value === undefined || isNaN(value)) return "—";
    return percentFormat.format(value) + "%";
  };

  Oree.dateTime = function (iso) {
    if (!iso) return "—";
    var date = new Date(iso);
    if (isNaN(date.getTime())) return "—";
    return date.toLocaleString(undefined, {
      year: "numeric",
      month: "short",
      day: "numeric",
      hour: "2-digit",
      minute: "2-digit",
    });
  };

  Oree.relative = function (iso) {
    if (!iso) return "never";
    var then = new Date(iso).getTime();
    if (isNaN(then)) return "—";
    var seconds = Math.round((then - Date.now()) / 1000);
    var units = [
      ["year", 31536000],
      ["month", 2592000],
      ["week", 604800],
      ["day", 86400],
      ["hour", 3600],
      ["minute", 60],
    ];
    var format = new Intl.RelativeTimeFormat(undefined, { numeric: "auto" });
    for (var i = 0; i < units.length; i++) {
      if (Math.abs(seconds) >= units[i][1]) return format.format(Math.round(seconds / units[i][1]), units[i][0]);
    }
    return "just now";
  };

  /* A <time> element showing a relative time, with the full date as its title. */
  Oree.timeElement = function (iso) {
    return Oree.el("time", { datetime: iso || "", title: Oree.dateTime(iso) }, Oree.relative(iso));
  };

  /* ---------- feedback ---------- */

  var noticeTimer = null;
  Oree.notify = function (message, kind) {
    var notice = Oree.$("[data-notice]");
    if (!notice) return;
    notice.className = "notice notice-" + (kind || "success");
    notice.textContent = message;
    notice.hidden = false;
    window.clearTimeout(noticeTimer);
    if (kind !== "error") {
      noticeTimer = window.setTimeout(function () {
        notice.hidden = true;
      }, 6000);
    }
  };

  /* Puts API errors beside their fields: the 400's `field` (and any `errors` map) names them. */
  Oree.showFormErrors = function (form, error) {
    Oree.clearFormErrors(form);
    var shown = false;
    var fields = {};
    if (error.data && error.data.errors && typeof error.data.errors === "object" && !Array.isArray(error.data.errors)) {
      flatten(error.data.errors, "", fields);
    }
    if (error.field && !fields[error.field]) fields[error.field] = stripFieldPrefix(error.detail, error.field);
    Object.keys(fields).forEach(function (name) {
      var slot = findErrorSlot(form, name);
      if (!slot) return;
      slot.textContent = humanize(fields[name], name, slot);
      slot.hidden = false;
      var input = inputForSlot(form, slot, name);
      if (input) input.setAttribute("aria-invalid", "true");
      if (!shown && input) input.focus();
      shown = true;
    });
    if (!shown) {
      var general = Oree.$("[data-form-error]", form);
      if (general) {
        general.textContent = error.detail;
        general.hidden = false;
      }
    }
  };

  function flatten(errors, prefix, out) {
    Object.keys(errors).forEach(function (key) {
      var value = errors[key];
      var name = key === "non_field_errors" ? prefix : prefix ? prefix + "." + key : key;
      if (Array.isArray(value)) {
        var texts = value.filter(function (item) {
          return typeof item === "string";
        });
        if (texts.length) out[name] = texts.join(" ");
        else if (value.length && typeof value[0] === "object") flatten(value[0], name, out);
      } else if (value && typeof value === "object") {
        flatten(value, name, out);
      } else if (typeof value === "string") {
        out[name] = value;
      }
    });
  }

  /* The API names fields by their JSON names ("mailbox_daily_limit must be…"); beside the field,
   * say the label the user sees instead ("Daily limit per mailbox must be…"). */
  function humanize(message, name, slot) {
    if (message.indexOf(name + " ") !== 0) return message;
    var field = slot.closest(".field");
    var label = field && field.querySelector("legend, label:not(.check)");
    var text = label ? label.textContent.trim() : "";
    return text ? text + message.slice(name.length) : message;
  }

  function stripFieldPrefix(detail, field) {
    var prefix = field + ": ";
    return detail.indexOf(prefix) === 0 ? detail.slice(prefix.length) : detail;
  }

  function findErrorSlot(form, name) {
    var parts = name.split(".");
    while (parts.length) {
      var slot = form.querySelector('[data-error-for="' + parts.join(".").replace(/"/g, "") + '"]');
      if (slot) return slot;
      parts.pop();
    }
    return null;
  }

  function inputForSlot(form, slot, name) {
    var field = slot.closest(".field");
    return field ? field.querySelector("input, select, textarea") : form.querySelector('[name="' + name + '"]');
  }

  Oree.clearFormErrors = function (form) {
    Oree.$$("[data-error-for], [data-form-error]", form).forEach(function (slot) {
      slot.textContent = "";
      slot.hidden = true;
    });
    Oree.$$("[aria-invalid]", form).forEach(function (input) {
      input.removeAttribute("aria-invalid");
    });
  };

  /* Forms are rendered with their submit button disabled, so nothing can be submitted natively
   * (a password in a URL) before the page's script handles the form; this turns them on. */
  Oree.enableForm = function (form) {
    Oree.$$("[data-submit]", form).forEach(function (button) {
      button.disabled = false;
    });
  };

  /* Disables a button while `promise` runs, showing `busyText`. */
  Oree.busy = function (button, busyText, promise) {
    var label = button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    if (busyText) button.textContent = busyText;
    var done = function () {
      button.disabled = false;
      button.removeAttribute("aria-busy");
      button.textContent = label;
    };
    return promise.then(
      function (value) {
        done();
        return value;
      },
      function (error) {
        done();
        throw error;
      }
    );
  };

  /* ---------- page start ---------- */

  Oree.signOut = function () {
    var session = Oree.session.get();
    var leave = function () {
      Oree.session.clear();
      window.location.replace(LOGIN_URL + "?reason=signed_out");
    };
    if (!session) return leave();
    window
      .fetch("/api/client/logout", {
        method: "POST",
        headers: { Accept: "application/json", Authorization: "Bearer " + session.token },
        credentials: "omit",
      })
      .then(leave, leave);
  };

  /* Runs `start` for a signed-in page; without a session, go to login and come back after. */
  Oree.page = function (start) {
    var run = function () {
      var session = Oree.session.get();
      if (!session) {
        Oree.goToLogin("expired");
        return;
      }
      var name = Oree.$("[data-client-name]");
      if (name) name.textContent = (session.client && (session.client.name || session.client.email)) || "";
      Oree.$$("[data-logout]").forEach(function (button) {
        button.addEventListener("click", Oree.signOut);
      });
      start(session);
    };
    if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", run);
    else run();
  };

  /* Shows a load failure in place of the content, with a retry. */
  Oree.loadFailed = function (container, error, retry) {
    Oree.clear(container);
    container.removeAttribute("aria-busy");
    var button = Oree.el("button", { type: "button", className: "button" }, "Try again");
    button.addEventListener("click", retry);
    container.appendChild(Oree.el("div", { className: "alert alert-error", role: "alert" }, error.detail + " ", button));
  };
})();
