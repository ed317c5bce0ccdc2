// The teacher's manual passback page: preview, choose, override, send, follow.
// The teacher token comes in the address fragment (#token=…), which browsers never send to a
// server; it is kept in sessionStorage for this tab, removed from the address bar, and sent
// only as an Authorization header to this service's API.
"use strict";

(() => {
  const TOKEN_KEY = "passback.teacherToken";
  const POLL_MS = 1000;
  const FOLLOW_MS = 120000; // then stop polling: the service keeps retrying on its own
  const app = document.getElementById("app");
  const formativeId = app.dataset.formativeId;
  const form = document.getElementById("passback-form");
  const classesBox = document.getElementById("classes");
  const statusLine = document.getElementById("status");
  const sendButton = document.getElementById("send");
  const selectionCount = document.getElementById("selection-count");

  const state = {
    token: takeToken(),
    mode: "grades",
    preview: null,
    selected: new Set(),
    overrides: new Map(), // student id → {value: string, unit: "percent" | "points"}
    flips: new Map(), // student id → complete (complete/incomplete mode)
    live: new Map(), // student id → the student's row of the batch being followed
    touched: false, // once the teacher changes the selection, reloads keep it
    following: false,
  };

  function takeToken() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) {
      sessionStorage.setItem(TOKEN_KEY, fromHash);
      history.replaceState(null, "", location.pathname + location.search);
      return fromHash;
    }
    return sessionStorage.getItem(TOKEN_KEY);
  }

  async function api(method, path, body, headers = {}) {
    const response = await fetch(path, {
      method,
      headers: {
        Authorization: `Bearer ${state.token}`,
        Accept: "application/json",
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
    const data = await response.json().catch(() => null);
    if (!response.ok) {
      const detail = data && data.detail ? data.detail : `HTTP ${response.status}`;
      const error = new Error(detail);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child) node.append(child);
    return node;
  }

  function number(value) {
    if (value === null || value === undefined) return "—";
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 });
  }

  function when(iso) {
    return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function nameOf(row) {
    return row.student_name || row.student_id;
  }

  function allRows() {
    return state.preview ? state.preview.classes.flatMap((group) => group.rows) : [];
  }

  // --- Status texts --------------------------------------------------------------------------

  function lastPassbackText(last) {
    if (!last) return { text: "Not sent yet", kind: "none" };
    if (last.status === "delivered") {
      const of = last.canvas_points === null ? "" : ` of ${number(last.canvas_points)}`;
      return { text: `Sent ${number(last.score_given)}${of} · ${when(last.at)}`, kind: "delivered" };
    }
    if (last.status === "failed") return { text: `Last send failed (${last.outcome_code})`, kind: "failed" };
    if (last.status === "superseded") return { text: "Last send was replaced", kind: "none" };
    return { text: "Sending…", kind: "pending" };
  }

  function liveText(student) {
    switch (student.status) {
      case "pending":
        return { text: "Queued", kind: "pending" };
      case "in_flight":
        return { text: "Sending…", kind: "pending" };
      case "delivered": {
        const of = student.canvas_points === null ? "" : ` of ${number(student.canvas_points)}`;
        return { text: `Sent: ${number(student.score_given)}${of} points`, kind: "delivered" };
      }
      case "failed": {
        const platform = student.platform_message ? ` Canvas said: “${student.platform_message}”` : "";
        return { text: `Failed: ${student.message || student.reason}${platform}`, kind: "failed" };
      }
      case "superseded":
        return { text: "Replaced by a newer send", kind: "none" };
      case "skipped":
        return { text: `Not sent: ${student.message || student.reason}`, kind: "failed" };
      default:
        return { text: student.status, kind: "none" };
    }
  }

  function statusFor(row) {
    const live = state.live.get(row.student_id);
    if (live) return liveText(live);
    if (!row.sendable) return { text: row.reason_text || row.reason, kind: "blocked" };
    return lastPassbackText(row.last_passback);
  }

  // --- Rendering -----------------------------------------------------------------------------

  function overrideCell(row) {
    const name = nameOf(row);
    if (state.mode === "complete_incomplete") {
      const complete = state.flips.has(row.student_id) ? state.flips.get(row.student_id) : row.complete;
      const box = el("input", {
        type: "checkbox",
        id: `complete-${row.student_id}`,
        "data-role": "complete",
        "data-student-id": row.student_id,
        checked: complete,
        disabled: !row.sendable,
      });
      box.checked = complete;
      return el("td", {}, el("label", { className: "inline" }, box, ` Complete`, el("span", { className: "visually-hidden", text: ` for ${name}` })));
    }
    const current = state.overrides.get(row.student_id) || { value: "", unit: "percent" };
    const input = el("input", {
      type: "number",
      min: "0",
      step: "any",
      inputmode: "decimal",
      id: `override-${row.student_id}`,
      "data-role": "override",
      "data-student-id": row.student_id,
      "aria-label": `Override for ${name}`,
      "aria-describedby": "override-help",
      placeholder: "—",
      disabled: !row.sendable,
    });
    input.value = current.value;
    const unit = el(
      "select",
      {
        "data-role": "unit",
        "data-student-id": row.student_id,
        "aria-label": `Override unit for ${name}`,
        disabled: !row.sendable,
      },
      el("option", { value: "percent", text: "%" }),
      el("option", { value: "points", text: "points" }),
    );
    unit.value = current.unit;
    return el("td", { className: "override" }, input, unit);
  }

  function studentRow(row) {
    const name = nameOf(row);
    const box = el("input", {
      type: "checkbox",
      "data-role": "select",
      "data-student-id": row.student_id,
      "aria-label": `Send ${name}`,
      disabled: !row.sendable,
    });
    box.checked = row.sendable && state.selected.has(row.student_id);
    const status = statusFor(row);
    const formativeScore =
      row.score === null ? "—" : `${number(row.score)} / ${number(row.max_score)}`;
    return el(
      "tr",
      { "data-student-id": row.student_id, className: row.sendable ? "" : "unsendable" },
      el("td", { className: "pick" }, box),
      el("th", { scope: "row", text: name }),
      el("td", { className: "num", text: formativeScore }),
      el("td", { className: "num", text: row.percent === null ? "—" : `${number(row.percent)}%` }),
      el("td", { className: "num", text: row.submitted ? "Yes" : "No" }),
      el("td", { className: "num", text: number(row.canvas_points) }),
      el("td", { className: "num", text: number(row.canvas_score) }),
      overrideCell(row),
      el("td", { className: `status status-${status.kind}`, "data-role": "status", text: status.text }),
    );
  }

  function classTable(group, index) {
    const sendable = group.rows.filter((row) => row.sendable);
    const chosen = sendable.filter((row) => state.selected.has(row.student_id));
    const all = el("input", {
      type: "checkbox",
      "data-role": "select-class",
      "data-class-id": group.class_id,
      id: `class-${index}`,
      disabled: sendable.length === 0,
    });
    all.checked = sendable.length > 0 && chosen.length === sendable.length;
    all.indeterminate = chosen.length > 0 && chosen.length < sendable.length;
    const title = group.course_title ? `${group.course_title} (class ${group.class_id})` : `Class ${group.class_id}`;
    const overrideHeader = state.mode === "complete_incomplete" ? "Complete?" : "Override";
    return el(
      "section",
      { className: "class-block" },
      el(
        "table",
        {},
        el("caption", {}, el("label", { for: `class-${index}` }, all, ` ${title} — send the whole class`)),
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col", text: "Send" }),
            el("th", { scope: "col", text: "Student" }),
            el("th", { scope: "col", text: "Formative score" }),
            el("th", { scope: "col", text: "Percent" }),
            el("th", { scope: "col", text: "Submitted" }),
            el("th", { scope: "col", text: "Canvas points" }),
            el("th", { scope: "col", text: "Canvas score" }),
            el("th", { scope: "col", text: overrideHeader }),
            el("th", { scope: "col", text: "Canvas status" }),
          ),
        ),
        el("tbody", {}, ...group.rows.map(studentRow)),
      ),
    );
  }

  function render() {
    const preview = state.preview;
    document.getElementById("formative-title").textContent = preview.title || `Formative ${preview.formative_id}`;
    const warnings = document.getElementById("warnings");
    const list = document.getElementById("warning-list");
    list.replaceChildren(...preview.warnings.map((warning) => el("li", { text: warning.message })));
    warnings.hidden = preview.warnings.length === 0;
    if (preview.classes.length === 0) {
      classesBox.replaceChildren(el("p", { className: "notice", text: "No student has opened this formative yet." }));
    } else {
      classesBox.replaceChildren(...preview.classes.map(classTable));
    }
    updateCount();
  }

  function updateCount() {
    const count = allRows().filter((row) => row.sendable && state.selected.has(row.student_id)).length;
    selectionCount.textContent = `${count} student${count === 1 ? "" : "s"} selected`;
    sendButton.disabled = count === 0 || state.following;
  }

  async function loadPreview() {
    const path = `/v1/formatives/${encodeURIComponent(formativeId)}/passback/preview?mode=${state.mode}`;
    const preview = await api("GET", path);
    if (!state.touched) {
      state.selected = new Set(allRowsOf(preview).filter((row) => row.sendable).map((row) => row.student_id));
    }
    state.preview = preview;
    render();
  }

  function allRowsOf(preview) {
    return preview.classes.flatMap((group) => group.rows);
  }

  // --- Events --------------------------------------------------------------------------------

  classesBox.addEventListener("change", (event) => {
    const target = event.target;
    const studentId = target.dataset.studentId;
    state.touched = true;
    switch (target.dataset.role) {
      case "select":
        if (target.checked) state.selected.add(studentId);
        else state.selected.delete(studentId);
        render();
        restoreFocus(`input[data-role="select"][data-student-id="${CSS.escape(studentId)}"]`);
        break;
      case "select-class": {
        const group = state.preview.classes.find((item) => item.class_id === target.dataset.classId);
        for (const row of group.rows.filter((item) => item.sendable)) {
          if (target.checked) state.selected.add(row.student_id);
          else state.selected.delete(row.student_id);
        }
        render();
        restoreFocus(`input[data-role="select-class"][data-class-id="${CSS.escape(group.class_id)}"]`);
        break;
      }
      case "complete":
        state.flips.set(studentId, target.checked);
        break;
      case "unit": {
        const current = state.overrides.get(studentId) || { value: "", unit: "percent" };
        state.overrides.set(studentId, { ...current, unit: target.value });
        break;
      }
      default:
        break;
    }
  });

  classesBox.addEventListener("input", (event) => {
    const target = event.target;
    if (target.dataset.role !== "override") return;
    const studentId = target.dataset.studentId;
    const current = state.overrides.get(studentId) || { value: "", unit: "percent" };
    state.overrides.set(studentId, { ...current, value: target.value });
  });

  function restoreFocus(selector) {
    const node = classesBox.querySelector(selector);
    if (node) node.focus();
  }

  form.addEventListener("change", async (event) => {
    if (event.target.name !== "mode") return;
    state.mode = event.target.value;
    await refresh();
  });

  function buildRequest() {
    const chosen = allRows().filter((row) => row.sendable && state.selected.has(row.student_id));
    const overrides = {};
    for (const row of chosen) {
      if (state.mode === "complete_incomplete") {
        if (state.flips.has(row.student_id) && state.flips.get(row.student_id) !== row.complete) {
          overrides[row.student_id] = { complete: state.flips.get(row.student_id) };
        }
        continue;
      }
      const override = state.overrides.get(row.student_id);
      if (override && override.value.trim() !== "") {
        overrides[row.student_id] = { [override.unit]: override.value.trim() };
      }
    }
    const comment = document.getElementById("comment").value.trim();
    return {
      mode: state.mode,
      select: { student_ids: chosen.map((row) => row.student_id) },
      overrides,
      ...(comment ? { comment } : {}),
    };
  }

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const request = buildRequest();
    if (request.select.student_ids.length === 0) return;
    state.following = true;
    updateCount();
    say(`Sending ${request.select.student_ids.length} grades to Canvas…`);
    let answer;
    try {
      answer = await api("POST", `/v1/formatives/${encodeURIComponent(formativeId)}/passback`, request, {
        "Idempotency-Key": newKey(),
      });
    } catch (error) {
      say(`Nothing was sent: ${error.message}`, true);
      state.following = false;
      updateCount();
      return;
    }
    state.live = new Map();
    for (const job of answer.jobs) state.live.set(job.student_id, { student_id: job.student_id, status: "pending" });
    for (const skip of answer.skipped) state.live.set(skip.student_id, { ...skip, status: "skipped" });
    render();
    try {
      await follow(answer.batch_id);
    } catch (error) {
      say(`The grades were queued for Canvas, but their status could not be read: ${error.message}`, true);
    } finally {
      state.following = false;
      updateCount();
    }
  });

  async function follow(batchId) {
    const until = Date.now() + FOLLOW_MS;
    for (;;) {
      const batch = await api("GET", `/v1/passback/batches/${encodeURIComponent(batchId)}`);
      for (const student of batch.students) state.live.set(student.student_id, student);
      updateStatuses();
      const c = batch.counts;
      const parts = [`${c.delivered} sent`];
      if (c.failed) parts.push(`${c.failed} failed`);
      if (c.skipped) parts.push(`${c.skipped} not sendable`);
      if (c.superseded) parts.push(`${c.superseded} replaced by a newer send`);
      if (batch.done) {
        say(`Done: ${parts.join(", ")}.`, c.failed > 0);
        return;
      }
      const waiting = c.pending + c.in_flight;
      if (Date.now() > until) {
        say(`${parts.join(", ")}; ${waiting} still on their way. Canvas is slow to accept them; ` +
          "they keep being retried. Reload this page later to see where they stand.");
        return;
      }
      say(`Sending… ${parts.join(", ")}, ${waiting} still on their way.`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  function updateStatuses() {
    for (const row of allRows()) {
      const cell = classesBox.querySelector(`tr[data-student-id="${CSS.escape(row.student_id)}"] [data-role="status"]`);
      if (!cell) continue;
      const status = statusFor(row);
      cell.textContent = status.text;
      cell.className = `status status-${status.kind}`;
    }
  }

  function say(text, bad = false) {
    statusLine.textContent = text;
    statusLine.className = bad ? "error" : "";
  }

  async function refresh() {
    const loadError = document.getElementById("load-error");
    try {
      await loadPreview();
      loadError.hidden = true;
      form.hidden = false;
    } catch (error) {
      loadError.textContent =
        error.status === 401
          ? "Your sign-in has expired. Open this page again from Formative."
          : `The preview could not be loaded: ${error.message}`;
      loadError.hidden = false;
    }
  }

  // A reload may restore the radio the teacher had chosen: follow it.
  state.mode = form.querySelector('input[name="mode"]:checked').value;
  if (!state.token) {
    document.getElementById("auth-notice").hidden = false;
  } else {
    refresh();
  }
})();
