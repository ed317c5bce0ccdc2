// The teacher's manual passback page: preview, choose, override, confirm, send, follow.
// The teacher token comes in the address fragment (#token=…), which browsers never send to a
// server; it is kept in sessionStorage for this tab, removed from the address bar, and sent
// only as an Authorization header to this service's API.
//
// Nothing here sends by accident: there is no <form> (Enter in a field submits nothing), and
// the Send button only opens a confirmation that says what goes where and what to check.
"use strict";

(() => {
  const TOKEN_KEY = "passback.teacherToken";
  const POLL_MS = 1000;
  const FOLLOW_MS = 120000; // then stop polling: the service keeps retrying on its own
  const MODE_NAMES = { grades: "grades", complete_incomplete: "complete / incomplete" };

  const byId = (id) => document.getElementById(id);
  const app = byId("app");
  const formativeId = app.dataset.formativeId;
  const panel = byId("passback-panel");
  const classesBox = byId("classes");
  const statusLine = byId("status");
  const outcomes = byId("outcomes");
  const sendButton = byId("send");
  const selectionCount = byId("selection-count");
  const loading = byId("loading");
  const loadingText = byId("loading-text");
  const staleNote = byId("stale-note");
  const dialog = byId("confirm");

  const state = {
    token: takeToken(),
    mode: "grades", // the mode the teacher chose
    preview: null, // the preview on screen (its .mode may lag `mode` while a new one loads)
    loads: 0, // the number of the newest preview request: older answers are dropped
    loadingSince: null,
    selected: new Set(),
    overrides: new Map(), // student id → {value: string, unit: "percent" | "points"}
    flips: new Map(), // student id → complete (complete/incomplete mode)
    live: new Map(), // student id → the student's row of the batch being followed
    touched: false, // once the teacher changes the selection, reloads keep it
    following: false,
  };

  // --- Exact decimals ------------------------------------------------------------------------
  // "Will send" must be what the service will send, to the cent. This mirrors
  // app/grading/score.py: exact rationals (BigInt numerator/denominator), rounded half up to
  // hundredths only at the end; points overrides go out as typed; 0 Canvas points give 0
// (a points override too).

  const ZERO = { n: 0n, d: 1n };
  const ONE = { n: 1n, d: 1n };
  const HUNDRED = { n: 100n, d: 1n };

  function exact(value) {
    if (value === null || value === undefined) return null;
    const match = /^\+?(\d*)(?:\.(\d*))?(?:e([+-]?\d+))?$/i.exec(String(value).trim());
    if (!match || (match[1] + (match[2] || "")).length === 0) return null;
    const decimals = match[2] || "";
    let n = BigInt(match[1] + decimals || "0");
    let d = 10n ** BigInt(decimals.length);
    const exponent = Number(match[3] || 0);
    if (exponent > 0) n *= 10n ** BigInt(exponent);
    else if (exponent < 0) d *= 10n ** BigInt(-exponent);
    return { n, d };
  }

  const times = (a, b) => ({ n: a.n * b.n, d: a.d * b.d });
  const over = (a, b) => (b.n === 0n ? ZERO : { n: a.n * b.d, d: a.d * b.n });
  const isZero = (a) => a.n === 0n;
  const compare = (a, b) => {
    const left = a.n * b.d;
    const right = b.n * a.d;
    return left < right ? -1 : left > right ? 1 : 0;
  };

  function toCents(a) {
    // floor(|a| × 100 + ½): half up, as score.py's _to_cents (values here are never negative).
    const cents = (200n * a.n + a.d) / (2n * a.d);
    return { n: cents, d: 100n };
  }

  function decimalText(a) {
    // An exact decimal string when the denominator allows one (always, for cents and typed
    // numbers); otherwise 6 places.
    let d = a.d;
    let places = 0;
    while (d % 10n === 0n) {
      d /= 10n;
      places += 1;
    }
    let scaled;
    if (d === 1n) scaled = a.n * 10n ** BigInt(places) / a.d;
    else {
      places = 6;
      scaled = (a.n * 10n ** 6n * 2n + a.d) / (2n * a.d);
    }
    const digits = scaled.toString().padStart(places + 1, "0");
    const whole = digits.slice(0, digits.length - places);
    const fraction = places ? digits.slice(digits.length - places).replace(/0+$/, "") : "";
    return fraction ? `${whole}.${fraction}` : whole;
  }

  // --- The API -------------------------------------------------------------------------------

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
      error.code = data && data.code ? data.code : null;
      throw error;
    }
    return data;
  }

  function tokenExpiry() {
    // Read (not verified: the server does that) to tell an expired sign-in from a bad token.
    try {
      const part = state.token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
      const claims = JSON.parse(atob(part.padEnd(Math.ceil(part.length / 4) * 4, "=")));
      return typeof claims.exp === "number" ? claims.exp : null;
    } catch {
      return null;
    }
  }

  function signInProblem(error) {
    // The problem `code` decides where the API tells the cases apart; where it answers one
    // code for every bad token, the token's own expiry (or the detail) does.
    const code = error.code || "";
    const expired =
      /expired/.test(code) ||
      (!/invalid|signature/.test(code) &&
        (/expired/i.test(error.message) || (tokenExpiry() !== null && tokenExpiry() * 1000 < Date.now())));
    return expired
      ? "Your sign-in has expired. Open this page again from Formative."
      : "This sign-in link is not valid. Open this page again from Formative.";
  }

  // --- Small helpers -------------------------------------------------------------------------

  function el(tag, attributes = {}, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attributes)) {
      if (value === false || value === null || value === undefined) continue;
      if (name === "text") node.textContent = value;
      else if (name === "className") node.className = value;
      else node.setAttribute(name, value === true ? "" : value);
    }
    for (const child of children) if (child !== null && child !== undefined && child !== false) node.append(child);
    return node;
  }

  function number(value) {
    if (value === null || value === undefined) return "—";
    return Number(value).toLocaleString(undefined, { maximumFractionDigits: 2 });
  }

  function when(iso) {
    return new Date(iso).toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
  }

  function plural(count, one, many = `${one}s`) {
    return `${count} ${count === 1 ? one : many}`;
  }

  function listNames(rows, limit = 6) {
    const names = rows.map(nameOf);
    if (names.length <= limit) return names.join(", ");
    return `${names.slice(0, limit).join(", ")} and ${names.length - limit} more`;
  }

  const nameOf = (row) => row.student_name || `Student ${row.student_id}`;
  const classNameOf = (group) => group.class_name || group.course_title || `Class ${group.class_id}`;
  const groups = () => (state.preview ? state.preview.classes : []);
  const allRows = () => groups().flatMap((group) => group.rows);
  const groupOf = (row) => groups().find((group) => group.rows.includes(row));
  const selectable = (row, group) => row.sendable && !group.refusal;
  const isStale = () => state.preview === null || state.preview.mode !== state.mode || state.loadingSince !== null;

  function chosenRows() {
    return groups().flatMap((group) =>
      group.rows.filter((row) => selectable(row, group) && state.selected.has(row.student_id)),
    );
  }

  // --- What a row would send -----------------------------------------------------------------

  function completeOf(row) {
    return state.flips.has(row.student_id) ? state.flips.get(row.student_id) : row.complete;
  }

  function overrideOf(row) {
    // → null (none), {percent}, {points}, or {invalid: message}, as the API would take it.
    if (state.mode !== "grades") return null;
    const typed = state.overrides.get(row.student_id);
    if (!typed || typed.value.trim() === "") return null;
    const value = exact(typed.value);
    const places = (typed.value.trim().split(".")[1] || "").length;
    if (typed.unit === "points") {
      if (value === null || /e/i.test(typed.value) || places > 2 || compare(value, { n: 1000000n, d: 1n }) > 0) {
        return { invalid: "Points: a number from 0 to 1,000,000 with at most 2 decimals." };
      }
      return { points: value };
    }
    if (value === null || /e/i.test(typed.value) || places > 4 || compare(value, { n: 1000n, d: 1n }) > 0) {
      return { invalid: "Percent: a number from 0 to 1000 with at most 4 decimals." };
    }
    return { percent: value };
  }

  function willSend(row) {
    // The Canvas score a send would give this row now (exact), or null when it cannot be told.
    const override = overrideOf(row);
    if (override && override.invalid) return null;
    const points = exact(row.canvas_points);
    if (points !== null && isZero(points)) return ZERO; // any percentage of zero, points too
    if (override && override.points) return override.points;
    if (points === null) return null;
    let fraction;
    if (override && override.percent) fraction = over(override.percent, HUNDRED);
    else if (state.mode === "complete_incomplete") fraction = completeOf(row) ? ONE : ZERO;
    else if (row.score === null || row.max_score === null) fraction = ZERO;
    else fraction = over(exact(row.score), exact(row.max_score));
    return toCents(times(fraction, points));
  }

  function aboveFullMarks(row) {
    const given = willSend(row);
    const points = exact(row.canvas_points);
    const override = overrideOf(row);
    if (override && override.percent && compare(override.percent, HUNDRED) > 0) return true;
    return given !== null && points !== null && !isZero(points) && compare(given, points) > 0;
  }

  // --- Status texts --------------------------------------------------------------------------

  function lastPassbackText(last) {
    if (!last) return { text: "Not sent yet", kind: "none" };
    if (last.status === "delivered") {
      const of = last.canvas_points === null ? "" : ` of ${number(last.canvas_points)}`;
      return { text: `Sent ${number(last.score_given)}${of} · ${when(last.at)}`, kind: "delivered" };
    }
    if (last.status === "failed") return { text: "The last send failed", kind: "failed" };
    if (last.status === "superseded") return { text: "The last send was replaced", kind: "none" };
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
      case "failed":
        return { text: "Not sent: see why below", kind: "failed" };
      case "superseded":
        return { text: "Replaced by a newer send", kind: "none" };
      case "skipped":
        return { text: "Not sent: see why below", kind: "failed" };
      default:
        return { text: student.status, kind: "none" };
    }
  }

  function statusFor(row, group) {
    const live = state.live.get(row.student_id);
    if (live) return liveText(live);
    if (group.refusal) return { text: "Canvas refuses grades for this class (see above)", kind: "blocked" };
    if (!row.sendable) return { text: row.reason_text || row.reason, kind: "blocked" };
    return lastPassbackText(row.last_passback);
  }

  // --- Rendering -----------------------------------------------------------------------------

  function overrideCell(row, group) {
    const name = nameOf(row);
    const off = !selectable(row, group) || isStale();
    if (state.mode === "complete_incomplete") {
      const box = el("input", {
        type: "checkbox",
        id: `complete-${row.student_id}`,
        "data-role": "complete",
        "data-student-id": row.student_id,
        disabled: off,
      });
      box.checked = completeOf(row);
      const label = el("label", { className: "inline" }, box, " Complete", el("span", { className: "visually-hidden", text: ` for ${name}` }));
      return el("td", { className: "override", "data-label": "Complete?" }, label);
    }
    const current = state.overrides.get(row.student_id) || { value: "", unit: "percent" };
    const override = overrideOf(row);
    const input = el("input", {
      type: "text",
      inputmode: "decimal",
      autocomplete: "off",
      id: `override-${row.student_id}`,
      "data-role": "override",
      "data-student-id": row.student_id,
      "aria-label": `Override for ${name}`,
      "aria-describedby": "override-help",
      "aria-invalid": override && override.invalid ? "true" : false,
      placeholder: "—",
      disabled: off,
    });
    input.value = current.value;
    const unit = el(
      "select",
      {
        "data-role": "unit",
        "data-student-id": row.student_id,
        "aria-label": `Override unit for ${name}`,
        disabled: off,
      },
      el("option", { value: "percent", text: "%" }),
      el("option", { value: "points", text: "points" }),
    );
    unit.value = current.unit;
    const problem = el("span", { className: "field-error", "data-role": "override-error", text: override && override.invalid ? override.invalid : "" });
    return el("td", { className: "override", "data-label": "Override" }, input, unit, problem);
  }

  function willSendCell(row, group) {
    const cell = el("td", { className: "num score", "data-role": "will-send", "data-label": "Will send" });
    fillWillSend(cell, row, group);
    return cell;
  }

  function fillWillSend(cell, row, group) {
    const given = selectable(row, group) ? willSend(row) : null;
    cell.dataset.value = given === null ? "" : decimalText(given);
    if (given === null) {
      cell.textContent = "—";
      return;
    }
    const of = row.canvas_points === null ? "" : ` / ${number(row.canvas_points)}`;
    cell.textContent = `${number(decimalText(given))}${of}`;
    if (aboveFullMarks(row)) cell.append(el("span", { className: "badge over", text: "above 100 %" }));
  }

  function canvasNowCell(row) {
    const cell = el("td", { className: "num score", "data-role": "canvas-now", "data-label": "In Canvas now" });
    const stateOf = row.canvas_now_state;
    if (stateOf === "read") cell.textContent = number(row.canvas_now);
    else if (stateOf === "none") cell.append(el("span", { className: "unknown", text: "No grade" }));
    else cell.append(el("span", { className: "unknown", title: "Canvas did not let this page read the grade", text: "Unknown" }));
    cell.dataset.value = stateOf === "read" ? String(row.canvas_now) : "";
    if (row.changed_in_canvas) {
      cell.append(el("span", { className: "badge changed", "data-role": "changed-in-canvas", text: "changed in Canvas by hand" }));
    }
    return cell;
  }

  function studentRow(row, group) {
    const name = nameOf(row);
    const box = el("input", {
      type: "checkbox",
      "data-role": "select",
      "data-student-id": row.student_id,
      "aria-label": `Send ${name}`,
      disabled: !selectable(row, group) || isStale(),
    });
    box.checked = selectable(row, group) && state.selected.has(row.student_id);
    const status = statusFor(row, group);
    const formative =
      row.score === null
        ? "—"
        : `${number(row.score)} / ${number(row.max_score)}${row.percent === null ? "" : ` · ${number(row.percent)}%`}`;
    const classes = [selectable(row, group) ? "" : "unsendable", row.changed_in_canvas ? "changed" : ""];
    return el(
      "tr",
      { "data-student-id": row.student_id, className: classes.join(" ").trim() },
      el("td", { className: "pick", "data-label": "Send" }, box),
      el("th", { scope: "row", className: "student", text: name }),
      el("td", { className: "num", "data-label": "Formative", text: formative }),
      el("td", { className: "num", "data-label": "Submitted", text: row.submitted ? "Yes" : "No" }),
      overrideCell(row, group),
      willSendCell(row, group),
      canvasNowCell(row),
      el("td", { className: `status status-${status.kind}`, "data-role": "status", "data-label": "Status", text: status.text }),
    );
  }

  function classBlock(group, index) {
    const pickable = group.rows.filter((row) => selectable(row, group));
    const chosen = pickable.filter((row) => state.selected.has(row.student_id));
    const all = el("input", {
      type: "checkbox",
      "data-role": "select-class",
      "data-class-id": group.class_id,
      id: `class-${index}`,
      disabled: pickable.length === 0 || isStale(),
    });
    all.checked = pickable.length > 0 && chosen.length === pickable.length;
    all.indeterminate = chosen.length > 0 && chosen.length < pickable.length;
    const title = classNameOf(group);
    const course = group.course_title && group.course_title !== title ? `Canvas course: ${group.course_title}` : null;
    // A refusal is told once, in the teacher's words, with the platform's own beside it.
    const refusedBy = (item) => group.refusal && item.problem_code === group.refusal.code;
    const problems = (group.lineitems || []).filter((item) => item.problem_message && !refusedBy(item));
    const platformWords = (group.lineitems || []).find((item) => refusedBy(item) && item.problem_message);
    return el(
      "section",
      { className: "class-block", "data-class-id": group.class_id, "aria-labelledby": `class-title-${index}` },
      el(
        "div",
        { className: "class-head" },
        el("h2", { id: `class-title-${index}`, text: title }),
        course ? el("p", { className: "course", text: course }) : null,
        el("label", { for: `class-${index}`, className: "inline" }, all, ` Send the whole class (${pickable.length})`),
      ),
      group.refusal
        ? el(
            "p",
            { className: "refusal", "data-role": "refusal", role: "note" },
            el("strong", { text: "Canvas will not take grades for this class: " }),
            group.refusal.message,
            platformWords ? el("span", { className: "platform-words", text: ` Canvas said: “${platformWords.problem_message}”` }) : null,
          )
        : null,
      ...problems.map((item) => el("p", { className: "class-problem", text: item.problem_message })),
      el(
        "table",
        {},
        el(
          "thead",
          {},
          el(
            "tr",
            {},
            el("th", { scope: "col", text: "Send" }),
            el("th", { scope: "col", text: "Student" }),
            el("th", { scope: "col", text: "Formative" }),
            el("th", { scope: "col", text: "Submitted" }),
            el("th", { scope: "col", text: state.mode === "complete_incomplete" ? "Complete?" : "Override" }),
            el("th", { scope: "col", text: "Will send" }),
            el("th", { scope: "col", text: "In Canvas now" }),
            el("th", { scope: "col", text: "Status" }),
          ),
        ),
        el("tbody", {}, ...group.rows.map((row) => studentRow(row, group))),
      ),
    );
  }

  function renderEmptyState(preview) {
    const blocks = preview.classes.map((group) => {
      const waiting = group.rows.filter((row) => !row.launched);
      return el(
        "div",
        { className: "waiting", "data-class-id": group.class_id },
        el("h3", { text: `${classNameOf(group)}: ${plural(waiting.length, "student")} still to open it from Canvas` }),
        el("ul", {}, ...waiting.map((row) => el("li", { text: nameOf(row) }))),
      );
    });
    byId("not-launched").replaceChildren(...blocks);
  }

  function render() {
    const preview = state.preview;
    byId("formative-title").textContent = preview.title || `Formative ${preview.formative_id}`;
    if (preview.activity === false) {
      panel.hidden = true;
      byId("empty-state").hidden = false;
      renderEmptyState(preview);
      return;
    }
    byId("empty-state").hidden = true;
    panel.hidden = false;
    const byClass = new Map(preview.classes.map((group) => [group.class_id, group]));
    const warnings = byId("warnings");
    // A class's refusal is told in its own block, not again here.
    const shown = preview.warnings.filter((warning) => {
      const group = warning.class_id ? byClass.get(warning.class_id) : null;
      return !(group && group.refusal && group.refusal.code === warning.code);
    });
    byId("warning-list").replaceChildren(
      ...shown.map((warning) => {
        const group = warning.class_id ? byClass.get(warning.class_id) : null;
        return el("li", { text: group ? `${classNameOf(group)}: ${warning.message}` : warning.message });
      }),
    );
    warnings.hidden = shown.length === 0;
    if (preview.classes.length === 0) {
      classesBox.replaceChildren(el("p", { className: "notice", text: "No student has opened this formative yet." }));
    } else {
      classesBox.replaceChildren(...preview.classes.map(classBlock));
    }
    byId("override-help").hidden = preview.mode === "complete_incomplete";
    renderStale();
  }

  function renderStale() {
    const stale = isStale() && state.preview !== null;
    classesBox.classList.toggle("stale", stale);
    classesBox.setAttribute("aria-busy", stale ? "true" : "false");
    staleNote.hidden = !stale;
    if (stale) {
      staleNote.textContent = `Updating the table for ${MODE_NAMES[state.mode]}… The rows below are for ${MODE_NAMES[state.preview.mode]} and cannot be sent.`;
    }
    updateCount();
  }

  function updateCount() {
    const count = chosenRows().length;
    const invalid = chosenRows().some((row) => {
      const override = overrideOf(row);
      return override && override.invalid;
    });
    selectionCount.textContent = `${plural(count, "student")} selected${invalid ? " · fix the override marked in red first" : ""}`;
    sendButton.disabled = count === 0 || state.following || isStale() || invalid;
  }

  function refreshRow(studentId) {
    const row = allRows().find((item) => item.student_id === studentId);
    if (!row) return;
    const group = groupOf(row);
    const line = classesBox.querySelector(`tr[data-student-id="${CSS.escape(studentId)}"]`);
    fillWillSend(line.querySelector('[data-role="will-send"]'), row, group);
    const override = overrideOf(row);
    const problem = line.querySelector('[data-role="override-error"]');
    const input = line.querySelector('[data-role="override"]');
    if (problem) problem.textContent = override && override.invalid ? override.invalid : "";
    if (input) {
      if (override && override.invalid) input.setAttribute("aria-invalid", "true");
      else input.removeAttribute("aria-invalid");
    }
    updateCount();
  }

  // --- Loading -------------------------------------------------------------------------------

  function showLoading() {
    if (state.preview !== null) {
      loading.hidden = true;
      renderStale();
      return;
    }
    const seconds = Math.floor((Date.now() - state.loadingSince) / 1000);
    loadingText.textContent =
      seconds < 2
        ? "Reading your students' grades from Canvas…"
        : `Reading your students' grades from Canvas… ${seconds} s (Canvas is slow to answer)`;
    loading.hidden = false;
  }

  async function refresh() {
    const mine = ++state.loads;
    const mode = state.mode;
    state.loadingSince = Date.now();
    showLoading();
    const ticker = setInterval(() => mine === state.loads && state.loadingSince !== null && showLoading(), 1000);
    const loadError = byId("load-error");
    try {
      const path = `/v1/formatives/${encodeURIComponent(formativeId)}/passback/preview?mode=${mode}`;
      const preview = await api("GET", path);
      if (mine !== state.loads) return; // a newer request (another mode switch) is on its way
      if (!state.touched) {
        state.selected = new Set(
          preview.classes.flatMap((group) =>
            group.rows.filter((row) => selectable(row, group) && row.default_selected).map((row) => row.student_id),
          ),
        );
      }
      state.loadingSince = null;
      state.preview = preview;
      loadError.hidden = true;
      loading.hidden = true;
      render();
    } catch (error) {
      if (mine !== state.loads) return;
      state.loadingSince = null;
      loading.hidden = true;
      loadError.textContent =
        error.status === 401 ? signInProblem(error) : `The preview could not be loaded: ${error.message}`;
      loadError.hidden = false;
      if (state.preview !== null) {
        // Back to the table on screen: its mode is the one that would be sent.
        state.mode = state.preview.mode;
        const radio = document.querySelector(`input[name="mode"][value="${state.mode}"]`);
        if (radio) radio.checked = true;
        render();
      }
    } finally {
      clearInterval(ticker);
    }
  }

  // --- Events --------------------------------------------------------------------------------

  classesBox.addEventListener("change", (event) => {
    const target = event.target;
    const studentId = target.dataset.studentId;
    switch (target.dataset.role) {
      case "select":
        state.touched = true;
        if (target.checked) state.selected.add(studentId);
        else state.selected.delete(studentId);
        render();
        restoreFocus(`input[data-role="select"][data-student-id="${CSS.escape(studentId)}"]`);
        break;
      case "select-class": {
        state.touched = true;
        const group = groups().find((item) => item.class_id === target.dataset.classId);
        for (const row of group.rows.filter((item) => selectable(item, group))) {
          if (target.checked) state.selected.add(row.student_id);
          else state.selected.delete(row.student_id);
        }
        render();
        restoreFocus(`input[data-role="select-class"][data-class-id="${CSS.escape(group.class_id)}"]`);
        break;
      }
      case "complete":
        state.flips.set(studentId, target.checked);
        refreshRow(studentId);
        break;
      case "unit": {
        const current = state.overrides.get(studentId) || { value: "", unit: "percent" };
        state.overrides.set(studentId, { ...current, unit: target.value });
        refreshRow(studentId);
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
    refreshRow(studentId);
  });

  function restoreFocus(selector) {
    const node = classesBox.querySelector(selector);
    if (node) node.focus();
  }

  byId("mode").addEventListener("change", (event) => {
    if (event.target.name !== "mode") return;
    state.mode = event.target.value;
    byId("override-help").hidden = state.mode === "complete_incomplete";
    renderStale();
    refresh();
  });

  // --- Confirm, then send --------------------------------------------------------------------

  function buildRequest() {
    const chosen = chosenRows();
    const overrides = {};
    for (const row of chosen) {
      if (state.mode === "complete_incomplete") {
        if (state.flips.has(row.student_id) && state.flips.get(row.student_id) !== row.complete) {
          overrides[row.student_id] = { complete: state.flips.get(row.student_id) };
        }
        continue;
      }
      const override = overrideOf(row);
      if (override && override.points) overrides[row.student_id] = { points: state.overrides.get(row.student_id).value.trim() };
      if (override && override.percent) overrides[row.student_id] = { percent: state.overrides.get(row.student_id).value.trim() };
    }
    const comment = byId("comment").value.trim();
    return {
      mode: state.mode,
      select: { student_ids: chosen.map((row) => row.student_id) },
      overrides,
      ...(comment ? { comment } : {}),
    };
  }

  function confirmationWarnings(chosen) {
    const warnings = [];
    const add = (rows, text) => rows.length && warnings.push(`${text}: ${listNames(rows)}.`);
    add(chosen.filter(aboveFullMarks), `${plural(chosen.filter(aboveFullMarks).length, "grade")} above 100 % (extra credit)`);
    const unsubmitted = chosen.filter((row) => !row.submitted);
    if (state.mode === "grades") {
      add(unsubmitted, `${plural(unsubmitted.length, "student")} did not submit; they get the score of their unfinished work`);
    } else {
      add(unsubmitted, `${plural(unsubmitted.length, "student")} did not submit`);
    }
    const changed = chosen.filter((row) => row.changed_in_canvas);
    add(changed, `${plural(changed.length, "grade")} changed in Canvas by hand will be overwritten`);
    const zeroPoints = chosen.filter((row) => {
      const override = overrideOf(row);
      const points = exact(row.canvas_points);
      return override && override.points && points !== null && isZero(points);
    });
    add(zeroPoints, `${plural(zeroPoints.length, "points override")} on a Canvas assignment worth 0 points will be 0 (give the assignment points in Canvas first for extra credit)`);
    const zeroGrades = chosen.filter((row) => {
      const points = exact(row.canvas_points);
      return points !== null && isZero(points) && !zeroPoints.includes(row);
    });
    add(zeroGrades, `The Canvas assignment is worth 0 points, so ${plural(zeroGrades.length, "grade")} will be 0`);
    const unknown = chosen.filter((row) => willSend(row) === null);
    add(unknown, `Canvas's points could not be read for ${plural(unknown.length, "student")}; their grades are worked out when they are delivered`);
    for (const group of groups().filter((item) => item.refusal)) {
      warnings.push(`Nothing goes to ${classNameOf(group)}: ${group.refusal.message}`);
    }
    return warnings;
  }

  function openConfirmation() {
    if (sendButton.disabled) return;
    const chosen = chosenRows();
    const summary = groups()
      .map((group) => {
        const rows = chosen.filter((row) => groupOf(row) === group);
        if (!rows.length) return null;
        const points = [...new Set(rows.map((row) => row.canvas_points).filter((value) => value !== null))];
        const worth = points.length ? `, worth ${points.map(number).join(" or ")} points` : "";
        const title = classNameOf(group);
        const course = group.course_title && group.course_title !== title ? ` (Canvas course “${group.course_title}”)` : "";
        return el("li", { text: `${plural(rows.length, "grade")} to ${title}${course}: its Canvas assignment${worth}` });
      })
      .filter(Boolean);
    const mode = state.mode === "grades" ? "grades (percent of the Canvas points)" : "complete / incomplete (100 % or 0 %)";
    summary.push(el("li", { text: `What: ${mode}${byId("comment").value.trim() ? ", with your comment" : ""}.` }));
    byId("confirm-summary").replaceChildren(...summary);
    const warnings = confirmationWarnings(chosen);
    byId("confirm-warning-list").replaceChildren(...warnings.map((text) => el("li", { text })));
    byId("confirm-warnings").hidden = warnings.length === 0;
    byId("confirm-send").textContent = `Yes, send ${plural(chosen.length, "grade")}`;
    dialog.showModal();
    byId("confirm-title").focus();
  }

  sendButton.addEventListener("click", openConfirmation);
  byId("confirm-cancel").addEventListener("click", () => dialog.close());
  byId("confirm-send").addEventListener("click", () => {
    dialog.close();
    send();
  });

  function newKey() {
    if (crypto.randomUUID) return crypto.randomUUID();
    return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
  }

  async function send() {
    const request = buildRequest();
    if (request.select.student_ids.length === 0 || isStale()) return;
    state.following = true;
    updateCount();
    outcomes.hidden = true;
    say(`Sending ${plural(request.select.student_ids.length, "grade")} to Canvas…`);
    let answer;
    try {
      answer = await api("POST", `/v1/formatives/${encodeURIComponent(formativeId)}/passback`, request, {
        "Idempotency-Key": newKey(),
      });
    } catch (error) {
      say(error.status === 401 ? `Nothing was sent. ${signInProblem(error)}` : `Nothing was sent: ${error.message}`, true);
      state.following = false;
      updateCount();
      return;
    }
    state.live = new Map();
    for (const job of answer.jobs) state.live.set(job.student_id, { student_id: job.student_id, status: "pending" });
    for (const skip of answer.skipped) state.live.set(skip.student_id, { ...skip, status: "skipped" });
    render();
    let done = false;
    try {
      done = await follow(answer.batch_id);
    } catch (error) {
      say(`The grades were queued for Canvas, but their status could not be read: ${error.message}`, true);
    } finally {
      state.following = false;
      updateCount();
    }
    if (done) {
      state.touched = false; // what is in Canvas changed: default to what would change now
      await refresh();
    }
  }

  async function follow(batchId) {
    const until = Date.now() + FOLLOW_MS;
    for (;;) {
      const batch = await api("GET", `/v1/passback/batches/${encodeURIComponent(batchId)}`);
      for (const student of batch.students) state.live.set(student.student_id, student);
      updateStatuses();
      showOutcomes(batch.students);
      const c = batch.counts;
      const parts = [`${c.delivered} sent`];
      if (c.failed) parts.push(`${c.failed} failed`);
      if (c.skipped) parts.push(`${c.skipped} not sendable`);
      if (c.superseded) parts.push(`${c.superseded} replaced by a newer send`);
      if (batch.done) {
        say(`Done: ${parts.join(", ")}.`, c.failed + c.skipped > 0);
        return true;
      }
      const waiting = c.pending + c.in_flight;
      if (Date.now() > until) {
        say(`${parts.join(", ")}; ${waiting} still on their way. Canvas is slow to accept them; ` +
          "they keep being retried. Reload this page later to see where they stand.");
        return false;
      }
      say(`Sending… ${parts.join(", ")}, ${waiting} still on their way.`);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  }

  function showOutcomes(students) {
    // One message per cause (not one per student): what went wrong, what to do, who.
    const causes = new Map();
    for (const student of students) {
      if (student.status !== "failed" && student.status !== "skipped") continue;
      const key = `${student.status}|${student.reason}|${student.platform_message || ""}`;
      if (!causes.has(key)) causes.set(key, { student, ids: [] });
      causes.get(key).ids.push(student.student_id);
    }
    const names = (ids) => {
      const rows = ids.map((id) => allRows().find((row) => row.student_id === id) || { student_id: id });
      return listNames(rows, 10);
    };
    const items = [...causes.values()].map(({ student, ids }) => {
      const verb = student.status === "failed" ? "Canvas did not take" : "Not sent";
      const platform = student.platform_message ? ` Canvas said: “${student.platform_message}”` : "";
      return el(
        "li",
        { className: "outcome", "data-reason": student.reason || "" },
        el("strong", { text: `${verb}: ${plural(ids.length, "grade")}. ` }),
        `${student.message || student.reason}${platform} `,
        el("span", { className: "who", text: `(${names(ids)})` }),
      );
    });
    outcomes.replaceChildren(...items);
    outcomes.hidden = items.length === 0;
  }

  function updateStatuses() {
    for (const group of groups()) {
      for (const row of group.rows) {
        const cell = classesBox.querySelector(`tr[data-student-id="${CSS.escape(row.student_id)}"] [data-role="status"]`);
        if (!cell) continue;
        const status = statusFor(row, group);
        cell.textContent = status.text;
        cell.className = `status status-${status.kind}`;
      }
    }
  }

  function say(text, bad = false) {
    statusLine.textContent = text;
    statusLine.className = bad ? "error" : "";
  }

  // A reload may restore the radio the teacher had chosen: follow it.
  state.mode = document.querySelector('input[name="mode"]:checked').value;
  if (!state.token) {
    byId("auth-notice").hidden = false;
  } else {
    refresh();
  }
})();
