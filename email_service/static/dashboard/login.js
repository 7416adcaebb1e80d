/* Sign-in page: POST /api/client/login, keep the token for this tab, return where the user was. */
(function () {
  "use strict";
  var Oree = window.Oree;

  function start() {
    var params = new URLSearchParams(window.location.search);
    var next = Oree.safeNext(params.get("next") || "");
    var reason = params.get("reason");

    if (Oree.session.get()) {
      window.location.replace(next);
      return;
    }
    if (reason === "expired") Oree.notify("Your session has ended. Sign in again to continue.", "info");
    else if (reason === "signed_out") Oree.notify("You have signed out.", "info");

    var form = Oree.$("[data-login-form]");
    var submit = Oree.$("[data-submit]", form);
    var countdown = null;
    Oree.enableForm(form);

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      if (submit.disabled) return;
      Oree.clearFormErrors(form);
      var email = form.elements.email.value.trim();
      var password = form.elements.password.value;
      var missing = false;
      if (!email) {
        showFieldError("email", "Enter your email address.");
        missing = true;
      }
      if (!password) {
        showFieldError("password", "Enter your password.");
        missing = true;
      }
      if (missing) return;

      Oree.busy(submit, "Signing in…", Oree.api("POST", "/api/client/login", { auth: false, body: { email: email, password: password } }))
        .then(function (login) {
          Oree.session.save(login);
          window.location.replace(next);
        })
        .catch(function (error) {
          if (error.status === 429) {
            throttled(error);
          } else if (error.status === 400 && error.field) {
            Oree.showFormErrors(form, error);
          } else {
            showGeneral(error.detail);
            form.elements.password.value = "";
            form.elements.password.focus();
          }
        });
    });

    function showFieldError(name, text) {
      var slot = Oree.$('[data-error-for="' + name + '"]', form);
      slot.textContent = text;
      slot.hidden = false;
      form.elements[name].setAttribute("aria-invalid", "true");
      form.elements[name].focus();
    }

    function showGeneral(text) {
      var alert = Oree.$("[data-form-error]", form);
      alert.textContent = text;
      alert.hidden = false;
    }

    /* The API's 429: its message, and the wait from Retry-After, counted down on the button. */
    function throttled(error) {
      var wait = error.retryAfter || 60;
      var label = submit.textContent;
      var alert = Oree.$("[data-form-error]", form);
      var render = function () {
        alert.textContent = "";
        alert.appendChild(document.createTextNode(error.detail + " "));
        alert.appendChild(
          Oree.el("strong", { "data-retry-after": wait }, "You can try again in " + formatWait(wait) + ".")
        );
        alert.hidden = false;
      };
      render();
      submit.disabled = true;
      window.clearInterval(countdown);
      countdown = window.setInterval(function () {
        wait -= 1;
        if (wait <= 0) {
          window.clearInterval(countdown);
          submit.disabled = false;
          submit.textContent = label;
          alert.hidden = true;
          return;
        }
        render();
      }, 1000);
    }
  }

  function formatWait(seconds) {
    if (seconds < 60) return seconds + (seconds === 1 ? " second" : " seconds");
    var minutes = Math.ceil(seconds / 60);
    return minutes + (minutes === 1 ? " minute" : " minutes");
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
