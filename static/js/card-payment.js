/* Card payments (Add credit, paying for a plan): in a [data-card-pay] section, save the
 * card with Stripe.js (confirmCardSetup) before its [data-card-pay-form] is sent (the
 * clicked button's name and value go with it), and complete 3-D Secure
 * (confirmCardPayment) when the server asks for it. The server creates and confirms
 * every payment itself; this script never decides an outcome. */
(function () {
  "use strict";

  function showError(box, message) {
    if (!box) return;
    box.textContent = message || "Your card could not be saved.";
    box.hidden = false;
  }

  function bindPurchase(root) {
    var form = root.querySelector("[data-card-pay-form]");
    var mount = root.querySelector("[data-card-element]");
    var errorBox = root.querySelector("[data-card-error]");
    var stripe = window.Stripe(root.getAttribute("data-publishable-key"));
    var card = null;
    if (mount) {
      card = stripe.elements().create("card");
      card.mount(mount);
    }
    var sending = false;
    form.addEventListener("submit", function (event) {
      if (sending) { event.preventDefault(); return; }  // one click, one payment
      var submitter = event.submitter;
      var buttons = form.querySelectorAll("button[type=submit]");
      sending = true;
      if (!card) {
        setTimeout(function () { for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true; }, 0);
        return;
      }
      event.preventDefault();
      for (var i = 0; i < buttons.length; i++) buttons[i].disabled = true;
      stripe.confirmCardSetup(root.getAttribute("data-setup-secret"), { payment_method: { card: card } })
        .then(function (result) {
          if (result.error || !result.setupIntent) {
            sending = false;
            for (var j = 0; j < buttons.length; j++) buttons[j].disabled = false;
            showError(errorBox, result.error && result.error.message);
            return;
          }
          form.elements.setup_intent.value = result.setupIntent.id;
          if (submitter && submitter.name) {
            var chosen = document.createElement("input");
            chosen.type = "hidden";
            chosen.name = submitter.name;
            chosen.value = submitter.value;
            form.appendChild(chosen);
          }
          form.submit();
        });
    });
  }

  function bindConfirm(root) {
    var stripe = window.Stripe(root.getAttribute("data-publishable-key"));
    var form = root.querySelector("[data-confirmed-form]");
    stripe.confirmCardPayment(root.getAttribute("data-client-secret")).then(function () {
      form.submit();  // the server reads the outcome from Stripe
    });
  }

  var purchase = document.querySelector("[data-card-pay]");
  if (purchase) bindPurchase(purchase);
  var confirm = document.querySelector("[data-confirm-payment]");
  if (confirm) bindConfirm(confirm);
})();
