/* Lookalike's web page: one more client of the REST API, with the user's key.
 *
 * No framework and no build step. Views are functions of the URL's hash (#/, #/subjects/{id},
 * #/trainings/{id}, #/models/{id}); each builds its DOM with h() (text nodes only, never HTML from
 * the server), polls or streams what it shows, and stops when the user leaves it.
 */
"use strict";

const KEY = "lookalike.key";
const POLL_MS = 1500;
const UPLOAD_BATCH_BYTES = 64 * 1024 * 1024; // one request per this many bytes: a progress bar each
const STAGES = [
  ["queued", "Queued"],
  ["preparing", "Preparing photos"],
  ["training", "Training"],
  ["assessing", "Checking quality"],
  ["succeeded", "Ready"],
];
const ACTIVE = new Set(["queued", "preparing", "training", "assessing"]);
const VERDICT_WORDS = { accepted: "Good", warning: "Usable, check", rejected: "Not used" };
const FILE_FORMATS = {
  diffusers: "for diffusers (pipe.load_lora_weights)",
  kohya: "for ComfyUI, AUTOMATIC1111 and Forge",
};
const ASPECTS = ["1:1", "2:3", "3:2", "4:5", "5:4", "9:16", "16:9"];

// ---------------------------------------------------------------- DOM

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) el.addEventListener(name.slice(2), value);
    else if (name === "class") el.className = value;
    else if (name === "text") el.textContent = value;
    else if (name in el && !name.includes("-") && typeof value !== "string") el[name] = value;
    else el.setAttribute(name, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

const $ = (selector, root = document) => root.querySelector(selector);

function announce(text) {
  const region = $("#announce");
  region.textContent = "";
  setTimeout(() => { region.textContent = text; }, 50);
}

function fmtBytes(n) {
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(0)} KB`;
  return `${(n / 1024 / 1024).toFixed(1)} MB`;
}

function fmtSeconds(s) {
  if (s === null || s === undefined) return "";
  s = Math.max(0, Math.round(s));
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${s % 60} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

function pct(x) {
  return x === null || x === undefined ? "n/a" : `${Math.round(x * 100)} %`;
}

// ---------------------------------------------------------------- the API

class ApiError extends Error {
  constructor(status, body) {
    const error = (body && body.error) || {};
    super(error.message || `The service answered with status ${status}.`);
    this.status = status;
    this.code = error.code || `http_${status}`;
    this.hint = error.hint || "";
    this.error = error;
  }
}

const apiKey = () => sessionStorage.getItem(KEY);

// The server writes absolute URLs with its public address; the page asks its own origin for the same path.
function local(url) {
  const parsed = new URL(url, location.origin);
  return parsed.pathname + parsed.search;
}

async function api(method, path, { json, headers, raw, signal } = {}) {
  const init = { method, headers: { ...(headers || {}) }, signal };
  const key = apiKey();
  if (key) init.headers.Authorization = `Bearer ${key}`;
  if (json !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(local(path), init);
  } catch (err) {
    if (err.name === "AbortError") throw err;
    throw new ApiError(0, {
      error: {
        code: "unreachable",
        message: "The page could not reach the Lookalike service.",
        hint: "Check that it is still running, then try again.",
      },
    });
  }
  if (!response.ok) {
    let body = null;
    try { body = await response.json(); } catch (_) { /* not JSON: the status says enough */ }
    throw new ApiError(response.status, body);
  }
  if (raw) return response;
  return response.status === 204 ? null : response.json();
}

async function everything(path) {
  const items = [];
  let cursor = null;
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api("GET", `${path}${sep}limit=1000${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    items.push(...page.items);
    cursor = page.next_cursor;
  } while (cursor);
  return items;
}

// Images need the key, which an <img src> cannot send: fetch them, show them as blob: URLs.
const blobs = new Map();
function blobUrl(url) {
  if (!blobs.has(url)) {
    const made = api("GET", url, { raw: true })
      .then((r) => r.blob())
      .then((b) => URL.createObjectURL(b));
    made.catch(() => blobs.delete(url));
    blobs.set(url, made);
  }
  return blobs.get(url);
}

function authImg(url, alt, attrs) {
  const img = h("img", { alt, decoding: "async", ...(attrs || {}) });
  blobUrl(url)
    .then((src) => { img.src = src; })
    .catch(() => { img.alt = `${alt} (could not be loaded)`; });
  return img;
}

function errorBox(err, extra) {
  const box = h("div", { class: "problem", role: "alert" }, h("p", { text: err.message }));
  if (err.hint) box.append(h("p", {}, h("strong", { text: "What to do: " }), err.hint));
  if (extra) box.append(extra);
  return box;
}

function deleteButton(label, question, path, done) {
  const button = h("button", { type: "button", class: "danger", text: label });
  button.addEventListener("click", async () => {
    if (!window.confirm(question)) return;
    button.disabled = true;
    try {
      await api("DELETE", path);
      announce(done);
      location.hash = "#/";
    } catch (err) {
      button.after(errorBox(err));
      button.disabled = false;
    }
  });
  return button;
}

// ---------------------------------------------------------------- views and their lifetime

let view = { id: 0, timers: [], aborts: [] };

function leaveView() {
  view.timers.forEach(clearTimeout);
  view.aborts.forEach((c) => c.abort());
  view = { id: view.id + 1, timers: [], aborts: [] };
  return view;
}

const current = (v) => v.id === view.id;

function later(v, fn, ms) {
  if (current(v)) v.timers.push(setTimeout(() => current(v) && fn(), ms));
}

function setStep(step) {
  const names = [...document.querySelectorAll("#steps li")].map((li) => li.dataset.step);
  const at = names.indexOf(step);
  document.querySelectorAll("#steps li").forEach((li, i) => {
    li.classList.toggle("done", i < at);
    if (i === at) li.setAttribute("aria-current", "step");
    else li.removeAttribute("aria-current");
  });
}

function render(title, step, ...nodes) {
  const main = $("#main");
  main.replaceChildren(h("h1", { tabindex: "-1", text: title }), ...nodes);
  document.title = `${title} · Lookalike`;
  setStep(step);
  $("h1", main).focus();
}

function renderError(title, err) {
  render(title, "sign-in", errorBox(err), h("p", {}, h("a", { href: "#/", text: "Back to the start" })));
}

// ---------------------------------------------------------------- 1. sign in

let me = null;

function signOut(message) {
  sessionStorage.removeItem(KEY);
  me = null;
  blobs.forEach((p) => p.then(URL.revokeObjectURL, () => {}));
  blobs.clear();
  $("#account").hidden = true;
  signInView(message);
}

function signInView(message) {
  leaveView();
  const input = h("input", {
    id: "api-key", type: "password", name: "api_key", autocomplete: "off", spellcheck: "false",
    "aria-describedby": "api-key-hint",
  });
  const status = h("div", { "aria-live": "assertive" });
  const form = h(
    "form",
    { class: "card", novalidate: true },
    h("div", { class: "field" },
      h("label", { for: "api-key", text: "API key" }),
      input,
      h("span", { id: "api-key-hint", class: "hint" },
        "Your key starts with lk_. An operator creates one with ",
        h("code", { text: "lookalike users create you@example.com" }),
        ". It is kept in this tab only, until you sign out or close it.")),
    status,
    h("button", { type: "submit", text: "Sign in" }),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = input.value.trim();
    status.replaceChildren();
    if (!key) {
      status.append(errorBox({ message: "Enter your API key." }));
      input.focus();
      return;
    }
    sessionStorage.setItem(KEY, key);
    try {
      me = await api("GET", "/v1/me");
    } catch (err) {
      sessionStorage.removeItem(KEY);
      const shown = err.status === 401
        ? { message: "This API key was not accepted.", hint: "Check that you pasted the whole key, and that it was not revoked." }
        : err;
      status.append(errorBox(shown));
      input.focus();
      return;
    }
    announce(`Signed in as ${me.email}`);
    route(); // the view the address asked for, or the start page
  });
  render("Sign in", "sign-in",
    h("p", {}, "Train a personal face model from your photos, on this server. Sign in with your API key to start."),
    form);
  if (message) form.prepend(h("div", { class: "note", role: "alert", text: message }));
  input.focus();
}

function showAccount() {
  $("#account").hidden = false;
  $("#account-email").textContent = me.email;
}

// ---------------------------------------------------------------- home: subjects, trainings, models

async function homeView(v) {
  const [subjects, trainings, models, statement] = await Promise.all([
    everything("/v1/subjects"), everything("/v1/trainings"), everything("/v1/models"), api("GET", "/v1/consent"),
  ]);
  if (!current(v)) return;
  const name = h("input", { id: "subject-name", type: "text", maxlength: 100, autocomplete: "off" });
  const classWord = h("select", { id: "subject-class", "aria-describedby": "class-hint" },
    ["person", "woman", "man", "girl", "boy"].map((w) => h("option", { value: w, text: w })));
  const consent = h("input", { id: "subject-consent", type: "checkbox", "aria-describedby": "consent-text" });
  const status = h("div");
  const form = h("form", { class: "card", novalidate: true },
    h("h2", { text: "New subject" }),
    h("p", { class: "muted small", text: "A subject is the person the model will learn. Their photos go with it." }),
    h("div", { class: "field" }, h("label", { for: "subject-name", text: "Name" }), name),
    h("div", { class: "field" },
      h("label", { for: "subject-class", text: "Who is it?" }), classWord,
      h("span", { id: "class-hint", class: "hint", text: "The class word the prompts use, as in \u201cphoto of tok woman\u201d." })),
    h("div", { class: "field" },
      h("span", { class: "label", id: "consent-h", text: "Consent" }),
      h("p", { id: "consent-text", class: "statement", text: statement.text })),
    h("div", { class: "field check" }, consent,
      h("label", { for: "subject-consent", text: "I agree to this statement." })),
    status,
    h("button", { type: "submit", text: "Create subject" }));
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    if (!name.value.trim()) {
      status.append(errorBox({ message: "Give the subject a name." }));
      name.focus();
      return;
    }
    if (!consent.checked) {
      status.append(errorBox({
        message: "Training a model of a person needs their consent.",
        hint: "Tick the box to confirm that you are this person or have their permission.",
      }));
      consent.focus();
      return;
    }
    try {
      const subject = await api("POST", "/v1/subjects", {
        json: {
          name: name.value.trim(), class_word: classWord.value, consent: consent.checked,
          consent_version: statement.version, // the version of the text this person was shown
        },
      });
      location.hash = `#/subjects/${subject.id}`;
    } catch (err) {
      status.append(errorBox(err));
    }
  });

  const subjectList = subjects.length
    ? h("ul", { class: "list" }, subjects.map((s) => h("li", {},
      h("a", { href: `#/subjects/${s.id}`, text: s.name }),
      h("span", { class: "muted small", text: `${s.photos.total} photos` }))))
    : h("p", { class: "muted", text: "No subjects yet: create one to upload photos." });
  const trainingList = trainings.length
    ? h("ul", { class: "list" }, [...trainings].reverse().map((t) => h("li", {},
      h("a", { href: `#/trainings/${t.id}`, text: t.name }),
      h("span", { class: `badge ${t.status}`, text: t.status }),
      h("span", { class: "muted small", text: t.base_model }))))
    : h("p", { class: "muted", text: "No trainings yet." });
  const modelList = models.length
    ? h("ul", { class: "list" }, [...models].reverse().map((m) => h("li", {},
      h("a", { href: `#/models/${m.id}`, text: m.name }),
      m.quality ? h("span", { class: `badge ${m.quality.verdict}`, text: m.quality.verdict }) : null,
      h("span", { class: "muted small" }, "trigger word ", h("code", { text: m.trigger_word })))))
    : h("p", { class: "muted", text: "No models yet." });

  render("Your face models", "photos",
    h("div", { class: "grid2" },
      form,
      h("section", { class: "card", "aria-labelledby": "subjects-h" }, h("h2", { id: "subjects-h", text: "Subjects" }), subjectList)),
    h("div", { class: "grid2" },
      h("section", { class: "card", "aria-labelledby": "trainings-h" }, h("h2", { id: "trainings-h", text: "Trainings" }), trainingList),
      h("section", { class: "card", "aria-labelledby": "models-h" }, h("h2", { id: "models-h", text: "Models" }), modelList)));
}

// ---------------------------------------------------------------- 2-4. photos, review, configure

function uploadRequest(subjectId, files, item) {
  // XMLHttpRequest, not fetch: only it reports upload progress.
  const bar = h("progress", { max: 100, value: 0, "aria-label": "Upload progress" });
  const total = files.reduce((n, f) => n + f.size, 0);
  const label = h("span", { text: `Uploading ${files.length} file${files.length > 1 ? "s" : ""} (${fmtBytes(total)})\u2026` });
  item.replaceChildren(label, bar);
  return new Promise((resolve) => {
    const body = new FormData();
    files.forEach((f) => body.append("files", f, f.name));
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/v1/subjects/${subjectId}/photos`);
    xhr.setRequestHeader("Authorization", `Bearer ${apiKey()}`);
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) bar.value = Math.round((e.loaded / e.total) * 100);
    });
    xhr.addEventListener("load", () => {
      bar.value = 100;
      let parsed = null;
      try { parsed = JSON.parse(xhr.responseText); } catch (_) { /* shown below from the status */ }
      if (xhr.status === 202 && parsed) {
        resolve({ accepted: parsed.photos.length, rejected: parsed.rejected });
      } else {
        // The request itself refused (too large, rate limited, no key...): refused files come in the 202.
        resolve({ accepted: 0, rejected: [], error: new ApiError(xhr.status, parsed) });
      }
    });
    xhr.addEventListener("error", () => resolve({
      accepted: 0, rejected: [], error: new ApiError(0, { error: { message: "The upload did not reach the service.", hint: "Check your connection and try again." } }),
    }));
    xhr.send(body);
  }).then((result) => {
    const summary = `${files.length} file${files.length > 1 ? "s" : ""}: ${result.accepted} photo${result.accepted === 1 ? "" : "s"} added` +
      (result.rejected.length ? `, ${result.rejected.length} rejected` : "");
    item.replaceChildren(h("span", { text: summary }), bar);
    if (result.error && !result.rejected.length) item.append(errorBox(result.error));
    if (result.rejected.length) {
      item.append(h("ul", { class: "rejected problem", "aria-label": "Rejected files" },
        result.rejected.map((r) => h("li", {}, h("strong", { text: r.filename }), `: ${r.error.message}`))));
    }
    announce(summary);
    return result;
  });
}

function batches(files) {
  const out = [];
  let batch = [];
  let size = 0;
  for (const f of files) {
    if (batch.length && size + f.size > UPLOAD_BATCH_BYTES) {
      out.push(batch);
      batch = [];
      size = 0;
    }
    batch.push(f);
    size += f.size;
  }
  if (batch.length) out.push(batch);
  return out;
}

function photoCard(photo, onChange) {
  const verdict = photo.status === "analyzed" ? photo.verdict : photo.status;
  const words = photo.status === "pending" ? "Analysing\u2026"
    : photo.status === "failed" ? "Analysis failed" : VERDICT_WORDS[photo.verdict] || photo.verdict;
  const reasons = photo.reasons.map((r) => h("li", { text: r.message }));
  if (photo.status === "failed" && photo.error) reasons.push(h("li", { text: photo.error }));
  const flags = [];
  if (photo.excluded) flags.push("Left out by you");
  else if (photo.selected) flags.push("Selected for training");
  const toggle = h("button", {
    type: "button", class: "secondary small", "data-action": "exclude", "aria-pressed": String(photo.excluded),
    "aria-label": `${photo.excluded ? "Include" : "Exclude"} ${photo.filename}`,
    text: photo.excluded ? "Include" : "Exclude",
    onclick: async () => {
      // Not disabled while busy: a disabled button drops the keyboard focus.
      if (toggle.getAttribute("aria-busy")) return;
      toggle.setAttribute("aria-busy", "true");
      try {
        await api("PATCH", `/v1/subjects/${photo.subject_id}/photos/${photo.id}`, { json: { excluded: !photo.excluded } });
        announce(`${photo.filename} ${photo.excluded ? "included" : "excluded"}`);
      } catch (err) {
        announce(err.message);
      }
      onChange({ photo: photo.id, action: "exclude" });
    },
  });
  const remove = h("button", {
    type: "button", class: "danger small", "data-action": "delete", "aria-label": `Delete ${photo.filename}`, text: "Delete",
    onclick: async () => {
      if (!window.confirm(`Delete ${photo.filename}? This cannot be undone.`)) return;
      remove.disabled = true;
      try {
        await api("DELETE", `/v1/subjects/${photo.subject_id}/photos/${photo.id}`);
        announce(`${photo.filename} deleted`);
      } catch (err) {
        announce(err.message);
      }
      onChange({ photo: photo.id, action: "delete" });
    },
  });
  return h("div", { class: "body" },
    h("span", {}, h("span", { class: `badge ${verdict}`, text: words })),
    h("span", { class: "name", text: photo.filename }),
    reasons.length ? h("ul", {}, reasons) : null,
    flags.length ? h("span", { class: "small", text: flags.join(" \u00b7 ") }) : null,
    h("div", { class: "actions" }, toggle, remove));
}

function reportBox(report) {
  const p = report.photos;
  const box = h("div", { id: "report" });
  if (p.pending) box.append(h("p", { class: "note", text: `Analysing ${p.pending} of ${p.total} photos\u2026` }));
  if (report.ready_to_train) {
    box.append(h("div", { class: "okay", id: "ready-state" },
      h("p", {}, h("strong", { text: "Ready to train. " }),
        `${p.usable} usable photos, ${p.selected} selected for training.`)));
  } else {
    box.append(h("div", { class: "note", id: "ready-state" },
      h("p", {}, h("strong", { text: "Not ready to train yet." })),
      report.problems.length ? h("ul", {}, report.problems.map((x) => h("li", { text: x.message }))) : null));
  }
  box.append(h("dl", { class: "facts" },
    h("dt", { text: "Uploaded" }), h("dd", { text: p.total }),
    h("dt", { text: "Good" }), h("dd", { text: p.accepted || 0 }),
    h("dt", { text: "Usable, check" }), h("dd", { text: p.warning || 0 }),
    h("dt", { text: "Not used" }), h("dd", { text: p.rejected || 0 }),
    h("dt", { text: "Left out by you" }), h("dd", { text: p.excluded || 0 }),
    h("dt", { text: "Needed" }), h("dd", { text: `at least ${report.min_photos} usable; up to ${report.max_photos} are used` })));
  if (report.advice.length) {
    box.append(h("h3", { text: "How to get a better model" }),
      h("ul", {}, report.advice.map((x) => h("li", { text: x.message }))));
  }
  return box;
}

function trainingForm(subject, baseModels) {
  const usable = baseModels.filter((b) => b.runnable);
  const chosen = usable.find((b) => b.default) || usable[0];
  const name = h("input", { id: "training-name", type: "text", maxlength: 100, value: subject.name });
  const base = h("select", { id: "base-model", "aria-describedby": "base-hint" },
    baseModels.map((b) => h("option", {
      value: b.name, disabled: !b.runnable, selected: chosen && b.name === chosen.name,
      text: `${b.label}${b.tiny ? " \u2014 test model, makes noise" : ""}${b.runnable ? "" : " \u2014 needs a GPU"}`,
    })));
  const baseHint = h("span", { id: "base-hint", class: "hint" });
  const trigger = h("input", { id: "trigger-word", type: "text", maxlength: 32, autocomplete: "off", "aria-describedby": "trigger-hint" });
  const knobs = {
    steps: { label: "Steps", attrs: { min: 1, max: 20000, step: 1 } },
    learning_rate: { label: "Learning rate", attrs: { min: 0.000001, max: 0.01, step: "any" } },
    rank: { label: "LoRA rank", attrs: { min: 1, max: 256, step: 1 } },
    resolution: { label: "Resolution (pixels)", attrs: { min: 64, max: 2048, step: 64 } },
  };
  const inputs = {};
  const fields = Object.entries(knobs).map(([key, k]) => {
    inputs[key] = h("input", { id: `knob-${key}`, type: "number", inputmode: "decimal", ...k.attrs, "aria-describedby": `knob-${key}-hint` });
    inputs[`${key}_hint`] = h("span", { id: `knob-${key}-hint`, class: "hint" });
    return h("div", { class: "field" }, h("label", { for: `knob-${key}`, text: k.label }), inputs[key], inputs[`${key}_hint`]);
  });
  inputs.seed = h("input", { id: "knob-seed", type: "number", min: 0, max: 2147483647, step: 1, "aria-describedby": "knob-seed-hint" });
  fields.push(h("div", { class: "field" }, h("label", { for: "knob-seed", text: "Seed" }), inputs.seed,
    h("span", { id: "knob-seed-hint", class: "hint", text: "Default: a random seed, recorded with the model." })));

  const showDefaults = () => {
    const b = baseModels.find((x) => x.name === base.value);
    if (!b) return;
    baseHint.textContent = b.tiny
      ? "A tiny model with random weights: the whole pipeline runs in about a minute on a CPU, but its images are noise."
      : `${b.label} from ${b.source}.`;
    for (const key of Object.keys(knobs)) {
      inputs[key].placeholder = String(b.defaults[key]);
      inputs[`${key}_hint`].textContent = `Default: ${b.defaults[key]}`;
    }
  };
  base.addEventListener("change", showDefaults);
  showDefaults();

  const status = h("div");
  const start = h("button", { type: "submit", id: "start-training", text: "Start training" });
  const form = h("form", { class: "card", novalidate: true, "aria-labelledby": "configure-h" },
    h("h2", { id: "configure-h", text: "Configure the training" }),
    h("div", { class: "field" }, h("label", { for: "training-name", text: "Model name" }), name),
    h("div", { class: "field" }, h("label", { for: "base-model", text: "Base model" }), base, baseHint),
    h("div", { class: "field" }, h("label", { for: "trigger-word", text: "Trigger word (optional)" }), trigger,
      h("span", { id: "trigger-hint", class: "hint", text: "A made-up word that will stand for this person in prompts. Leave it empty to get one." })),
    h("details", {}, h("summary", { text: "Advanced settings" }),
      h("p", { class: "hint", text: "Empty fields use the base model's defaults, shown under each." }), ...fields),
    status, start);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.replaceChildren();
    const body = { subject_id: subject.id, name: name.value.trim(), base_model: base.value };
    if (trigger.value.trim()) body.trigger_word = trigger.value.trim();
    for (const key of [...Object.keys(knobs), "seed"]) {
      if (inputs[key].value !== "") body[key] = Number(inputs[key].value);
    }
    start.disabled = true;
    try {
      const training = await api("POST", "/v1/trainings", { json: body });
      location.hash = `#/trainings/${training.id}`;
    } catch (err) {
      const link = err.code === "training_in_progress" && err.error.training_id
        ? h("p", {}, h("a", { href: `#/trainings/${err.error.training_id}`, text: "Open the training that is running" }))
        : null;
      status.append(errorBox(err, link));
      start.disabled = false;
    }
  });
  form.setReady = (ready) => {
    start.disabled = !ready || !usable.length;
    start.title = ready ? "" : "The photos are not ready to train yet";
  };
  return form;
}

async function subjectView(v, subjectId) {
  const [subject, baseModels] = await Promise.all([
    api("GET", `/v1/subjects/${subjectId}`), everything("/v1/base-models"),
  ]);
  if (!current(v)) return;

  const picker = h("input", {
    id: "photo-files", type: "file", multiple: true,
    accept: "image/jpeg,image/png,image/webp,image/heic,image/heif,.heic,.heif,.zip,application/zip",
  });
  const drop = h("label", { class: "drop", for: "photo-files" },
    h("strong", { text: "Drop photos or zip files here, or choose files" }),
    h("br"),
    h("span", { class: "hint", text: "JPEG, PNG, WebP or HEIC; a zip may hold a same-name .txt caption for each photo. 15 to 30 photos of one person work best." }),
    picker);
  const uploads = h("ul", { class: "uploads", "aria-label": "Uploads" });
  const reportSlot = h("div", {}, h("p", { class: "muted", text: "Loading\u2026" }));
  const grid = h("ul", { class: "photos", "aria-label": "Photos" });
  const empty = h("p", { class: "muted", text: "No photos yet." });
  const form = trainingForm(subject, baseModels);
  form.setReady(false);
  const cards = new Map();
  let polling = null;

  let refocus = null; // {photo, action}: where the keyboard focus goes once the grid is redrawn

  async function refresh(after) {
    if (after) refocus = after;
    let report;
    let photos;
    try {
      [report, photos] = await Promise.all([
        api("GET", `/v1/subjects/${subjectId}/report`), everything(`/v1/subjects/${subjectId}/photos`),
      ]);
    } catch (err) {
      if (!current(v)) return;
      reportSlot.replaceChildren(errorBox(err));
      schedule();
      return;
    }
    if (!current(v)) return;
    reportSlot.replaceChildren(reportBox(report));
    empty.hidden = photos.length > 0;
    const seen = new Set();
    for (const photo of photos) {
      seen.add(photo.id);
      let card = cards.get(photo.id);
      if (!card) {
        card = h("li", { class: "photo", "data-photo": photo.id },
          h("div", { class: "thumb" }, h("span", { class: "muted small", text: "Analysing\u2026" })));
        cards.set(photo.id, card);
      }
      // The thumbnail exists once the photo is analysed (a photo that cannot be decoded has none).
      const thumb = photo.urls.thumb || (photo.status !== "pending" && photo.urls.original);
      if (thumb && card.dataset.thumb !== thumb) {
        card.dataset.thumb = thumb;
        card.firstChild.replaceChildren(authImg(thumb, photo.filename));
      }
      const focused = card.contains(document.activeElement) ? document.activeElement.dataset.action
        : refocus && refocus.photo === photo.id ? refocus.action : null;
      const body = photoCard(photo, refresh);
      if (card.children[1]) card.children[1].replaceWith(body);
      else card.append(body);
      card.className = `photo ${photo.status === "analyzed" ? photo.verdict : photo.status}${photo.excluded ? " excluded" : ""}`;
      grid.append(card); // keeps upload order
      if (focused) $(`[data-action="${focused}"]`, card).focus();
    }
    for (const [id, card] of cards) {
      if (!seen.has(id)) {
        // A deleted photo's card goes; the focus moves to the next card (or the review heading).
        if (refocus && refocus.photo === id) {
          const next = card.nextElementSibling || card.previousElementSibling;
          (next ? $('[data-action="delete"]', next) : $("#review-h")).focus();
        }
        card.remove();
        cards.delete(id);
      }
    }
    refocus = null;
    form.setReady(report.ready_to_train);
    setStep(report.ready_to_train ? "configure" : photos.length ? "review" : "photos");
    // Keep polling while photos are being analysed: the subject review runs as the last one ends.
    if (report.photos.pending || photos.some((p) => p.status === "pending")) schedule();
  }
  function schedule() {
    clearTimeout(polling);
    polling = setTimeout(() => current(v) && refresh(), POLL_MS);
    v.timers.push(polling);
  }

  async function send(fileList) {
    const files = [...fileList];
    if (!files.length) return;
    for (const batch of batches(files)) {
      const item = h("li");
      uploads.prepend(item);
      await uploadRequest(subjectId, batch, item);
      if (!current(v)) return;
      refresh();
    }
  }
  picker.addEventListener("change", () => { send(picker.files); picker.value = ""; });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
  drop.addEventListener("drop", (e) => { e.preventDefault(); send(e.dataTransfer.files); });

  render(subject.name, "photos",
    h("p", { class: "muted" }, `Class word \u201c${subject.class_word}\u201d \u00b7 consent given ${new Date(subject.consent_at).toLocaleString()} \u00b7 `,
      h("a", { href: "#/", text: "all subjects" })),
    h("section", { class: "card", "aria-labelledby": "photos-h" }, h("h2", { id: "photos-h", text: "Add photos" }), drop, uploads),
    h("section", { class: "card", "aria-labelledby": "review-h" }, h("h2", { id: "review-h", tabindex: "-1", text: "Review" }), reportSlot, empty, grid),
    form,
    h("p", {}, deleteButton("Delete this subject", `Delete ${subject.name}, every photo of them, and the models and images made from them? This cannot be undone.`,
      `/v1/subjects/${subjectId}`, `${subject.name} deleted`)));
  await refresh();
}

// ---------------------------------------------------------------- 5. progress

function lossChart(points) {
  const W = 640, H = 220, L = 48, R = 12, T = 12, B = 28;
  const steps = [...points.keys()].sort((a, b) => a - b);
  const svg = (tag, attrs, ...kids) => {
    const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, val] of Object.entries(attrs)) el.setAttribute(k, val);
    kids.forEach((k) => el.append(k));
    return el;
  };
  const last = steps.length ? points.get(steps[steps.length - 1]) : null;
  const label = steps.length
    ? `Training loss by step: ${steps.length} points, latest ${last.toFixed(4)} at step ${steps[steps.length - 1]}`
    : "Training loss by step: no steps yet";
  const chart = svg("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label, id: "loss-chart" });
  chart.append(svg("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
    svg("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }));
  if (!steps.length) {
    chart.append(svg("text", { x: L + 10, y: H / 2 }, document.createTextNode("The loss appears here once training starts.")));
    return chart;
  }
  const values = steps.map((s) => points.get(s));
  const lo = Math.min(...values), hi = Math.max(...values);
  const span = hi - lo || Math.abs(hi) || 1;
  const x0 = steps[0], x1 = Math.max(steps[steps.length - 1], x0 + 1);
  const x = (s) => L + ((s - x0) / (x1 - x0)) * (W - L - R);
  const y = (val) => T + (1 - (val - lo) / span) * (H - T - B);
  chart.append(
    svg("polyline", { class: "line", points: steps.map((s) => `${x(s).toFixed(1)},${y(points.get(s)).toFixed(1)}`).join(" ") }),
    svg("text", { x: 4, y: T + 10 }, document.createTextNode(hi.toPrecision(3))),
    svg("text", { x: 4, y: H - B }, document.createTextNode(lo.toPrecision(3))),
    svg("text", { x: L, y: H - 8 }, document.createTextNode(`step ${x0}`)),
    svg("text", { x: W - R, y: H - 8, "text-anchor": "end" }, document.createTextNode(`step ${x1}`)));
  return chart;
}

async function* serverEvents(path, signal) {
  // EventSource cannot send the key: read the stream with fetch and split it into events.
  const response = await api("GET", path, { raw: true, signal, headers: { Accept: "text/event-stream" } });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

async function trainingView(v, trainingId) {
  let training = await api("GET", `/v1/trainings/${trainingId}`);
  if (!current(v)) return;
  const losses = new Map();
  const stages = h("ol", { class: "stages", "aria-label": "Stages" });
  const line = h("p", { id: "progress-text" });
  const bar = h("progress", { id: "progress-bar", max: 100, value: 0, "aria-labelledby": "progress-text" });
  const chartSlot = h("div");
  const outcome = h("div", { "aria-live": "polite" });
  const cancel = h("button", {
    type: "button", class: "danger", id: "cancel-training", text: "Cancel training",
    onclick: async () => {
      if (!window.confirm("Cancel this training? Its progress is lost; your photos are kept.")) return;
      cancel.disabled = true;
      try {
        show(await api("POST", `/v1/trainings/${trainingId}/cancel`));
        announce("Training canceled");
      } catch (err) {
        outcome.replaceChildren(errorBox(err));
        cancel.disabled = false;
      }
    },
  });
  const back = h("a", { href: `#/subjects/${training.subject_id}`, text: "Back to the photos" });

  function show(t) {
    training = t;
    const p = t.progress;
    if (p.loss !== null && p.loss !== undefined && p.step) losses.set(p.step, p.loss);
    const at = STAGES.findIndex(([s]) => s === t.status);
    if (at >= 0) {
      stages.replaceChildren(...STAGES.map(([s, words], i) => h("li", {
        class: i < at ? "done" : "", "aria-current": i === at ? "step" : null, text: words,
      })));
    } else {
      // Failed or canceled: the stages it went through (from `phases`), then where it ended.
      const reached = STAGES.slice(0, -1).filter(([s], i) => i === 0 || (t.phases && s in t.phases));
      stages.replaceChildren(...reached.map(([, words]) => h("li", { class: "done", text: words })),
        h("li", { class: `end ${t.status}`, "aria-current": "step", text: t.status === "failed" ? "Failed" : "Canceled" }));
    }
    if (t.status === "training" || p.total_steps) {
      bar.max = p.total_steps || 1;
      bar.value = p.step;
      const parts = [`Step ${p.step} of ${p.total_steps}`];
      if (ACTIVE.has(t.status) && p.eta_seconds) parts.push(`about ${fmtSeconds(p.eta_seconds)} left`);
      if (p.loss !== null && p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(4)}`);
      line.textContent = parts.join(" \u00b7 ");
    } else {
      line.textContent = t.status === "queued" ? "Waiting for a worker\u2026" : "Getting ready\u2026";
    }
    chartSlot.replaceChildren(lossChart(losses));
    cancel.hidden = !ACTIVE.has(t.status);
    setStep(t.status === "succeeded" ? "ready" : "train");
    if (t.status === "succeeded") {
      outcome.replaceChildren(h("div", { class: "okay" },
        h("p", {}, h("strong", { text: "Your model is ready. " }), `Trigger word: `, h("code", { text: t.trigger_word })),
        h("p", {}, h("a", { class: "button", href: `#/models/${t.model_id}`, id: "open-model", text: "See your model" }))));
    } else if (t.status === "failed") {
      const err = t.error || { message: "The training failed.", hint: "" };
      outcome.replaceChildren(errorBox(
        { message: `The training failed: ${err.message}`, hint: err.hint || "Try again; if it fails the same way, check the server log." },
        h("p", {}, back)));
    } else if (t.status === "canceled") {
      outcome.replaceChildren(h("div", { class: "note" },
        h("p", { text: "This training was canceled. Your photos are kept: you can start another one." }), h("p", {}, back)));
    } else {
      outcome.replaceChildren();
    }
  }

  render(`Training \u201c${training.name}\u201d`, "train",
    h("p", { class: "muted" }, `Base model ${training.base_model} \u00b7 trigger word `, h("code", { text: training.trigger_word })),
    training.notice ? h("p", { class: "note", text: training.notice }) : null,
    h("section", { class: "card", "aria-labelledby": "progress-h" },
      h("h2", { id: "progress-h", text: "Progress" }), stages, line, bar,
      h("h3", { text: "Loss" }), chartSlot, h("p", {}, cancel)),
    outcome);
  show(training);

  // Follow the event stream; if it drops while the job runs, poll, then try the stream again.
  const follow = async () => {
    while (current(v) && ACTIVE.has(training.status)) {
      const abort = new AbortController();
      v.aborts.push(abort);
      try {
        for await (const { event, data } of serverEvents(`/v1/trainings/${trainingId}/events`, abort.signal)) {
          if (!current(v)) return;
          if (event === "status" || event === "progress") show(data);
          if (event === "status" && !ACTIVE.has(data.status)) announce(`Training ${data.status}`);
        }
      } catch (err) {
        if (!current(v)) return;
      }
      if (!current(v)) return;
      try { show(await api("GET", `/v1/trainings/${trainingId}`)); } catch (_) { /* next round */ }
      if (ACTIVE.has(training.status)) await new Promise((r) => later(v, r, 2000));
    }
  };
  follow();
}

// ---------------------------------------------------------------- 6. the model

function saveAs(href, filename) {
  const a = h("a", { href, download: filename, rel: "noreferrer" });
  document.body.append(a);
  a.click();
  a.remove();
}

async function download(file, button) {
  // Ask where the file is: with S3 storage a short-lived link that needs no key (the browser fetches it
  // itself, outside this page's connect-src); otherwise the download URL, fetched here with the key.
  button.disabled = true;
  try {
    const link = await api("GET", local(file.url).replace("/download?", "/download-link?"));
    if (link.needs_api_key) {
      const response = await api("GET", link.url, { raw: true });
      const url = URL.createObjectURL(await response.blob());
      saveAs(url, link.filename);
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } else {
      saveAs(link.url, link.filename);
    }
    announce(`${link.filename} downloaded`);
  } catch (err) {
    button.after(errorBox(err));
  }
  button.disabled = false;
}

function copyText(text, button) {
  const done = () => { button.textContent = "Copied"; announce(`${text} copied`); setTimeout(() => { button.textContent = "Copy"; }, 2000); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(text).then(done, () => fallbackCopy(text) && done());
  } else if (fallbackCopy(text)) {
    done();
  }
}

function fallbackCopy(text) {
  const area = h("textarea", { readonly: true, class: "visually-hidden" });
  area.value = text;
  document.body.append(area);
  area.select();
  let ok = false;
  try { ok = document.execCommand("copy"); } catch (_) { ok = false; }
  area.remove();
  return ok;
}

function qualityCard(model) {
  const q = model.quality;
  if (!q) {
    return h("section", { class: "card" }, h("h2", { text: "Quality" }),
      h("p", { class: "note", text: "The quality assessment could not run: the files hold the final weights, unchecked." }));
  }
  return h("section", { class: "card", "aria-labelledby": "quality-h" },
    h("h2", { id: "quality-h", text: "Quality" }),
    h("div", { class: "row" },
      h("p", { class: "score", id: "quality-score", text: q.score === null ? "\u2014" : `${Math.round(q.score)}/100` }),
      h("span", { class: `badge ${q.verdict}`, id: "quality-verdict", text: q.verdict })),
    h("p", { id: "quality-advice", text: q.advice }),
    h("dl", { class: "facts" },
      h("dt", { text: "Likeness to your photos" }), h("dd", { text: q.identity_similarity === null ? "not measured" : `${Math.round(q.identity_similarity)}/100 (60 is the same-person line)` }),
      h("dt", { text: "Samples with a face" }), h("dd", { text: pct(q.face_detection_rate) }),
      h("dt", { text: "Samples copying a training photo" }), h("dd", { text: pct(q.memorization) }),
      h("dt", { text: "Likeness without the trigger word" }), h("dd", { text: q.identity_bleed === null ? "not measured" : `${Math.round(q.identity_bleed)}/100` }),
      h("dt", { text: "Checkpoint in the files" }), h("dd", { text: `step ${q.chosen_step}` })));
}

function samplesBySteps(model) {
  const steps = [...new Set(model.samples.map((s) => s.step))].sort((a, b) => a - b);
  return steps.map((step) => {
    const samples = model.samples.filter((s) => s.step === step);
    const chosen = samples.some((s) => s.chosen);
    return h("div", {},
      h("h3", { text: `Step ${step}${chosen ? " (in the files)" : ""}` }),
      h("ul", { class: "gallery" }, samples.map((s) => h("li", {},
        h("figure", { class: s.chosen ? "chosen" : "" },
          authImg(s.url, `Sample at step ${step}: ${s.prompt}`),
          h("figcaption", {}, s.prompt,
            s.identity_similarity === null ? "" : ` \u00b7 likeness ${Math.round(s.identity_similarity)}`,
            s.memorized ? " \u00b7 copies a training photo" : ""))))));
  });
}

function generateForm(model, classWord, gallery) {
  const prompt = h("textarea", { id: "gen-prompt", maxlength: 2000, "aria-describedby": "gen-prompt-hint" });
  prompt.value = `photo of ${model.trigger_word} ${classWord}, portrait, natural light`;
  const strength = h("input", { id: "gen-strength", type: "range", min: 0, max: 1.5, step: 0.05, value: 0.8 });
  const strengthOut = h("output", { for: "gen-strength", id: "gen-strength-value", text: "0.80" });
  strength.addEventListener("input", () => { strengthOut.textContent = Number(strength.value).toFixed(2); });
  const count = h("input", { id: "gen-count", type: "number", min: 1, max: 8, step: 1, value: 1 });
  const seed = h("input", { id: "gen-seed", type: "number", min: 0, max: 4294967295, step: 1, "aria-describedby": "gen-seed-hint" });
  const aspect = h("select", { id: "gen-aspect" }, ASPECTS.map((a) => h("option", { value: a, text: a })));
  const status = h("div", { "aria-live": "polite" });
  const go = h("button", { type: "submit", id: "generate", text: "Generate" });
  const sweep = h("button", { type: "button", class: "secondary", id: "sweep", text: "Strength sweep (0 to 1.2)" });

  async function run(extra) {
    const body = {
      model_id: model.id, prompt: prompt.value, lora_scale: Number(strength.value),
      num_outputs: extra.sweep ? 1 : Math.max(1, Math.min(8, Number(count.value) || 1)), aspect_ratio: aspect.value, ...extra,
    };
    if (seed.value !== "") body.seed = Number(seed.value);
    go.disabled = sweep.disabled = true;
    status.replaceChildren(h("p", { class: "muted", text: extra.sweep ? "Drawing the strength sweep\u2026" : "Generating\u2026" }));
    try {
      let gen = await api("POST", "/v1/generations", { json: body });
      const v = view;
      while (["queued", "running"].includes(gen.status)) {
        await new Promise((r) => setTimeout(r, 700));
        if (!current(v)) return;
        gen = await api("GET", `/v1/generations/${gen.id}`);
      }
      if (gen.status !== "succeeded") {
        const err = gen.error || {};
        status.replaceChildren(errorBox({ message: `The generation ${gen.status}: ${err.message || "no images"}`, hint: err.hint || "" }));
      } else {
        status.replaceChildren(h("p", { class: "okay", text: `${gen.outputs.length} image${gen.outputs.length > 1 ? "s" : ""} added below.` }));
        gen.outputs.slice().reverse().forEach((o) => gallery.prepend(h("li", {},
          h("figure", {}, authImg(o.url, `Generated: ${o.prompt}`),
            h("figcaption", {}, `strength ${Number(o.lora_scale ?? o.label ?? body.lora_scale).toFixed(2)} \u00b7 seed ${o.seed}`)))));
        announce(`${gen.outputs.length} images generated`);
      }
    } catch (err) {
      status.replaceChildren(errorBox(err));
    }
    go.disabled = sweep.disabled = false;
  }

  const form = h("form", { class: "card", novalidate: true, "aria-labelledby": "generate-h" },
    h("h2", { id: "generate-h", text: "Generate" }),
    h("div", { class: "field" }, h("label", { for: "gen-prompt", text: "Prompt" }), prompt,
      h("span", { id: "gen-prompt-hint", class: "hint" }, "Keep the trigger word ", h("code", { text: model.trigger_word }), " in it: it stands for the person.")),
    h("div", { class: "field" }, h("label", { for: "gen-strength", text: "LoRA strength" }), h("div", { class: "row" }, strength, strengthOut)),
    h("div", { class: "grid2" },
      h("div", { class: "field" }, h("label", { for: "gen-count", text: "Number of images" }), count),
      h("div", { class: "field" }, h("label", { for: "gen-aspect", text: "Aspect ratio" }), aspect)),
    h("div", { class: "field" }, h("label", { for: "gen-seed", text: "Seed (optional)" }), seed,
      h("span", { id: "gen-seed-hint", class: "hint", text: "The same seed and settings give the same image." })),
    status,
    h("div", { class: "row" }, go, sweep));
  form.addEventListener("submit", (e) => { e.preventDefault(); run({}); });
  sweep.addEventListener("click", () => run({ sweep: {} }));
  return form;
}

async function modelView(v, modelId) {
  const model = await api("GET", `/v1/models/${modelId}`);
  let classWord = "person";
  if (model.subject_id) {
    try { classWord = (await api("GET", `/v1/subjects/${model.subject_id}`)).class_word; } catch (_) { /* deleted */ }
  }
  if (!current(v)) return;
  const copy = h("button", { type: "button", class: "secondary small", id: "copy-trigger", text: "Copy" });
  copy.addEventListener("click", () => copyText(model.trigger_word, copy));
  const downloads = h("ul", { class: "list" }, model.files.map((file) => {
    const button = h("button", { type: "button", class: "secondary", "data-format": file.format, text: `Download ${FILE_FORMATS[file.format] || file.format}` });
    button.addEventListener("click", () => download(file, button));
    return h("li", {}, button, h("span", { class: "muted small", text: `${file.filename}, ${fmtBytes(file.size_bytes)}` }));
  }));
  const gallery = h("ul", { class: "gallery", id: "generated", "aria-label": "Generated images" });
  render(model.name, "ready",
    model.notice ? h("p", { class: "note", text: model.notice }) : null,
    h("section", { class: "card", "aria-labelledby": "trigger-h" },
      h("h2", { id: "trigger-h", text: "Trigger word" }),
      h("div", { class: "row" }, h("code", { class: "trigger", id: "trigger-word-value", text: model.trigger_word }), copy),
      h("p", { class: "hint", text: `Put it in a prompt where the person goes, with the class word: \u201cphoto of ${model.trigger_word} ${classWord}\u201d.` })),
    h("div", { class: "grid2" },
      qualityCard(model),
      h("section", { class: "card", "aria-labelledby": "files-h" }, h("h2", { id: "files-h", text: "Download" }), downloads,
        h("p", { class: "muted small" }, `Base model ${model.base_model}, rank ${model.rank}.`))),
    generateForm(model, classWord, gallery),
    h("section", { class: "card", "aria-labelledby": "gallery-h" }, h("h2", { id: "gallery-h", text: "Your images" }), gallery),
    model.contact_sheet_url || model.samples.length
      ? h("section", { class: "card", "aria-labelledby": "samples-h" },
        h("h2", { id: "samples-h", text: "Samples by checkpoint" }),
        model.contact_sheet_url ? authImg(model.contact_sheet_url, "Contact sheet: every sample, checkpoint by prompt", { class: "sheet", id: "contact-sheet" }) : null,
        ...samplesBySteps(model))
      : null,
    h("p", {}, deleteButton("Delete this model", `Delete the model ${model.name}, its files and samples? This cannot be undone.`,
      `/v1/models/${modelId}`, `${model.name} deleted`)));
}

// ---------------------------------------------------------------- the router

const ROUTES = [
  [/^#?\/?$/, homeView],
  [/^#\/subjects\/([0-9a-f-]{36})$/, subjectView],
  [/^#\/trainings\/([0-9a-f-]{36})$/, trainingView],
  [/^#\/models\/([0-9a-f-]{36})$/, modelView],
];

async function route() {
  const v = leaveView();
  if (!apiKey()) return signInView();
  if (!me) {
    try {
      me = await api("GET", "/v1/me");
    } catch (err) {
      if (err.status === 401) return signOut("Your API key is no longer accepted. Sign in again.");
      return renderError("The service is not answering", err);
    }
  }
  if (!current(v)) return;
  showAccount();
  for (const [pattern, show] of ROUTES) {
    const match = location.hash.match(pattern);
    if (!match) continue;
    try {
      await show(v, ...match.slice(1));
    } catch (err) {
      if (!current(v)) return;
      if (err.status === 401) return signOut("Your API key is no longer accepted. Sign in again.");
      if (err.status === 404) return renderError("Not found", { message: "There is nothing of yours at this address.", hint: "It may have been deleted." });
      renderError("Something went wrong", err);
    }
    return;
  }
  renderError("Not found", { message: "This page does not exist.", hint: "" });
}

window.addEventListener("hashchange", route);
document.addEventListener("DOMContentLoaded", () => {
  $("#sign-out").addEventListener("click", () => { signOut("You are signed out."); history.replaceState(null, "", "#/"); });
  route();
});
