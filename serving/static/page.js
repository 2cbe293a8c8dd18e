// The translation page: vanilla JS, no build step, nothing from outside this service.
// Text from users and models is only ever set with textContent, never parsed as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  languages: [],        // GET /languages: [{code, name, targets}]
  models: { models: [], defaults: {} },  // GET /v1/models
  settings: null,       // GET /frontend/settings
  request: 0,           // the latest translation request; older answers are dropped
  timer: null,
  last: null,           // {source, target, text, translation, detected}
};

function languageName(code) {
  const found = state.languages.find((l) => l.code === code);
  if (found) return found.name;
  try {
    return new Intl.DisplayNames(["en"], { type: "language" }).of(code) || code;
  } catch (error) {
    return code;
  }
}

function headers(json) {
  const result = json ? { "Content-Type": "application/json" } : {};
  const key = $("api-key").value.trim();
  if (key) result.Authorization = "Bearer " + key;
  return result;
}

async function getJson(path) {
  const response = await fetch(path, { headers: headers(false) });
  if (!response.ok) throw new Error(path + " answered " + response.status);
  return response.json();
}

function errorText(body, status) {
  if (body && body.error) {
    if (typeof body.error === "string") return body.error;
    const field = body.error.field ? body.error.field + ": " : "";
    return field + body.error.message;
  }
  return "the service answered " + status;
}

function option(value, label) {
  const element = document.createElement("option");
  element.value = value;
  element.textContent = label;
  return element;
}

function fillTargets() {
  const source = $("source").value;
  const previous = $("target").value || (state.settings && state.settings.language.target.code);
  const targets = new Set();
  for (const language of state.languages) {
    if (source === "auto" || language.code === source) language.targets.forEach((t) => targets.add(t));
  }
  $("target").replaceChildren(...[...targets].sort().map((code) => option(code, languageName(code))));
  if (targets.has(previous)) $("target").value = previous;
}

// The models a pair routes to by default (GET /v1/models); with "auto", those of every pair into
// the target. Alignment is asked for when they all attend, alternatives up to their beam size
// (a 422 for either is retried without, see translate).
function routedModels(source, target) {
  const models = state.models.models || [];
  return Object.entries(state.models.defaults || {})
    .filter(([pair]) => (source === "auto" ? pair.endsWith("-" + target) : pair === source + "-" + target))
    .map(([, name]) => models.find((m) => m.name === name))
    .filter(Boolean);
}

function requestOptions(source, target) {
  const models = routedModels(source, target);
  const beams = models.map((m) => (m.search && m.search.beam_size) || 1);
  return {
    return_alignment: models.length > 0 && models.every((m) => m.alignment),
    n_best: Math.max(1, Math.min(3, ...beams)),
  };
}

// Words as spans (whitespace kept as text), split as the service splits them: at whitespace.
function renderWords(container, text, side) {
  const nodes = [];
  let index = 0;
  for (const piece of text.split(/(\s+)/)) {
    if (!piece) continue;
    if (/^\s+$/.test(piece)) {
      nodes.push(document.createTextNode(piece));
      continue;
    }
    const span = document.createElement("span");
    span.className = "word";
    span.dataset.side = side;
    span.dataset.index = String(index++);
    span.textContent = piece;
    nodes.push(span);
  }
  container.replaceChildren(...nodes);
}

function clearLinks() {
  document.querySelectorAll(".word.linked").forEach((w) => w.classList.remove("linked"));
}

function showLinks(side, index, alignment) {
  clearLinks();
  const other = side === "tgt" ? "src" : "tgt";
  const ours = side === "tgt" ? 1 : 0;
  const linked = alignment.filter((link) => link[ours] === index).map((link) => link[1 - ours]);
  if (!linked.length) return;
  const container = side === "tgt" ? $("result") : $("source-words");
  const own = container.querySelector('.word[data-index="' + index + '"]');
  if (own) own.classList.add("linked");
  const otherContainer = other === "tgt" ? $("result") : $("source-words");
  for (const i of linked) {
    const word = otherContainer.querySelector('.word[data-index="' + i + '"]');
    if (word) word.classList.add("linked");
  }
}

function bindAlignment(alignment) {
  for (const container of [$("result"), $("source-words")]) {
    container.onmouseover = (event) => {
      const word = event.target.closest(".word");
      if (word) showLinks(word.dataset.side, Number(word.dataset.index), alignment);
    };
    container.onmouseleave = clearLinks;
  }
}

function setStatus(text) {
  $("status").textContent = text;
}

function setError(text) {
  $("error").textContent = text;
}

function showResult(item, source, target, text) {
  renderWords($("result"), item.text, "tgt");
  const alignment = item.alignment || [];
  if (alignment.length) {
    renderWords($("source-words"), text, "src");
    $("source-words-title").hidden = false;
    bindAlignment(alignment);
  } else {
    $("source-words").replaceChildren();
    $("source-words-title").hidden = true;
  }
  const parts = ["model " + item.model, "variant " + item.variant, item.cached ? "cached" : "not cached"];
  if (item.detected_language) {
    const d = item.detected_language;
    parts.unshift("detected " + languageName(d.language) + " (" + d.confidence + "%)");
  }
  $("meta").textContent = parts.join(" \u00b7 ");
  const alternatives = (item.alternatives || []).slice(1).map((a) => a.text).filter((t) => t !== item.text);
  $("alternatives").replaceChildren(
    ...alternatives.map((t) => {
      const li = document.createElement("li");
      li.textContent = t;
      return li;
    }),
  );
  $("alternatives-box").hidden = alternatives.length === 0;
  const detected = item.detected_language ? item.detected_language.language : source;
  state.last = { source: detected, target, text, translation: item.text };
  $("copy").disabled = false;
  $("suggest").disabled = false;
}

async function translate() {
  clearTimeout(state.timer);
  const text = $("text").value;
  const source = $("source").value;
  const target = $("target").value;
  setError("");
  if (!text.trim() || !target) {
    $("result").replaceChildren();
    $("meta").textContent = "";
    $("alternatives-box").hidden = true;
    $("copy").disabled = $("suggest").disabled = true;
    return;
  }
  const id = ++state.request;
  const body = { text, source, target, ...requestOptions(source, target) };
  setStatus("Translating\u2026");
  for (let attempt = 0; attempt < 3; attempt++) {
    let response;
    try {
      response = await fetch("/v1/translate", { method: "POST", headers: headers(true), body: JSON.stringify(body) });
    } catch (error) {
      if (id === state.request) { setStatus(""); setError("The service cannot be reached."); }
      return;
    }
    const answer = await response.json().catch(() => null);
    if (id !== state.request) return; // a newer request is on its way
    if (response.ok) {
      setStatus("");
      showResult(answer.translations[0], source, target, text);
      return;
    }
    // an option this model does not take: ask again without it
    const field = answer && answer.error && answer.error.field;
    if (response.status === 422 && field === "return_alignment" && body.return_alignment) {
      body.return_alignment = false;
      continue;
    }
    if (response.status === 422 && field === "n_best" && body.n_best > 1) {
      body.n_best = 1;
      continue;
    }
    setStatus("");
    setError(errorText(answer, response.status));
    return;
  }
}

function schedule() {
  clearTimeout(state.timer);
  const wait = state.settings ? state.settings.frontendTimeout : 500;
  state.timer = setTimeout(translate, wait);
  const limit = state.settings ? state.settings.charLimit : 0;
  $("count").textContent = limit ? $("text").value.length + " / " + limit : "";
}

async function copy() {
  const text = state.last ? state.last.translation : "";
  try {
    await navigator.clipboard.writeText(text);
  } catch (error) {
    const scratch = document.createElement("textarea");
    scratch.value = text;
    document.body.appendChild(scratch);
    scratch.select();
    document.execCommand("copy");
    scratch.remove();
  }
  setStatus("Copied.");
}

function openSuggestion() {
  if (!state.last) return;
  $("suggestion").value = state.last.translation;
  $("suggest-form").hidden = false;
  $("suggestion").focus();
}

async function sendSuggestion(event) {
  event.preventDefault();
  const last = state.last;
  const translation = $("suggestion").value.trim();
  if (!last || !translation) return;
  const body = { source: last.source, target: last.target, text: last.text, translation };
  let response;
  try {
    response = await fetch("/v1/memory", { method: "PUT", headers: headers(true), body: JSON.stringify(body) });
  } catch (error) {
    setError("The service cannot be reached.");
    return;
  }
  if (response.ok) {
    $("suggest-form").hidden = true;
    setError("");
    setStatus("Thank you: your translation is saved and will be used from now on.");
    return;
  }
  const answer = await response.json().catch(() => null);
  if (response.status === 404 || response.status === 405) {
    setError("This service does not take suggestions.");
  } else if (response.status === 401) {
    setError("Suggestions need an API key: enter one above.");
  } else if (response.status === 403) {
    setError("This API key may not save suggestions.");
  } else {
    setError("The suggestion was not saved: " + errorText(answer, response.status));
  }
}

function applyTheme(theme) {
  if (theme) document.documentElement.dataset.theme = theme;
  const dark = theme ? theme === "dark" : matchMedia("(prefers-color-scheme: dark)").matches;
  $("theme").setAttribute("aria-pressed", String(dark));
  $("theme").textContent = dark ? "Light mode" : "Dark mode";
}

function toggleTheme() {
  const dark = $("theme").getAttribute("aria-pressed") === "true";
  const theme = dark ? "light" : "dark";
  try { localStorage.setItem("nmt-theme", theme); } catch (error) { /* private mode */ }
  applyTheme(theme);
}

function swap() {
  const source = $("source").value;
  const target = $("target").value;
  const from = source === "auto" ? (state.last && state.last.source) : source;
  if (!from || !state.languages.some((l) => l.code === target)) return;
  $("source").value = target;
  fillTargets();
  if ([...$("target").options].some((o) => o.value === from)) $("target").value = from;
  if (state.last && state.last.translation) $("text").value = state.last.translation;
  translate();
}

async function start() {
  let stored = null;
  try { stored = localStorage.getItem("nmt-theme"); } catch (error) { /* private mode */ }
  applyTheme(stored);
  $("theme").addEventListener("click", toggleTheme);
  try {
    [state.settings, state.languages, state.models] = await Promise.all([
      getJson("/frontend/settings"), getJson("/languages"), getJson("/v1/models"),
    ]);
  } catch (error) {
    setError("The service is not ready: " + error.message);
    return;
  }
  $("key-box").hidden = !state.settings.keyRequired;
  $("suggest").hidden = !state.settings.suggestions;
  $("source").replaceChildren(
    option("auto", "Detect language"),
    ...state.languages.map((l) => option(l.code, l.name)),
  );
  fillTargets();
  $("source").addEventListener("change", () => { fillTargets(); translate(); });
  $("target").addEventListener("change", translate);
  $("text").addEventListener("input", schedule);
  $("text").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      translate();
    }
  });
  $("translate").addEventListener("click", translate);
  $("copy").addEventListener("click", copy);
  $("swap").addEventListener("click", swap);
  $("suggest").addEventListener("click", openSuggestion);
  $("suggest-form").addEventListener("submit", sendSuggestion);
  $("suggest-cancel").addEventListener("click", () => { $("suggest-form").hidden = true; $("suggest").focus(); });
  document.body.dataset.ready = "true";
  if ($("text").value.trim()) translate();
}

document.addEventListener("DOMContentLoaded", start);
