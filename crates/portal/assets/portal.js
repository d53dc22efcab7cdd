// govchain portal: live updates only. Every page reads and works without
// this script; with it, the login page continues by itself once the
// device has answered, and the explorer's status updates live.
"use strict";

function waitForLogin(container) {
  const status = document.getElementById("login-status");
  const form = document.getElementById("login-finish");
  const events = new EventSource(container.dataset.loginWait);
  events.addEventListener("done", () => {
    events.close();
    status.textContent = "Your device answered. Logging you in…";
    form.submit();
  });
  events.addEventListener("refused", (event) => {
    status.textContent = "Your device's answer was refused: " + event.data + ". Try again, or show a new code.";
    status.classList.add("error-message");
  });
  events.addEventListener("expired", () => {
    events.close();
    status.textContent = "This code has expired. Show a new code to log in.";
    status.classList.add("error-message");
  });
  events.onerror = () => {
    if (events.readyState === EventSource.CLOSED) {
      status.textContent = "Lost contact with the server. Reload the page to try again.";
    }
  };
}

function followStatus(section) {
  const fields = {
    height: document.getElementById("status-height"),
    view: document.getElementById("status-view"),
    primary: document.getElementById("status-primary"),
    time: document.getElementById("status-time"),
    mempool: document.getElementById("status-mempool"),
  };
  const blocks = document.getElementById("latest-blocks");
  let height = fields.height ? fields.height.textContent : "";
  const events = new EventSource(section.dataset.liveStatus);
  events.addEventListener("status", async (event) => {
    const status = JSON.parse(event.data);
    for (const [name, element] of Object.entries(fields)) {
      if (element && status[name] !== undefined) {
        element.textContent = String(status[name]);
      }
    }
    if (blocks && String(status.height) !== height) {
      height = String(status.height);
      const response = await fetch(blocks.dataset.refresh, { credentials: "same-origin" });
      if (response.ok) {
        blocks.innerHTML = await response.text();
      }
    }
  });
}

function waitForSignature(container) {
  const status = document.getElementById("sign-status");
  const events = new EventSource(container.dataset.signWait);
  events.addEventListener("done", () => {
    events.close();
    status.textContent = "Recorded on the chain. Returning to your record…";
    window.location.assign(document.getElementById("sign-done").getAttribute("href"));
  });
  events.addEventListener("refused", (event) => {
    status.textContent = "Not recorded: " + event.data;
    status.classList.add("error-message");
  });
  events.addEventListener("expired", () => {
    events.close();
    status.textContent = "This request has expired. Go back to your record and start again.";
    status.classList.add("error-message");
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const sign = document.querySelector("[data-sign-wait]");
  if (sign) {
    waitForSignature(sign);
  }
  const login = document.querySelector("[data-login-wait]");
  if (login) {
    waitForLogin(login);
  }
  const live = document.querySelector("[data-live-status]");
  if (live) {
    followStatus(live);
  }
});
