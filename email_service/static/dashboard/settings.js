/* Settings (GET/PUT /api/client/settings) and change password (POST /api/client/change-password).
 * The API is the one validator: its 400 names the field, and the message goes beside that field. */
(function () {
  "use strict";
  var Oree = window.Oree;

  Oree.page(function (session) {
    var form = Oree.$("[data-settings-form]");
    var passwordForm = Oree.$("[data-password-form]");
    var fields = form.elements;

    fillTimezones();
    Oree.enableForm(passwordForm);
    Oree.$("[data-username]", passwordForm).value = (session.client && session.client.email) || "";

    function fill(settings) {
      fields.timezone.value = settings.timezone || "";
      var window_ = settings.sending_window || {};
      var days = window_.days || [];
      Oree.$$('input[name="days"]', form).forEach(function (box) {
        box.checked = days.indexOf(box.value) !== -1;
      });
      fields.start.value = window_.start || "";
      fields.end.value = window_.end || "";
      fields.min_gap_seconds.value = settings.min_gap_seconds;
      fields.max_gap_seconds.value = settings.max_gap_seconds;
      fields.mailbox_daily_limit.value = settings.mailbox_daily_limit;
      fields.open_tracking.checked = Boolean(settings.open_tracking);
      fields.click_tracking.checked = Boolean(settings.click_tracking);
      fields.pause_on_auto_reply.checked = Boolean(settings.pause_on_auto_reply);
      form.removeAttribute("aria-busy");
      Oree.enableForm(form);
    }

    function integer(input) {
      var raw = input.value.trim();
      // Not a number: send it as typed so the API's message names the field.
      return raw !== "" && /^-?\d+$/.test(raw) ? parseInt(raw, 10) : raw;
    }

    function collect() {
      return {
        timezone: fields.timezone.value.trim(),
        sending_window: {
          days: Oree.$$('input[name="days"]:checked', form).map(function (box) {
            return box.value;
          }),
          start: fields.start.value.trim(),
          end: fields.end.value.trim(),
        },
        min_gap_seconds: integer(fields.min_gap_seconds),
        max_gap_seconds: integer(fields.max_gap_seconds),
        mailbox_daily_limit: integer(fields.mailbox_daily_limit),
        open_tracking: fields.open_tracking.checked,
        click_tracking: fields.click_tracking.checked,
        pause_on_auto_reply: fields.pause_on_auto_reply.checked,
      };
    }

    function load() {
      Oree.api("GET", "/api/client/settings").then(fill, function (error) {
        Oree.notify("Could not load your settings: " + error.detail, "error");
      });
    }

    form.addEventListener("submit", function (event) {
      event.preventDefault();
      Oree.clearFormErrors(form);
      var submit = Oree.$("[data-submit]", form);
      Oree.busy(submit, "Saving…", Oree.api("PUT", "/api/client/settings", { body: collect() }))
        .then(function (saved) {
          if (saved) fill(saved);
          Oree.notify("Settings saved.");
        })
        .catch(function (error) {
          Oree.showFormErrors(form, error);
          Oree.notify("Settings not saved: check the highlighted field.", "error");
        });
    });

    passwordForm.addEventListener("submit", function (event) {
      event.preventDefault();
      Oree.clearFormErrors(passwordForm);
      var p = passwordForm.elements;
      if (p.new_password.value !== p.confirm_password.value) {
        Oree.showFormErrors(passwordForm, { field: "confirm_password", detail: "The two new passwords are not the same.", data: {} });
        return;
      }
      var submit = Oree.$("[data-submit]", passwordForm);
      var body = { current_password: p.current_password.value, new_password: p.new_password.value };
      Oree.busy(submit, "Changing…", Oree.api("POST", "/api/client/change-password", { body: body }))
        .then(function (result) {
          if (result && result.access_token) Oree.session.save(Object.assign({ client: session.client }, result));
          passwordForm.reset();
          Oree.$("[data-username]", passwordForm).value = (session.client && session.client.email) || "";
          Oree.notify("Password changed. Every other browser signed in to your account has been signed out.");
        })
        .catch(function (error) {
          Oree.showFormErrors(passwordForm, error);
        });
    });

    load();
  });

  function fillTimezones() {
    var list = Oree.$("[data-timezones]");
    if (!list || typeof Intl.supportedValuesOf !== "function") return;
    Intl.supportedValuesOf("timeZone").forEach(function (zone) {
      list.appendChild(Oree.el("option", { value: zone }));
    });
  }
})();
