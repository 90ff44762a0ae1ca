// aerialdet review: the page's own code (OpenLayers' UMD build is the global `ol`).
// Every URL is relative: the page lives under /<token>/, so requests carry the token.
// Text from the server (labels, scenes, errors) is only ever set with textContent.
(function () {
  "use strict";

  const STYLE_COLORS = {
    unreviewed: "#ffd400", accepted: "#00e060", relabeled: "#3399ff", moved: "#00e5ff",
    drawn: "#ff40ff", rejected: "#ff3030", dropped: "#9a9a9a",
  };
  const state = { config: null, selectedId: null, currentLabel: null, drawing: null, tiles: 0, features: 0 };
  const status = document.getElementById("status");

  function say(text) { status.textContent = text || ""; }

  async function api(path, body) {
    const init = body === undefined ? {} : {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    };
    const response = await fetch(path, init);
    const data = await response.json().catch(() => ({ error: "HTTP " + response.status }));
    if (!response.ok) { throw new Error(data.error || "HTTP " + response.status); }
    return data;
  }

  function styleOf(feature) {
    const st = feature.get("state");
    const selected = feature.getId() === state.selectedId;
    return new ol.style.Style({
      stroke: new ol.style.Stroke({
        color: selected ? "#ffffff" : STYLE_COLORS[st] || "#ffd400",
        width: selected ? 4 : 3,
        lineDash: st === "rejected" || st === "dropped" ? [6, 4] : undefined,
      }),
      fill: new ol.style.Fill({ color: "rgba(255,255,255,0.01)" }),  // so a click inside hits it
    });
  }

  function filterQuery() {
    const labels = Array.from(document.querySelectorAll("#class-filters input:checked")).map((i) => i.value);
    const minScore = document.getElementById("min-score").value;
    let q = "";
    if (labels.length !== state.config.classes.length) { q += "&labels=" + encodeURIComponent(labels.join(",")); }
    if (minScore !== "") { q += "&min_score=" + encodeURIComponent(minScore); }
    return q;
  }

  const source = new ol.source.Vector({
    strategy: ol.loadingstrategy.bbox,
    loader: function (extent, resolution, projection, success, failure) {
      if (!document.querySelector("#class-filters input:checked")) { success([]); return; }  // no class shown
      api("api/detections?bbox=" + extent.map((v) => v.toFixed(3)).join(",") + filterQuery())
        .then((data) => {
          const features = data.items.map(toFeature);
          source.addFeatures(features);
          state.features = source.getFeatures().length;
          document.body.dataset.features = String(state.features);
          if (data.truncated) { say("many detections here: zoom in or filter to see them all"); }
          success(features);
        })
        .catch((err) => { say(err.message); failure(); });
    },
  });

  function toFeature(item) {
    const feature = new ol.Feature(ol.geom.Polygon.fromExtent(item.bbox));
    feature.setId(item.id);
    feature.setProperties({
      state: item.state, label: item.label, score: item.score, scene: item.scene, model: item.model,
      detected_label: item.detected_label,
    });
    return feature;
  }

  const vectorLayer = new ol.layer.Vector({ source: source, style: styleOf });
  const map = new ol.Map({ target: "map", layers: [], view: new ol.View({ center: [0, 0], zoom: 2 }) });
  const selected = new ol.Collection();
  const translate = new ol.interaction.Translate({ features: selected });

  function info(feature) {
    const dl = document.getElementById("info");
    dl.replaceChildren();
    if (!feature) { const dt = document.createElement("dt"); dt.textContent = "none"; dl.append(dt); return; }
    const score = feature.get("score");
    const rows = [
      ["id", feature.getId()], ["state", feature.get("state")], ["label", feature.get("label")],
      ["detected", feature.get("detected_label") || "(drawn)"],
      ["score", score === null || score === undefined ? "-" : Number(score).toFixed(3)],
      ["scene", feature.get("scene")], ["model", feature.get("model") || "-"],
    ];
    for (const [key, value] of rows) {
      const dt = document.createElement("dt");
      const dd = document.createElement("dd");
      dt.textContent = key;
      dd.textContent = String(value);
      dd.className = "info-" + key;
      dl.append(dt, dd);
    }
  }

  function select(id) {
    state.selectedId = id;
    selected.clear();
    const feature = id === null ? null : source.getFeatureById(id);
    if (feature) { selected.push(feature); }
    info(feature);
    source.changed();
    document.body.dataset.selected = id || "";
  }

  async function reload(keepId) {
    await new Promise((resolve) => {
      const done = () => { source.un("featuresloadend", done); source.un("featuresloaderror", done); resolve(); };
      source.on("featuresloadend", done);
      source.on("featuresloaderror", done);
      source.refresh();
    });
    select(keepId && source.getFeatureById(keepId) ? keepId : null);
  }

  async function edit(body) {
    try {
      const result = await api("api/edit", body);
      say("");
      await reload(result.id);
      document.body.dataset.edits = String(Number(document.body.dataset.edits || 0) + 1);
    } catch (err) { say(err.message); await reload(state.selectedId); }
  }

  function selectedBox() {
    const feature = state.selectedId && source.getFeatureById(state.selectedId);
    return feature ? feature.getGeometry().getExtent() : null;
  }

  function nudge(dx, dy, resize) {
    const box = selectedBox();
    if (!box) { return; }
    const step = 2 * map.getView().getResolution();
    const next = resize
      ? [box[0], box[1] - dy * step, box[2] + dx * step, box[3]]
      : [box[0] + dx * step, box[1] + dy * step, box[2] + dx * step, box[3] + dy * step];
    if (next[2] > next[0] && next[3] > next[1]) { edit({ op: "move", id: state.selectedId, bbox: next }); }
  }

  function startDrawing() {
    if (state.drawing) { return; }
    const draw = new ol.interaction.Draw({
      source: new ol.source.Vector(), type: "Circle", geometryFunction: ol.interaction.Draw.createBox(),
    });
    draw.on("drawend", (e) => {
      stopDrawing();
      edit({ op: "draw", label: state.currentLabel, bbox: e.feature.getGeometry().getExtent() });
    });
    map.addInteraction(draw);
    state.drawing = draw;
    document.body.dataset.drawing = "1";
  }

  function stopDrawing() {
    if (state.drawing) { map.removeInteraction(state.drawing); state.drawing = null; }
    document.body.dataset.drawing = "";
  }

  async function nextInQueue() {
    try {
      const data = await api("api/queue?limit=1");
      const item = data.items[0];
      document.getElementById("queue-reason").textContent = item ? item.reason : "queue empty";
      if (!item) { return; }
      map.getView().fit(ol.extent.buffer(item.bbox, 60 * map.getView().getResolution()), { maxZoom: 19 });
      await reload(item.id);
    } catch (err) { say(err.message); }
  }

  function onKey(e) {
    if (e.target instanceof HTMLInputElement) { return; }
    const id = state.selectedId;
    const arrows = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, 1], ArrowDown: [0, -1] };
    if ((e.key === "z" && (e.ctrlKey || e.metaKey)) || e.key === "u") {
      api("api/undo", {}).then(() => reload(id)).catch((err) => say(err.message));
    } else if (e.key === "a" && id) {
      edit({ op: "accept", id: id });
    } else if ((e.key === "r" || e.key === "Delete") && id) {
      edit({ op: "reject", id: id });
    } else if (/^[1-9]$/.test(e.key) && id && state.config.classes[Number(e.key) - 1] !== undefined) {
      edit({ op: "relabel", id: id, label: state.config.classes[Number(e.key) - 1] });
    } else if (arrows[e.key] && id) {
      nudge(arrows[e.key][0], arrows[e.key][1], e.shiftKey);
    } else if (e.key === "d") {
      startDrawing();
    } else if (e.key === "Escape") {
      stopDrawing();
      select(null);
    } else if (e.key === "n") {
      nextInQueue();
    } else { return; }
    e.preventDefault();
  }

  function classControls(classes) {
    const filters = document.getElementById("class-filters");
    const buttons = document.getElementById("class-buttons");
    classes.forEach((name, i) => {
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.checked = true;
      box.value = name;
      box.addEventListener("change", () => reload(state.selectedId));
      label.append(box, document.createTextNode(" " + name));
      filters.append(label);
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = (i < 9 ? i + 1 + " " : "") + name;
      button.addEventListener("click", () => {
        state.currentLabel = name;
        buttons.querySelectorAll("button").forEach((b) => b.classList.remove("current"));
        button.classList.add("current");
        if (state.selectedId) { edit({ op: "relabel", id: state.selectedId, label: name }); }
      });
      if (i === 0) { button.classList.add("current"); }
      buttons.append(button);
    });
    state.currentLabel = classes[0] || null;
  }

  function tileLayer(scene) {
    const tileSource = new ol.source.XYZ({ url: "tiles/" + scene.index + "/{z}/{x}/{y}.png", transition: 0 });
    tileSource.on("tileloadend", () => {
      state.tiles += 1;
      document.body.dataset.tiles = String(state.tiles);
    });
    tileSource.on("tileloaderror", () => say("a tile of " + scene.scene + " failed to load"));
    return new ol.layer.Tile({ source: tileSource, extent: scene.bbox });
  }

  async function start() {
    state.config = await api("api/config");
    classControls(state.config.classes);
    state.config.scenes.forEach((scene) => map.addLayer(tileLayer(scene)));
    map.addLayer(vectorLayer);
    map.addInteraction(translate);
    translate.on("translateend", (e) => {
      const feature = e.features.item(0);
      if (feature) { edit({ op: "move", id: feature.getId(), bbox: feature.getGeometry().getExtent() }); }
    });
    const extent = ol.extent.createEmpty();
    state.config.scenes.forEach((scene) => ol.extent.extend(extent, scene.bbox));
    if (!ol.extent.isEmpty(extent)) { map.getView().fit(extent, { padding: [10, 10, 10, 10] }); }
    map.on("singleclick", (e) => {
      if (state.drawing) { return; }
      const hit = map.forEachFeatureAtPixel(e.pixel, (f) => f, { layerFilter: (l) => l === vectorLayer });
      select(hit ? hit.getId() : null);
    });
    document.addEventListener("keydown", onKey);
    document.getElementById("next").addEventListener("click", nextInQueue);
    document.getElementById("min-score").addEventListener("change", () => reload(state.selectedId));
    document.body.dataset.ready = "1";
  }

  // for tests and the curious: where a box is on screen
  window.aerialdetReview = {
    map: map, source: source, select: select,
    pixelOf: (id) => {
      const feature = source.getFeatureById(id);
      return feature ? map.getPixelFromCoordinate(ol.extent.getCenter(feature.getGeometry().getExtent())) : null;
    },
  };
  start().catch((err) => say("the review could not start: " + err.message));
})();
