// The explorer's page: pick or upload an image, read its explanation, move λ sliders and see the render and
// g's prediction follow. Plain DOM, same-origin requests only; every text from the server goes through
// textContent (class names are data, not markup).
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  source: null, // the id of the image on show
  loads: 0, // explanation requests sent; only the latest one is shown
  sent: 0, // render requests sent
  shown: 0, // the latest render request whose answer is on show
  inFlight: false,
  pending: false, // a slider moved while a render was in flight: send again with the newest values
};

async function api(path, options) {
  const response = await fetch(path, options);
  let doc;
  try {
    doc = await response.json();
  } catch (err) {
    throw new Error(`${path}: answer ${response.status} is not JSON`);
  }
  if (!response.ok) throw new Error(doc.error || `${path}: error ${response.status}`);
  return doc;
}

function setStatus(text, kind) {
  const status = $("status");
  status.textContent = text;
  status.className = `status ${kind || ""}`;
  if (kind === "error") document.body.dataset.state = "error";
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function probabilityBars(element, predictions) {
  element.replaceChildren();
  for (const [rank, prediction] of predictions.entries()) {
    const row = document.createElement("div");
    row.className = rank === 0 ? "bar-row top" : "bar-row";
    const name = document.createElement("span");
    name.className = "bar-name";
    name.textContent = prediction.name;
    const track = document.createElement("span");
    track.className = "track";
    const fill = document.createElement("span");
    fill.className = "fill";
    fill.style.width = percent(prediction.probability);
    track.append(fill);
    const value = document.createElement("span");
    value.className = "bar-value";
    value.textContent = percent(prediction.probability);
    row.append(name, track, value);
    element.append(row);
  }
  element.dataset.top = predictions.length ? predictions[0].name : "";
}

function relevanceBar(relevance) {
  // signed: a bar from the middle, right (blue) for evidence for the prediction, left (red) against it
  const track = document.createElement("span");
  track.className = "track signed";
  const fill = document.createElement("span");
  fill.className = relevance >= 0 ? "fill positive" : "fill negative";
  const width = Math.min(1, Math.abs(relevance)) * 50;
  fill.style.width = `${width}%`;
  fill.style.left = relevance >= 0 ? "50%" : `${50 - width}%`;
  track.append(fill);
  const value = document.createElement("span");
  value.className = "bar-value";
  value.textContent = (relevance >= 0 ? "+" : "") + relevance.toFixed(3);
  const cell = document.createElement("td");
  cell.append(track, value);
  return cell;
}

function imageCell(src, alt) {
  const cell = document.createElement("td");
  const img = document.createElement("img");
  img.className = "pixel small";
  img.src = src;
  img.alt = alt;
  cell.append(img);
  return cell;
}

function sliderCell(concept) {
  const lam = state.info.lambda;
  const cell = document.createElement("td");
  cell.className = "slider-cell";
  const slider = document.createElement("input");
  slider.type = "range";
  slider.className = "lambda-slider";
  slider.min = lam.min;
  slider.max = lam.max;
  slider.step = lam.step;
  slider.value = lam.default;
  slider.dataset.concept = concept;
  slider.setAttribute("aria-label", `λ of concept ${concept}`);
  const readout = document.createElement("output");
  readout.textContent = Number(slider.value).toFixed(1);
  slider.addEventListener("input", () => {
    readout.textContent = Number(slider.value).toFixed(1);
    requestRender();
  });
  cell.append(slider, readout);
  return cell;
}

function conceptRows(concepts) {
  const body = $("concept-rows");
  body.replaceChildren();
  for (const concept of concepts) {
    const row = document.createElement("tr");
    row.className = "concept-row";
    row.dataset.concept = concept.concept;
    const name = document.createElement("td");
    name.textContent = `#${concept.rank}: ${concept.concept}`;
    const activation = document.createElement("td");
    activation.textContent = concept.activation.toFixed(3);
    row.append(
      name,
      relevanceBar(concept.relevance),
      activation,
      imageCell(concept.map, `map of concept ${concept.concept}`),
      imageCell(concept.gradient, `gradient of concept ${concept.concept}`),
      sliderCell(concept.concept),
    );
    body.append(row);
  }
}

function showRender(render) {
  $("render-image").src = render.image;
  probabilityBars($("render-g"), render.g);
  probabilityBars($("render-f"), render.f);
  const edited = Object.entries(render.lambdas).filter(([, lam]) => lam !== 1);
  $("render-state").textContent = edited.length
    ? `(${edited.map(([c, lam]) => `λ${c} = ${lam.toFixed(1)}`).join(", ")})`
    : "(every λ = 1: the reconstruction)";
  document.body.dataset.renders = String(Number(document.body.dataset.renders || 0) + 1);
}

function showExplanation(doc) {
  state.source = doc.source;
  state.shown = state.sent; // answers to renders of the previous image are stale now
  $("explorer").hidden = false;
  $("input-image").src = doc.image;
  $("reconstruction-image").src = doc.render.image;
  $("caption").textContent = `(${doc.caption})`;
  probabilityBars($("input-g"), doc.g);
  probabilityBars($("input-f"), doc.f);
  conceptRows(doc.concepts);
  showRender(doc.render);
  document.body.dataset.state = "ready";
  document.body.dataset.source = doc.source;
  setStatus("");
}

async function explain(path, options, what) {
  const load = ++state.loads;
  setStatus(`explaining ${what}…`, "busy");
  try {
    const doc = await api(path, options);
    if (load === state.loads) showExplanation(doc);
  } catch (err) {
    if (load === state.loads) setStatus(err.message, "error");
  }
}

function lambdas() {
  const values = {};
  for (const slider of document.querySelectorAll(".lambda-slider")) {
    values[slider.dataset.concept] = Number(slider.value);
  }
  return values;
}

function requestRender() {
  state.pending = true;
  if (!state.inFlight) sendRender();
}

async function sendRender() {
  // one request at a time, always with the newest slider values: a fast drag never queues stale renders
  state.pending = false;
  state.inFlight = true;
  const request = ++state.sent;
  const source = state.source;
  try {
    const doc = await api("api/render", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ source, lambdas: lambdas() }),
    });
    if (request > state.shown && doc.source === state.source) {
      state.shown = request;
      showRender(doc);
    }
  } catch (err) {
    setStatus(err.message, "error");
  } finally {
    state.inFlight = false;
    if (state.pending) sendRender();
  }
}

function showIndex(index) {
  const size = state.info.test_size;
  if (!size) return;
  index = ((Math.trunc(index) % size) + size) % size;
  $("index-input").value = index;
  explain(`api/sample?index=${index}`, undefined, `test image ${index}`);
}

function upload(file) {
  const most = state.info.max_upload_bytes;
  if (file.size > most) {
    setStatus(`${file.name}: ${(file.size / 2 ** 20).toFixed(1)} MB is above the ${most / 2 ** 20} MB limit`, "error");
    return;
  }
  explain("api/upload", { method: "POST", body: file }, file.name);
}

async function start() {
  try {
    state.info = await api("api/info");
  } catch (err) {
    setStatus(err.message, "error");
    return;
  }
  const info = state.info;
  $("model-info").textContent =
    `${info.model} · ${info.dataset}, ${info.classes.length} classes, ${info.resolution} px · ` +
    `K = ${info.num_concepts} concepts, top ${info.top_k} shown`;
  const index = $("index-input");
  index.max = Math.max(0, info.test_size - 1);
  $("test-size").textContent = info.test_size ? `of 0…${info.test_size - 1}` : "";
  index.addEventListener("change", () => showIndex(Number(index.value)));
  $("prev-button").addEventListener("click", () => showIndex(Number(index.value) - 1));
  $("next-button").addEventListener("click", () => showIndex(Number(index.value) + 1));
  $("random-button").addEventListener("click", () => showIndex(Math.floor(Math.random() * info.test_size)));
  $("upload-input").addEventListener("change", (event) => {
    if (event.target.files.length) upload(event.target.files[0]);
  });
  $("reset-button").addEventListener("click", () => {
    for (const slider of document.querySelectorAll(".lambda-slider")) {
      slider.value = info.lambda.default;
      slider.nextElementSibling.textContent = Number(slider.value).toFixed(1);
    }
    requestRender();
  });
  if (info.test_size) {
    showIndex(0);
  } else {
    $("picker").hidden = true;
    setStatus("no test split is loaded: upload an image to explain");
  }
}

start();
