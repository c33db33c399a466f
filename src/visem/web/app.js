// visem search page: plain JS, no build step. Every piece of data goes into
// the page through textContent or attributes, never as HTML.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const els = {
    info: $("info"),
    form: $("search-form"),
    q: $("q"),
    k: $("k"),
    imageForm: $("image-form"),
    imageFile: $("image-file"),
    message: $("message"),
    status: $("status"),
    results: $("results"),
    queryPanel: $("query-panel"),
    queryImage: $("query-image"),
    queryTitle: $("query-title"),
    queryCaptions: $("query-captions"),
    captionPanel: $("caption-panel"),
    captions: $("captions"),
    ignored: $("ignored"),
    mapButton: $("map-button"),
    mapPanel: $("map-panel"),
    map: $("map"),
    mapInfo: $("map-info"),
  };
  let limits = { max_k: 100, max_query_chars: 500, max_upload_bytes: 10 * 1024 * 1024 };
  let uploadUrl = null;
  let pending = 0; // requests are numbered so a slow answer cannot overwrite a newer one

  function showError(text) {
    els.message.textContent = text;
    els.message.hidden = false;
    els.status.textContent = "";
  }

  function clearError() {
    els.message.textContent = "";
    els.message.hidden = true;
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      if (body && typeof body.detail === "string") return body.detail;
      if (body && body.detail) return JSON.stringify(body.detail);
    } catch (e) {
      /* not JSON */
    }
    return `request failed (${response.status} ${response.statusText})`;
  }

  async function getJSON(url, options) {
    let response;
    try {
      response = await fetch(url, options);
    } catch (e) {
      throw new Error("the server could not be reached");
    }
    if (!response.ok) throw new Error(await errorText(response));
    return response.json();
  }

  function k() {
    const n = parseInt(els.k.value, 10);
    if (!Number.isFinite(n)) return 12;
    return Math.min(Math.max(n, 1), limits.max_k);
  }

  function fmt(score) {
    return Number(score).toFixed(3);
  }

  function resultCard(hit) {
    const card = document.createElement("figure");
    card.className = "result";
    card.tabIndex = 0;
    card.dataset.id = String(hit.id);
    card.title = hit.name;
    card.setAttribute("role", "button");
    card.setAttribute("aria-label", `show images like ${hit.name}`);

    const img = document.createElement("img");
    img.loading = "lazy";
    img.decoding = "async";
    img.alt = hit.caption || hit.name;
    img.src = hit.url;
    card.appendChild(img);

    const caption = document.createElement("figcaption");
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = fmt(hit.score);
    caption.appendChild(score);
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = hit.name;
    caption.appendChild(name);
    if (hit.caption) {
      const text = document.createElement("div");
      text.className = "caption";
      text.textContent = hit.caption;
      caption.appendChild(text);
    }
    card.appendChild(caption);

    const open = () => similar(hit.id, hit.name);
    card.addEventListener("click", open);
    card.addEventListener("keydown", (ev) => {
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        open();
      }
    });
    return card;
  }

  function renderImages(hits) {
    els.results.replaceChildren(...hits.map(resultCard));
  }

  function renderCaptions(captions) {
    els.captions.replaceChildren(
      ...captions.map((c) => {
        const li = document.createElement("li");
        li.className = "caption-hit";
        li.dataset.imageId = String(c.image_id);
        const score = document.createElement("span");
        score.className = "score";
        score.textContent = fmt(c.score);
        const link = document.createElement("a");
        link.href = "#";
        link.textContent = c.caption;
        link.addEventListener("click", (ev) => {
          ev.preventDefault();
          similar(c.image_id, c.caption);
        });
        li.append(score, link);
        return li;
      })
    );
    els.captionPanel.hidden = captions.length === 0;
  }

  function hideQuery() {
    els.queryPanel.hidden = true;
    els.captionPanel.hidden = true;
    els.captions.replaceChildren();
    els.queryCaptions.replaceChildren();
  }

  async function searchText(q) {
    const ticket = ++pending;
    clearError();
    els.status.textContent = "searching...";
    const params = new URLSearchParams({ q: q, k: String(k()) });
    try {
      const data = await getJSON(`/api/search?${params}`);
      if (ticket !== pending) return;
      hideQuery();
      hideMap();
      renderImages(data.results);
      showIgnored(data.ignored || []);
      els.status.textContent = `${data.results.length} images for \u201c${data.query}\u201d`;
      history.replaceState(null, "", `?${new URLSearchParams({ q: q })}`);
    } catch (e) {
      if (ticket !== pending) return;
      showError(e.message);
    }
  }

  function showIgnored(words) {
    // the words the index could not use, as the command line lists them
    els.ignored.textContent = words.length ? `ignored (unknown to this index): ${words.join(", ")}` : "";
    els.ignored.hidden = words.length === 0;
  }

  function hideMap() {
    els.mapPanel.hidden = true;
  }

  async function showMap() {
    const ticket = ++pending;
    clearError();
    showIgnored([]);
    els.status.textContent = "computing the map...";
    try {
      const data = await getJSON("/api/map?n=300");
      if (ticket !== pending) return;
      hideQuery();
      els.results.replaceChildren();
      const nodes = data.points.map((p) => {
        const left = `${(3 + 94 * p.x).toFixed(2)}%`;
        const top = `${(3 + 94 * (1 - p.y)).toFixed(2)}%`;
        if (p.kind === "image") {
          const img = document.createElement("img");
          img.className = "map-point";
          img.src = `/api/images/${encodeURIComponent(p.id)}`;
          img.alt = p.name;
          img.title = p.name;
          img.tabIndex = 0;
          img.dataset.id = String(p.id);
          img.style.left = left;
          img.style.top = top;
          img.addEventListener("click", () => similar(p.id, p.name));
          return img;
        }
        const dot = document.createElement("span");
        dot.className = "map-caption";
        dot.title = p.caption;
        dot.dataset.imageId = String(p.image_id);
        dot.style.left = left;
        dot.style.top = top;
        dot.addEventListener("click", () => similar(p.image_id, p.caption));
        return dot;
      });
      els.map.replaceChildren(...nodes);
      els.mapInfo.textContent = `${data.n_images} images and ${data.n_captions} captions (red dots) placed by their embeddings (${data.method}); click one for its neighbours`;
      els.mapPanel.hidden = false;
      els.status.textContent = "";
    } catch (e) {
      if (ticket !== pending) return;
      showError(e.message);
    }
  }

  function showQuery(src, title) {
    els.queryImage.src = src;
    els.queryTitle.textContent = title;
    els.queryCaptions.replaceChildren();
    els.queryPanel.hidden = false;
  }

  function showSimilar(data, label) {
    renderImages(data.images);
    renderCaptions(data.captions);
    els.status.textContent = `${data.images.length} images and ${data.captions.length} captions like ${label}`;
  }

  async function similar(id, name) {
    const ticket = ++pending;
    clearError();
    els.status.textContent = "searching...";
    try {
      const data = await getJSON(`/api/similar/${encodeURIComponent(id)}?k=${k()}`);
      if (ticket !== pending) return;
      hideMap();
      showIgnored([]);
      showQuery(`/api/images/${encodeURIComponent(id)}`, `Like ${name}`);
      els.queryPanel.dataset.id = String(id);
      showSimilar(data, name);
      window.scrollTo({ top: 0 });
      const own = await getJSON(`/api/images/${encodeURIComponent(id)}/captions`);
      if (ticket !== pending) return;
      els.queryCaptions.replaceChildren(
        ...own.captions.map((c) => {
          const li = document.createElement("li");
          li.textContent = c;
          return li;
        })
      );
    } catch (e) {
      if (ticket !== pending) return;
      showError(e.message);
    }
  }

  async function searchImage(file) {
    const ticket = ++pending;
    clearError();
    if (file.size > limits.max_upload_bytes) {
      showError(`image larger than ${limits.max_upload_bytes} bytes`);
      return;
    }
    els.status.textContent = "searching...";
    const body = new FormData();
    body.append("file", file, file.name);
    try {
      const data = await getJSON(`/api/search/image?k=${k()}`, { method: "POST", body: body });
      if (ticket !== pending) return;
      if (uploadUrl) URL.revokeObjectURL(uploadUrl);
      uploadUrl = URL.createObjectURL(file);
      hideMap();
      showIgnored([]);
      showQuery(uploadUrl, `Like ${file.name}`);
      delete els.queryPanel.dataset.id;
      showSimilar(data, file.name);
    } catch (e) {
      if (ticket !== pending) return;
      showError(e.message);
    }
  }

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const q = els.q.value.trim();
    if (!q) {
      showError("type a query");
      return;
    }
    searchText(q);
  });

  els.imageForm.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const file = els.imageFile.files[0];
    if (!file) {
      showError("choose an image file");
      return;
    }
    searchImage(file);
  });
  els.mapButton.addEventListener("click", () => showMap());
  els.imageFile.addEventListener("change", () => {
    if (els.imageFile.files[0]) searchImage(els.imageFile.files[0]);
  });

  async function start() {
    try {
      const info = await getJSON("/api/info");
      limits = info.limits;
      els.k.max = String(limits.max_k);
      els.q.maxLength = limits.max_query_chars;
      const parts = [`${info.n_images} images`];
      if (info.n_captions != null) parts.push(`${info.n_captions} captions`);
      if (info.method) parts.push(`model ${info.method}`);
      els.info.textContent = parts.join(" \u00b7 ");
    } catch (e) {
      showError(e.message);
    }
    const q = new URLSearchParams(location.search).get("q");
    if (q) {
      els.q.value = q;
      searchText(q);
    }
  }

  start();
})();
