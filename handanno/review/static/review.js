// handanno review: the page's logic (plain JavaScript, nothing loaded from outside).
// Talks to handanno/review/app.py; writes only through POST /api/decision and /api/ignore.
"use strict";

(function () {
  const STATUS_TEXT = {
    "accepted": "accepted by thresholds", "rejected": "rejected by thresholds",
    "reviewer-accepted": "accepted by reviewer", "reviewer-rejected": "rejected by reviewer",
    "not-fitted": "not fitted",
  };
  const STATUS_COLOUR = {};  // read from the style sheet's variables
  // RGB per finger (thumb, index, middle, ring, pinky), as handanno/annotate/overlay.py draws them
  const FINGER_RGB = ["rgb(230,60,60)", "rgb(60,200,60)", "rgb(40,140,230)", "rgb(230,200,40)", "rgb(200,60,200)"];
  const $ = (id) => document.getElementById(id);

  const state = {
    session: null, rows: [], byFrame: new Map(), order: [], current: null, data: null,
    cache: new Map(), whole: false, switchStart: 0, loadToken: 0,
  };
  // what tests and benchmarks read: window.__review.{ready, frame, lastSwitchMs, loadMs}
  const probe = (window.__review = { ready: false, frame: null, lastSwitchMs: null, loadMs: null, switches: 0 });

  // ---------------------------------------------------------------- helpers
  function fmt(x, digits) { return x === null || x === undefined ? "–" : Number(x).toFixed(digits); }
  function finger(j) { return j === 0 ? "rgb(255,255,255)" : FINGER_RGB[Math.floor((j - 1) / 4)]; }
  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  async function getJSON(url) {
    const r = await fetch(url, { cache: "no-store" });
    const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }
  async function postJSON(url, obj) {
    const r = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(obj) });
    const body = await r.json().catch(() => ({ error: `${r.status} ${r.statusText}` }));
    if (!r.ok) throw new Error(body.error || `${r.status} ${r.statusText}`);
    return body;
  }
  function statusOf(row) {
    if (row.decision === "accept") return "reviewer-accepted";
    if (row.decision === "reject") return "reviewer-rejected";
    if (!row.fitted) return "not-fitted";
    return row.accepted ? "accepted" : "rejected";
  }
  function banner(text, isError) {
    const b = $("banner");
    b.hidden = !text;
    b.textContent = text || "";
    b.classList.toggle("error", !!isError);
  }
  function saved(text, isError) {
    const s = $("saved");
    s.textContent = text;
    s.classList.toggle("error", !!isError);
  }

  // ---------------------------------------------------------------- the frame list and the timeline
  function sortedOrder() {
    const by = $("sort").value, show = $("filter").value;
    let rows = state.rows.slice();
    if (show === "unreviewed") rows = rows.filter((r) => !r.decision);
    else if (show !== "all") rows = rows.filter((r) => r.status === show);
    const key = {
      frame: null,
      reproj: (r) => (r.worst_reproj_err_px === null ? -Infinity : r.worst_reproj_err_px),
      iou: (r) => (r.min_mask_iou === null ? Infinity : -r.min_mask_iou),
    }[by];
    if (key) rows.sort((a, b) => key(b) - key(a) || a.index - b.index);
    return rows.map((r) => r.frame);
  }

  function rowElement(row) {
    const li = el("li", "row");
    li.dataset.frame = row.frame;
    fillRow(li, row);
    li.addEventListener("click", () => showFrame(row.frame));
    return li;
  }

  function fillRow(li, row) {
    li.replaceChildren();
    const dot = el("span", `dot st-${row.status}` + (row.decision ? " decided" : ""));
    dot.title = STATUS_TEXT[row.status] + (row.reason ? `: ${row.reason}` : "");
    li.dataset.status = row.status;
    li.append(dot, el("span", "name", row.frame));
    const re = el("span", "num", `${fmt(row.median_reproj_err_px, 1)} / ${fmt(row.worst_reproj_err_px, 1)}`);
    const io = el("span", "num", `${fmt(row.median_mask_iou, 2)} / ${fmt(row.min_mask_iou, 2)}`);
    if (!row.accepted && row.fitted) re.classList.add("bad");
    li.append(re, io);
    li.title = row.reasons && row.reasons.length ? row.reasons.join("\n") : STATUS_TEXT[row.status];
  }

  function renderList() {
    state.order = sortedOrder();
    const list = $("frame-list");
    const frag = document.createDocumentFragment();
    for (const f of state.order) {
      const row = state.byFrame.get(f);
      if (!row.li) row.li = rowElement(row);
      frag.appendChild(row.li);
    }
    list.replaceChildren(frag);
    markCurrent();
  }

  function renderCounts() {
    const counts = {};
    for (const r of state.rows) counts[r.status] = (counts[r.status] || 0) + 1;
    const decided = state.rows.filter((r) => r.decision).length;
    const box = $("counts");
    box.replaceChildren();
    box.append(spanCount(`${state.rows.length}`, "frames"));
    for (const k of Object.keys(STATUS_TEXT)) {
      if (!counts[k]) continue;
      const s = spanCount(`${counts[k]}`, STATUS_TEXT[k]);
      s.prepend(el("span", `dot st-${k}`));
      box.append(s);
    }
    box.append(spanCount(`${decided}/${state.rows.length}`, "reviewed"));
  }
  function spanCount(n, text) {
    const s = el("span", "count");
    s.append(el("b", null, n), document.createTextNode(` ${text}`));
    return s;
  }

  function drawTimeline() {
    const c = $("timeline");
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, h = c.clientHeight;
    if (c.width !== Math.round(w * dpr)) { c.width = Math.round(w * dpr); c.height = Math.round(h * dpr); }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const n = state.rows.length;
    if (!n) return;
    const step = w / n;
    for (let i = 0; i < n; i++) {
      const r = state.rows[i];
      g.fillStyle = STATUS_COLOUR[r.status];
      g.fillRect(i * step, r.decision ? 4 : 10, Math.max(step, 1), r.decision ? h - 8 : h - 20);
    }
    if (state.current !== null) {
      const i = state.byFrame.get(state.current).index;
      const x = (i + 0.5) * step;
      g.fillStyle = "#ffd43b";
      g.fillRect(x - 1, 0, 2, h);
      g.beginPath(); g.moveTo(x - 5, 0); g.lineTo(x + 5, 0); g.lineTo(x, 6); g.fill();
    }
  }

  function markCurrent() {
    for (const li of $("frame-list").querySelectorAll("li.current")) li.classList.remove("current");
    const row = state.current && state.byFrame.get(state.current);
    if (row && row.li) {
      row.li.classList.add("current");
      row.li.scrollIntoView({ block: "nearest" });
    }
    drawTimeline();
  }

  async function loadRows() {
    const d = await getJSON("/api/frames");
    state.rows = d.frames.map((r, i) => {
      const old = state.byFrame.get(r.frame);
      return Object.assign(r, { index: i, li: old ? old.li : null });
    });
    state.byFrame = new Map(state.rows.map((r) => [r.frame, r]));
    for (const r of state.rows) if (r.li) fillRow(r.li, r);
    return d;
  }

  // ---------------------------------------------------------------- one frame
  function frameData(frame) {
    let p = state.cache.get(frame);
    if (!p) {
      p = getJSON(`/api/frame/${encodeURIComponent(frame)}`);
      p.catch(() => state.cache.delete(frame));
      state.cache.set(frame, p);
      if (state.cache.size > 40) state.cache.delete(state.cache.keys().next().value);
    }
    return p;
  }

  function prefetch(frame) {
    if (!frame) return;
    frameData(frame).then((d) => {
      for (const v of d.views) if (!v.error) { const im = new Image(); im.src = state.whole ? v.image_full : v.image; }
    }).catch(() => {});
  }

  async function showFrame(frame, opts) {
    if (!state.byFrame.has(frame)) return;
    const token = ++state.loadToken;
    state.switchStart = performance.now();
    state.current = frame;
    probe.ready = false;
    probe.frame = frame;
    document.body.dataset.frame = frame;
    document.body.dataset.ready = "0";
    if (location.hash !== `#${frame}`) history.replaceState(null, "", `#${frame}`);
    markCurrent();
    renderHead();
    let data;
    try {
      data = await frameData(frame);
    } catch (e) {
      if (token === state.loadToken) { $("views").replaceChildren(el("div", "view-error", String(e.message))); }
      return;
    }
    if (token !== state.loadToken) return;
    state.data = data;
    renderHead();
    await renderViews(data, token);
    if (token !== state.loadToken) return;
    probe.lastSwitchMs = performance.now() - state.switchStart;
    probe.switches += 1;
    probe.ready = true;
    document.body.dataset.ready = "1";
    if (!(opts && opts.no3d)) load3d(frame, token);
    const i = state.order.indexOf(frame);
    prefetch(state.order[i + 1]);
  }

  function renderHead() {
    const row = state.byFrame.get(state.current);
    if (!row) return;
    $("frame-title").textContent = `frame ${row.frame}`;
    const badge = $("frame-status");
    badge.textContent = STATUS_TEXT[row.status];
    badge.className = `badge st-${row.status}`;
    badge.dataset.status = row.status;
    const pos = state.order.indexOf(row.frame);
    $("frame-pos").textContent = `${pos + 1} of ${state.order.length} in the list · ${row.index + 1} of ${state.rows.length} in time`;
    const fig = $("frame-figures");
    fig.replaceChildren();
    if (row.fitted) {
      const parts = [
        ["reprojection error", `median ${fmt(row.median_reproj_err_px, 1)} px, worst view ${fmt(row.worst_reproj_err_px, 1)} px`],
        ["mask IoU", `median ${fmt(row.median_mask_iou, 2)}, lowest view ${fmt(row.min_mask_iou, 2)}`],
        ["fit to triangulation", row.triangulation_gap_mm === null ? "–" : `${fmt(row.triangulation_gap_mm, 1)} mm`],
        ["views with keypoints", `${row.views}`],
      ];
      parts.forEach(([k, v], i) => {
        if (i) fig.append(document.createTextNode(" · "));
        fig.append(document.createTextNode(`${k}: `), el("b", null, v));
      });
    } else {
      fig.textContent = row.fit_error ? `fit unreadable: ${row.fit_error}` : "not fitted yet: the views show the images and the 2D detections";
    }
    const reasons = $("frame-reasons");
    reasons.replaceChildren(...(row.reasons || []).map((r) => el("li", null, r)));
    const rv = $("frame-review");
    rv.textContent = row.decision
      ? `${row.decision === "accept" ? "accepted" : "rejected"} by the reviewer${row.reason ? `: “${row.reason}”` : ""} (${row.time || ""})`
      : "";
    if (row.ignored_views.length) rv.textContent += `${rv.textContent ? " · " : ""}views left out of the fit: ${row.ignored_views.join(", ")}`;
    if (document.activeElement !== $("reason")) $("reason").value = row.reason || "";
    if (state.data && state.data.mesh_note && state.data.frame === row.frame) rv.textContent += ` · ${state.data.mesh_note}`;
  }

  function renderViews(data, token) {
    const box = $("views");
    const row = state.byFrame.get(data.frame);
    const cards = data.views.map((v) => viewCard(v, row));
    box.replaceChildren(...cards.map((c) => c.card));
    return Promise.all(cards.map((c) => c.loaded)).then(() => token);
  }

  function viewCard(v, row) {
    const card = el("div", "view");
    card.dataset.camera = v.camera;
    const ignored = row.ignored_views.includes(v.camera);
    card.classList.toggle("ignored", ignored);
    const head = el("div", "view-head");
    const rep = el("span", null, `reproj ${fmt(v.reproj_err_px, 1)} px`);
    const iou = el("span", null, `IoU ${fmt(v.mask_iou, 2)}`);
    if (v.reproj_err_px !== null && v.reproj_err_px > 8) rep.classList.add("bad");
    if (v.mask_iou !== null && v.mask_iou < 0.85) iou.classList.add("bad");
    const btn = el("button", "ignore", ignored ? "ignored ✓" : "ignore view");
    btn.type = "button";
    btn.title = "Leave this view out of the fit (handanno fit fits the frame again without it)";
    btn.addEventListener("click", () => toggleIgnore(row.frame, v.camera, !row.ignored_views.includes(v.camera)));
    head.append(el("b", null, v.camera), rep, iou);
    const out = outsideCrop(v);
    if (out) {
      const o = el("span", "bad", `${out} outside`);
      o.title = "confident 2D detections outside this crop (z shows the whole image)";
      head.append(o);
    }
    const canvas = el("canvas");
    const stamp = el("span", "stamp", "left out of the fit");
    const err = el("div", "view-error");
    card.append(head, canvas, stamp, err, btn);
    card.addEventListener("mouseenter", () => { if (window.View3D && view3d) view3d.highlight(v.camera); });
    card.addEventListener("mouseleave", () => { if (window.View3D && view3d) view3d.highlight(null); });
    const dpr = Math.min(window.devicePixelRatio || 1, 2);
    const side = Math.round(Math.max(v.crop_px, 300) * dpr);
    canvas.width = side;
    canvas.height = side;
    const g = canvas.getContext("2d");
    const boxArr = state.whole ? v.full_box : v.box;
    let loaded;
    if (v.error) {
      err.textContent = v.error;
      drawOverlays(g, side, boxArr, v, null);
      loaded = Promise.resolve();
    } else {
      loaded = new Promise((resolve) => {
        const im = new Image();
        im.decoding = "async";
        im.onload = () => { drawOverlays(g, side, boxArr, v, im); resolve(); };
        im.onerror = async () => {
          let msg = "the image could not be loaded";
          try {
            const r = await fetch(state.whole ? v.image_full : v.image);
            const body = await r.json();
            msg = body.error || msg;
          } catch (e) { /* keep the plain message */ }
          err.textContent = msg;
          drawOverlays(g, side, boxArr, v, null);
          resolve();
        };
        im.src = state.whole ? v.image_full : v.image;
      });
    }
    if (v.detections_error) err.textContent = v.detections_error;
    return { card, loaded };
  }

  function outsideCrop(v) {  // confident detections outside the crop shown
    if (!v.detections) return 0;
    const [x0, y0, size] = state.whole ? v.full_box : v.box;
    return v.detections.filter(([u, w, c]) => c > 0.2 && (u < x0 || u > x0 + size || w < y0 || w > y0 + size)).length;
  }

  function drawOverlays(g, side, box, v, image) {
    const [x0, y0, size] = box;
    const k = side / size;  // canvas px per image px; a pixel centre u maps to (u - x0) * k
    const X = (u) => (u - x0) * k, Y = (w) => (w - y0) * k;
    g.fillStyle = "#101215";
    g.fillRect(0, 0, side, side);
    if (image) g.drawImage(image, 0, 0, side, side);
    const lw = side / 300;
    // the fitted mesh's outline
    g.strokeStyle = "rgba(255,225,0,0.95)";
    g.lineWidth = 1.5 * lw;
    g.lineJoin = "round";
    for (const poly of v.outline || []) {
      g.beginPath();
      poly.forEach(([u, w], i) => (i ? g.lineTo(X(u), Y(w)) : g.moveTo(X(u), Y(w))));
      g.closePath();
      g.stroke();
    }
    const bones = state.session.bones;
    // the 2D detections: thin bones and rings
    const det = v.detections;
    if (det) {
      g.lineWidth = 1 * lw;
      g.strokeStyle = "rgba(255,255,255,0.6)";
      for (const [a, b] of bones) {
        if (det[a][2] <= 0 || det[b][2] <= 0) continue;
        g.beginPath(); g.moveTo(X(det[a][0]), Y(det[a][1])); g.lineTo(X(det[b][0]), Y(det[b][1])); g.stroke();
      }
      for (let j = 0; j < det.length; j++) {
        const [u, w, c] = det[j];
        if (c <= 0) continue;
        g.globalAlpha = 0.35 + 0.65 * Math.min(1, c);
        g.beginPath(); g.arc(X(u), Y(w), 3.6 * lw, 0, 2 * Math.PI);
        g.lineWidth = 3.2 * lw; g.strokeStyle = "rgba(0,0,0,0.8)"; g.stroke();
        g.lineWidth = 1.6 * lw; g.strokeStyle = "#fff"; g.stroke();
      }
      g.globalAlpha = 1;
    }
    // the fitted skeleton
    const J = v.joints_uv;
    if (J) {
      g.lineWidth = 2.4 * lw;
      g.lineCap = "round";
      for (const [a, b] of bones) {
        g.strokeStyle = finger(b);
        g.beginPath(); g.moveTo(X(J[a][0]), Y(J[a][1])); g.lineTo(X(J[b][0]), Y(J[b][1])); g.stroke();
      }
      for (let j = 0; j < J.length; j++) {
        g.fillStyle = finger(j);
        g.beginPath(); g.arc(X(J[j][0]), Y(J[j][1]), 2.4 * lw, 0, 2 * Math.PI); g.fill();
      }
    }
  }

  // ---------------------------------------------------------------- decisions
  function applyReview(frame, review) {
    const row = state.byFrame.get(frame);
    row.decision = review.decision;
    row.reason = review.reason;
    row.time = review.time;
    row.ignored_views = review.ignored_views;
    row.status = statusOf(row);
    if (row.li) fillRow(row.li, row);
    renderCounts();
    drawTimeline();
    if (frame === state.current) renderHead();
  }

  async function decide(decision, opts) {
    const frame = state.current;
    if (frame === null) return;
    const reason = decision === null ? "" : $("reason").value;
    try {
      const d = await postJSON("/api/decision", { frame, decision, reason });
      applyReview(frame, d.review);
      saved(`frame ${frame}: ${decision === null ? "decision taken back" : decision === "accept" ? "accepted" : "rejected"} · saved in review.json`);
    } catch (e) {
      saved(`frame ${frame}: not saved: ${e.message}`, true);
      return;
    }
    if (opts && opts.typeReason) { $("reason").focus(); $("reason").select(); return; }
    if (decision !== null && $("advance").checked) step(+1);
  }

  async function saveReason() {
    const frame = state.current, row = state.byFrame.get(frame);
    const decision = row.decision || "reject";  // a reason typed for an undecided frame rejects it
    try {
      const d = await postJSON("/api/decision", { frame, decision, reason: $("reason").value });
      applyReview(frame, d.review);
      saved(`frame ${frame}: ${decision}ed with the reason saved in review.json`);
      $("reason").blur();
      if ($("advance").checked) step(+1);
    } catch (e) {
      saved(`frame ${frame}: not saved: ${e.message}`, true);
    }
  }

  async function toggleIgnore(frame, camera, ignored) {
    try {
      const d = await postJSON("/api/ignore", { frame, camera, ignored });
      applyReview(frame, d.review);
      saved(`frame ${frame}: view ${camera} ${ignored ? "left out of" : "back in"} the fit (run handanno fit to fit again) · saved in review.json`);
      if (frame === state.current) {
        for (const card of $("views").querySelectorAll(".view")) {
          if (card.dataset.camera !== camera) continue;
          card.classList.toggle("ignored", ignored);
          card.querySelector("button.ignore").textContent = ignored ? "ignored ✓" : "ignore view";
        }
        if (view3d) view3d.setIgnored(d.review.ignored_views);
      }
    } catch (e) {
      saved(`frame ${frame}: view ${camera}: not saved: ${e.message}`, true);
    }
  }

  function step(delta) {
    if (!state.order.length) return;
    let i = state.order.indexOf(state.current);
    i = i < 0 ? 0 : Math.min(state.order.length - 1, Math.max(0, i + delta));
    showFrame(state.order[i]);
  }

  function nextUnreviewed() {
    const n = state.order.length;
    const start = state.order.indexOf(state.current);
    for (let k = 1; k <= n; k++) {
      const f = state.order[(start + k + n) % n];
      if (!state.byFrame.get(f).decision) return showFrame(f);
    }
    saved("every frame in the list has a decision");
  }

  // ---------------------------------------------------------------- 3D
  let view3d = null;
  async function load3d(frame, token) {
    if (!view3d) return;
    const note = $("three-note");
    if (!state.byFrame.get(frame).fitted) {
      view3d.setMesh(null, null, null);
      note.textContent = `frame ${frame} is not fitted yet: the cameras are shown`;
      return;
    }
    try {
      const mesh = await getJSON(`/api/mesh/${encodeURIComponent(frame)}`);
      if (token !== state.loadToken) return;
      view3d.setMesh(mesh.vertices, mesh.faces, mesh.joints);
      note.textContent = mesh.note || "";
    } catch (e) {
      if (token !== state.loadToken) return;
      view3d.setMesh(null, null, null);
      note.textContent = `no mesh for frame ${frame}: ${e.message}; the cameras are shown`;
    }
    view3d.setIgnored(state.byFrame.get(frame).ignored_views);
  }

  // ---------------------------------------------------------------- keys and controls
  function onKey(e) {
    const t = e.target;
    if (t && t.id === "reason") {
      if (e.key === "Enter") { e.preventDefault(); saveReason(); }
      else if (e.key === "Escape") { t.blur(); }
      return;
    }
    if (t && (t.tagName === "INPUT" || t.tagName === "SELECT" || t.tagName === "TEXTAREA")) return;
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    const actions = {
      a: () => decide("accept"), r: () => decide("reject"), R: () => decide("reject", { typeReason: true }),
      u: () => decide(null), j: () => step(+1), ArrowRight: () => step(+1), ArrowDown: () => step(+1),
      k: () => step(-1), ArrowLeft: () => step(-1), ArrowUp: () => step(-1), n: () => nextUnreviewed(),
      z: () => { $("whole").checked = !$("whole").checked; setWhole(); },
      "?": () => { $("help").hidden = !$("help").hidden; },
      Escape: () => { $("help").hidden = true; },
    };
    const f = actions[e.key];
    if (f) { e.preventDefault(); f(); }
  }

  function setWhole() {
    state.whole = $("whole").checked;
    if (state.current) showFrame(state.current, { no3d: true });
  }

  async function refreshFromOthers() {
    // another tab or another reviewer may have saved decisions: pick them up
    try {
      await loadRows();
      for (const r of state.rows) r.status = statusOf(r);
      renderCounts();
      drawTimeline();
      renderHead();
    } catch (e) { /* the server may be gone for a moment */ }
  }

  async function main() {
    const css = getComputedStyle(document.documentElement);
    for (const k of ["accepted", "rejected", "reviewer-accepted", "reviewer-rejected", "not-fitted"]) {
      STATUS_COLOUR[k] = css.getPropertyValue(`--${k}`).trim();
    }
    const t0 = performance.now();
    try {
      state.session = await getJSON("/api/session");
    } catch (e) {
      banner(`cannot read the session: ${e.message}`, true);
      return;
    }
    $("session-name").textContent = state.session.root;
    $("session-name").title = state.session.root;
    $("help-file").textContent = state.session.review_file;
    document.title = `handanno review · ${state.session.name}`;
    if (window.View3D) {
      view3d = new window.View3D($("view3d"), state.session.cameras, state.session.bones);
      $("btn-3d-hand").addEventListener("click", () => view3d.fit("hand"));
      $("btn-3d-rig").addEventListener("click", () => view3d.fit("rig"));
    }
    const d = await loadRows();
    const notes = [];
    if (!d.fitted) notes.push(`No fits yet in ${state.session.root}/fits: run \`handanno fit --session ${state.session.root}\`. The views show the images and the 2D detections.`);
    if (state.session.notes.length) notes.push(`${state.session.notes.length} note(s) on the session: ${state.session.notes.slice(0, 3).join("; ")}`);
    banner(notes.join("  "));
    renderCounts();
    renderList();
    document.addEventListener("keydown", onKey);
    $("sort").addEventListener("change", renderList);
    $("filter").addEventListener("change", renderList);
    $("btn-accept").addEventListener("click", () => decide("accept"));
    $("btn-reject").addEventListener("click", () => decide("reject"));
    $("btn-clear").addEventListener("click", () => decide(null));
    $("btn-prev").addEventListener("click", () => step(-1));
    $("btn-next").addEventListener("click", () => step(+1));
    $("btn-unreviewed").addEventListener("click", nextUnreviewed);
    $("whole").addEventListener("change", setWhole);
    $("help-btn").addEventListener("click", () => { $("help").hidden = !$("help").hidden; });
    $("help-close").addEventListener("click", () => { $("help").hidden = true; });
    $("timeline").addEventListener("click", (e) => {
      const r = e.currentTarget.getBoundingClientRect();
      const i = Math.floor(((e.clientX - r.left) / r.width) * state.rows.length);
      const row = state.rows[Math.max(0, Math.min(state.rows.length - 1, i))];
      if (row) showFrame(row.frame);
    });
    window.addEventListener("resize", drawTimeline);
    window.addEventListener("hashchange", () => {
      const f = decodeURIComponent(location.hash.slice(1));
      if (f && f !== state.current && state.byFrame.has(f)) showFrame(f);
    });
    setInterval(refreshFromOthers, 15000);
    const wanted = decodeURIComponent(location.hash.slice(1));
    const first = state.byFrame.has(wanted) ? wanted : state.order[0];
    if (first !== undefined) {
      await showFrame(first);
      probe.loadMs = performance.now() - t0;
    } else {
      $("frame-title").textContent = "no frame to show";
    }
  }

  document.addEventListener("DOMContentLoaded", main);
})();
