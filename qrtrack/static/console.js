// Live Console: builds the call from the form, posts {key_id, method, query, body} to the dashboard,
// which runs it through the API with the chosen key, and shows the API's answer. No key is ever here.
(function () {
  "use strict";

  const form = document.getElementById("console-form");
  if (!form) {
    return;
  }
  const $ = function (id) { return document.getElementById(id); };
  const ui = {
    key: $("console-key"), operation: $("console-operation"), uuid: $("console-uuid"),
    uuidField: $("console-uuid-field"), uuidError: $("console-uuid-error"), params: $("console-params"),
    paramsField: $("console-params-field"),
    body: $("console-body"), bodyField: $("console-body-field"), format: $("console-format"),
    formatError: $("console-format-error"),
    method: $("console-method"), url: $("console-url"), send: $("console-send"),
    placeholder: $("console-placeholder"), error: $("console-error"), response: $("console-response"),
    meta: $("console-response-meta"), status: $("console-status"), duration: $("console-duration"),
    headers: $("console-headers"), headerCount: $("console-header-count"), bodyOut: $("console-body-out"),
    history: $("console-history")
  };
  const csrfToken = form.querySelector("input[name=csrf_token]").value;
  const drafts = {};
  const idlePlaceholder = ui.placeholder.textContent;
  let shownOperation = null;
  let isSending = false;

  function operation() {
    const option = ui.operation.options[ui.operation.selectedIndex];
    return {
      name: option.value,
      method: option.dataset.method,
      needsUuid: option.dataset.needsUuid === "true",
      example: option.dataset.body ? JSON.parse(option.dataset.body) : null,
      query: option.dataset.query || ""
    };
  }

  function queryString() {
    const parts = [];
    if (operation().needsUuid) {
      // A lone surrogate would make encodeURIComponent throw; as U+FFFD the API answers that no code has it.
      const uuid = ui.uuid.value.trim();
      parts.push("uuid=" + encodeURIComponent(uuid.toWellFormed ? uuid.toWellFormed() : uuid));
    }
    const extra = ui.params.value.trim().replace(/^[?&]+/, "");
    if (extra && operation().method === "GET") {
      parts.push(extra);
    }
    return parts.join("&");
  }

  function showOperation() {
    const op = operation();
    if (shownOperation !== null) {
      drafts[shownOperation.name] = { body: ui.body.value, params: ui.params.value };
    }
    const draft = drafts[op.name];
    ui.body.value = draft ? draft.body : (op.example ? JSON.stringify(op.example, null, 2) : "");
    ui.params.value = draft ? draft.params : op.query;
    ui.uuidField.hidden = !op.needsUuid;
    ui.bodyField.hidden = op.method !== "POST";
    ui.paramsField.hidden = op.method !== "GET";
    ui.uuidError.hidden = true;
    shownOperation = op;
    showRequestLine();
  }

  function showRequestLine() {
    const op = operation();
    const query = queryString();
    ui.method.textContent = op.method;
    ui.method.className = "method method-" + op.method.toLowerCase();
    ui.url.textContent = "/api.php" + (query ? "?" + query : "");
  }

  function formatBody() {
    try {
      ui.body.value = JSON.stringify(JSON.parse(ui.body.value), null, 2);
      ui.formatError.hidden = true;
    } catch (error) {
      // Left as typed, since the API's own answer to bad JSON is worth seeing; but say why nothing changed.
      ui.formatError.textContent = "Not valid JSON, so it cannot be formatted: " + error.message;
      ui.formatError.hidden = false;
    }
  }

  function showError(message) {
    ui.error.textContent = message;
    ui.error.hidden = false;
    ui.placeholder.hidden = true;
  }

  // The panel shows one call's answer or nothing: the last answer goes as soon as another call starts or is refused.
  function clearResponse(placeholder) {
    ui.meta.hidden = true;
    ui.response.hidden = true;
    ui.error.hidden = true;
    ui.placeholder.textContent = placeholder;
    ui.placeholder.hidden = false;
  }

  function statusClass(status) {
    return "status-pill status-" + Math.floor(status / 100) + "xx";
  }

  function showResult(result) {
    ui.error.hidden = true;
    ui.placeholder.hidden = true;
    ui.meta.hidden = false;
    ui.response.hidden = false;
    ui.status.className = statusClass(result.status);
    ui.status.textContent = result.status + " " + result.status_text;
    ui.duration.textContent = result.duration_ms + " ms round trip";
    ui.headers.replaceChildren.apply(ui.headers, result.headers.map(function (pair) {
      const row = document.createElement("tr");
      const name = document.createElement("th");
      const value = document.createElement("td");
      name.textContent = pair[0];
      value.textContent = pair[1];
      row.append(name, value);
      return row;
    }));
    ui.headerCount.textContent = "(" + result.headers.length + ")";
    ui.bodyOut.textContent = result.body || "(empty body)";
  }

  function rememberCreatedCode(result) {
    if (operation().name !== "create" || result.status !== 201) {
      return;
    }
    try {
      const created = JSON.parse(result.body);
      if (created.uuid) {
        ui.uuid.value = created.uuid;
      }
    } catch (ignored) {
      // Nothing to remember.
    }
  }

  function refreshHistory() {
    fetch(form.dataset.historyUrl, { credentials: "same-origin" })
      .then(function (response) { return response.ok ? response.text() : null; })
      .then(function (html) {
        if (html !== null) {
          ui.history.innerHTML = html;
        }
      })
      .catch(function () { /* The history catches up on the next call. */ });
  }

  function readAnswer(response) {
    const type = response.headers.get("Content-Type") || "";
    if (response.redirected) {  // to the login page: the session has ended
      throw new Error("Your session has ended. Reload the page to log in again.");
    }
    if (type.indexOf("application/json") === -1) {
      throw new Error("The server answered " + response.status + " " + response.statusText +
                      " instead of the API's answer. Try again, or reload the page.");
    }
    return response.json().then(function (data) {
      if (!response.ok) {
        throw new Error(data.error ? data.error.message : "The console could not send this request.");
      }
      return data;
    });
  }

  function send(event) {
    event.preventDefault();
    // Ctrl + Enter and the Enter key reach here while the disabled button cannot: one call at a time.
    if (isSending) {
      return;
    }
    const op = operation();
    if (op.needsUuid && !ui.uuid.value.trim()) {
      clearResponse(idlePlaceholder);
      ui.uuidError.hidden = false;
      ui.uuid.focus();
      return;
    }
    ui.uuidError.hidden = true;
    clearResponse("Waiting for the answer…");
    isSending = true;
    ui.send.disabled = true;
    ui.send.textContent = "Sending…";
    fetch(form.action, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "Accept": "application/json", "X-CSRFToken": csrfToken },
      body: JSON.stringify({
        key_id: Number(ui.key.value), method: op.method, query: queryString(),
        body: op.method === "POST" ? ui.body.value : ""
      })
    })
      .then(readAnswer)
      .then(function (result) {
        showResult(result);
        rememberCreatedCode(result);
        refreshHistory();
      })
      .catch(function (error) { showError(error.message || "The request could not be sent. Check your connection."); })
      .finally(function () {
        isSending = false;
        ui.send.disabled = false;
        ui.send.textContent = "Send request";
      });
  }

  ui.operation.addEventListener("change", showOperation);
  ui.uuid.addEventListener("input", showRequestLine);
  ui.params.addEventListener("input", showRequestLine);
  ui.format.addEventListener("click", formatBody);
  ui.body.addEventListener("input", () => { ui.formatError.hidden = true; });
  form.addEventListener("submit", send);
  form.addEventListener("keydown", function (event) {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      send(event);
    }
  });
  showOperation();
}());
