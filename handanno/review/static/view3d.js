// handanno review: the 3D view (fitted mesh, skeleton and camera frusta) drawn on a 2D <canvas>.
// Plain JavaScript: a perspective projection, faces sorted back to front (painter's algorithm),
// turned by dragging, zoomed by the wheel. World units are metres (rig.json: x_cam = R x_world + t).
"use strict";

(function () {
  const FINGER_RGB = ["rgb(230,60,60)", "rgb(60,200,60)", "rgb(40,140,230)", "rgb(230,200,40)", "rgb(200,60,200)"];
  const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
  const add = (a, b) => [a[0] + b[0], a[1] + b[1], a[2] + b[2]];
  const mul = (a, s) => [a[0] * s, a[1] * s, a[2] * s];
  const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
  const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
  const norm = (a) => { const n = Math.hypot(a[0], a[1], a[2]) || 1; return [a[0] / n, a[1] / n, a[2] / n]; };
  const colT = (R, i) => [R[0][i], R[1][i], R[2][i]];  // column i of R = row i of R^T

  function solve3(A, b) {  // Cramer's rule; null when singular
    const det = (M) => M[0][0] * (M[1][1] * M[2][2] - M[1][2] * M[2][1]) - M[0][1] * (M[1][0] * M[2][2] - M[1][2] * M[2][0])
      + M[0][2] * (M[1][0] * M[2][1] - M[1][1] * M[2][0]);
    const d = det(A);
    if (Math.abs(d) < 1e-12) return null;
    return [0, 1, 2].map((i) => det(A.map((row, r) => row.map((v, c) => (c === i ? b[r] : v)))) / d);
  }

  class View3D {
    constructor(canvas, cameras, bones) {
      this.canvas = canvas;
      this.bones = bones;
      this.cams = cameras.map((c) => {
        const R = c.R;
        return { name: c.name, center: c.center, R, K: c.K, size: c.image_size,
                 axis: colT(R, 2), down: colT(R, 1), right: colT(R, 0) };
      });
      // "up": the cameras' mean image-up direction (-y of each camera) in the world
      let up = [0, 0, 0];
      for (const c of this.cams) up = add(up, mul(c.down, -1));
      this.up = this.cams.length ? norm(up) : [0, 0, 1];
      this.rigTarget = this._axesMeet();
      this.verts = null; this.faces = null; this.joints = null;
      this.ignored = new Set();
      this.hot = null;
      this.dist = 1;
      this.mode = "hand";
      this.target = this.rigTarget;
      this._home();
      this._fitted = false;
      this._bind();
      this.fit("hand");
    }

    _axesMeet() {  // the point nearest to every camera's optical axis (least squares)
      if (!this.cams.length) return [0, 0, 0];
      const A = [[0, 0, 0], [0, 0, 0], [0, 0, 0]], b = [0, 0, 0];
      for (const c of this.cams) {
        const d = c.axis;
        for (let i = 0; i < 3; i++) {
          for (let j = 0; j < 3; j++) {
            const m = (i === j ? 1 : 0) - d[i] * d[j];
            A[i][j] += m;
            b[i] += m * c.center[j];
          }
        }
      }
      return solve3(A, b) || mul(this.cams.reduce((s, c) => add(s, c.center), [0, 0, 0]), 1 / this.cams.length);
    }

    setMesh(vertices, faces, joints) {
      this.verts = vertices; this.faces = faces; this.joints = joints;
      if (!this._fitted) this.fit(this.mode); else this.draw();
    }
    setIgnored(names) { this.ignored = new Set(names || []); this.draw(); }
    highlight(name) { this.hot = name; this.draw(); }

    _handCentre() {
      if (!this.verts || !this.verts.length) return null;
      let c = [0, 0, 0];
      for (const v of this.verts) c = add(c, v);
      return mul(c, 1 / this.verts.length);
    }

    fit(mode) {
      this.mode = mode;
      const hand = this._handCentre();
      this.target = hand || this.rigTarget;
      const fov = 0.8;  // vertical field of view, rad
      let radius;
      if (mode === "hand" && hand) {
        radius = 0;
        for (const v of this.verts) radius = Math.max(radius, Math.hypot(...sub(v, hand)));
        radius *= 1.5;  // a little room around the hand
      } else {
        radius = 0.05;
        for (const c of this.cams) radius = Math.max(radius, Math.hypot(...sub(c.center, this.target)));
        radius *= 1.15;
      }
      this.dist = radius / Math.tan(fov / 2);
      this._fitted = !!hand;
      this.draw();
    }

    _bind() {
      const c = this.canvas;
      let drag = null;
      c.addEventListener("pointerdown", (e) => { drag = [e.clientX, e.clientY]; c.setPointerCapture(e.pointerId); });
      c.addEventListener("pointermove", (e) => {
        if (!drag) return;
        this.yaw -= (e.clientX - drag[0]) * 0.01;
        this.pitch = Math.max(-1.55, Math.min(1.55, this.pitch + (e.clientY - drag[1]) * 0.01));
        drag = [e.clientX, e.clientY];
        this.draw();
      });
      const end = () => { drag = null; };
      c.addEventListener("pointerup", end);
      c.addEventListener("pointercancel", end);
      c.addEventListener("wheel", (e) => { e.preventDefault(); this.dist *= Math.exp(e.deltaY * 0.0012); this.draw(); },
        { passive: false });
      c.addEventListener("dblclick", () => { this._home(); this.fit(this.mode); });
    }

    _plane() {  // two unit vectors perpendicular to "up" and to each other
      const up = this.up;
      const a = norm(Math.abs(up[2]) < 0.9 ? cross(up, [0, 0, 1]) : cross(up, [1, 0, 0]));
      return [a, cross(up, a)];
    }

    _home() {  // the first camera's side of the hand, a little higher and to one side
      this.yaw = 0.6; this.pitch = 0.35;
      if (!this.cams.length) return;
      const [a, b] = this._plane();
      const d = norm(sub(this.cams[0].center, this.rigTarget));
      this.yaw = Math.atan2(dot(d, b), dot(d, a)) + 0.35;
      this.pitch = Math.max(-1.2, Math.min(1.2, Math.asin(Math.max(-1, Math.min(1, dot(d, this.up)))) + 0.25));
    }

    _basis() {  // eye and view axes (right, up, forward) of the orbit camera
      const up = this.up;
      const [a, b] = this._plane();
      const dir = add(add(mul(a, Math.cos(this.pitch) * Math.cos(this.yaw)), mul(b, Math.cos(this.pitch) * Math.sin(this.yaw))),
        mul(up, Math.sin(this.pitch)));
      const eye = add(this.target, mul(dir, this.dist));
      const f = norm(sub(this.target, eye));
      const r = norm(cross(f, up));
      const u = cross(r, f);
      return { eye, r, u, f };
    }

    draw() {
      const c = this.canvas;
      const dpr = Math.min(window.devicePixelRatio || 1, 2);
      const w = c.clientWidth || c.width, h = c.clientHeight || c.height;
      if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
        c.width = Math.round(w * dpr); c.height = Math.round(h * dpr);
      }
      const g = c.getContext("2d");
      g.setTransform(dpr, 0, 0, dpr, 0, 0);
      g.fillStyle = "#0f1114";
      g.fillRect(0, 0, w, h);
      const { eye, r, u, f } = this._basis();
      const F = (h / 2) / Math.tan(0.4);
      const near = 1e-3;
      const view = (p) => { const d = sub(p, eye); return [dot(d, r), dot(d, u), dot(d, f)]; };
      const screen = (q) => [w / 2 + (F * q[0]) / q[2], h / 2 - (F * q[1]) / q[2]];
      const line = (p, q) => {  // a 3D segment, clipped at the near plane
        let a = view(p), b = view(q);
        if (a[2] < near && b[2] < near) return;
        if (a[2] < near) { const t = (near - a[2]) / (b[2] - a[2]); a = add(a, mul(sub(b, a), t)); }
        if (b[2] < near) { const t = (near - b[2]) / (a[2] - b[2]); b = add(b, mul(sub(a, b), t)); }
        const A = screen(a), B = screen(b);
        g.moveTo(A[0], A[1]); g.lineTo(B[0], B[1]);
      };
      // the floor grid, in the plane through the target perpendicular to "up"
      this._grid(g, line);
      // the cameras first: the hand they look at is drawn over their frusta
      for (const cam of this.cams) this._camera(g, cam, line, view, screen);
      this._mesh(g, view, screen, near);
      this._skeleton(g, view, screen, near);
      g.fillStyle = "rgba(230,230,230,0.55)";
      g.font = "12px system-ui, sans-serif";
      g.fillText("drag: turn · wheel: zoom · double-click: reset", 10, h - 10);
    }

    _grid(g, line) {
      const up = this.up;
      const [a, b] = this._plane();
      let radius = 0.2;
      for (const c of this.cams) radius = Math.max(radius, Math.hypot(...sub(c.center, this.rigTarget)));
      const below = this._lowest();
      const o = add(this.rigTarget, mul(up, below));
      const step = Math.pow(10, Math.floor(Math.log10(radius / 2)));
      const n = Math.ceil(radius / step);
      g.strokeStyle = "rgba(255,255,255,0.07)";
      g.lineWidth = 1;
      g.beginPath();
      for (let i = -n; i <= n; i++) {
        line(add(o, add(mul(a, i * step), mul(b, -n * step))), add(o, add(mul(a, i * step), mul(b, n * step))));
        line(add(o, add(mul(b, i * step), mul(a, -n * step))), add(o, add(mul(b, i * step), mul(a, n * step))));
      }
      g.stroke();
    }

    _lowest() {  // the floor: below the hand and the lowest camera, along "up"
      let lo = 0;
      for (const c of this.cams) lo = Math.min(lo, dot(sub(c.center, this.rigTarget), this.up));
      if (this.verts) for (const v of this.verts) lo = Math.min(lo, dot(sub(v, this.rigTarget), this.up));
      return lo - 0.05;
    }

    _camera(g, cam, line, view, screen) {
      const [W, H] = cam.size;
      const K = cam.K;
      const dist = Math.hypot(...sub(cam.center, this.target));
      const depth = Math.max(0.04, 0.18 * dist);
      const ray = (px, py) => {  // a point on pixel (px, py)'s ray, ``depth`` in front of the camera
        const x = (px - K[0][2]) / K[0][0], y = (py - K[1][2]) / K[1][1];
        return add(cam.center, mul(add(add(mul(cam.right, x), mul(cam.down, y)), cam.axis), depth));
      };
      const corners = [ray(0, 0), ray(W, 0), ray(W, H), ray(0, H)];
      const ignored = this.ignored.has(cam.name), hot = this.hot === cam.name;
      g.strokeStyle = hot ? "#ffd43b" : ignored ? "rgba(220,70,70,0.9)" : "rgba(120,180,255,0.85)";
      g.lineWidth = hot ? 2.5 : 1.3;
      g.setLineDash(ignored ? [5, 4] : []);
      g.beginPath();
      for (let i = 0; i < 4; i++) { line(cam.center, corners[i]); line(corners[i], corners[(i + 1) % 4]); }
      // a small triangle on the image's top edge says which way is up
      const topMid = mul(add(corners[0], corners[1]), 0.5);
      const tip = add(topMid, mul(cam.down, -0.25 * depth * (H / K[1][1])));
      line(corners[0], tip); line(tip, corners[1]);
      g.stroke();
      g.setLineDash([]);
      const q = view(cam.center);
      if (q[2] > 1e-3) {
        const s = screen(q);
        g.fillStyle = g.strokeStyle;
        g.font = `${hot ? "bold " : ""}12px system-ui, sans-serif`;
        g.fillText(cam.name + (ignored ? " (ignored)" : ""), s[0] + 5, s[1] - 5);
      }
    }

    _mesh(g, view, screen, near) {
      if (!this.verts || !this.faces) return;
      const V = this.verts.map(view);
      const P = V.map((q) => (q[2] > near ? screen(q) : null));
      const order = [];
      for (let i = 0; i < this.faces.length; i++) {
        const [a, b, c] = this.faces[i];
        if (!P[a] || !P[b] || !P[c]) continue;
        order.push([V[a][2] + V[b][2] + V[c][2], i]);
      }
      order.sort((x, y) => y[0] - x[0]);  // far first
      for (const [, i] of order) {
        const [a, b, c] = this.faces[i];
        const n = norm(cross(sub(V[b], V[a]), sub(V[c], V[a])));
        const centre = norm(add(add(V[a], V[b]), V[c]));
        const lambert = Math.abs(dot(n, centre));  // light from the eye, both sides lit
        const s = 0.28 + 0.72 * lambert;
        const col = `rgb(${Math.round(235 * s)},${Math.round(183 * s)},${Math.round(150 * s)})`;
        g.fillStyle = col;
        g.strokeStyle = col;
        g.lineWidth = 0.6;
        g.beginPath();
        g.moveTo(P[a][0], P[a][1]); g.lineTo(P[b][0], P[b][1]); g.lineTo(P[c][0], P[c][1]);
        g.closePath();
        g.fill();
        g.stroke();
      }
    }

    _skeleton(g, view, screen, near) {
      if (!this.joints) return;
      const Q = this.joints.map(view);
      const P = Q.map((q) => (q[2] > near ? screen(q) : null));
      const colour = (j) => (j === 0 ? "#fff" : FINGER_RGB[Math.floor((j - 1) / 4)]);
      g.lineWidth = 2;
      g.globalAlpha = 0.9;
      for (const [a, b] of this.bones) {
        if (!P[a] || !P[b]) continue;
        g.strokeStyle = colour(b);
        g.beginPath(); g.moveTo(P[a][0], P[a][1]); g.lineTo(P[b][0], P[b][1]); g.stroke();
      }
      for (let j = 0; j < P.length; j++) {
        if (!P[j]) continue;
        g.fillStyle = colour(j);
        g.beginPath(); g.arc(P[j][0], P[j][1], 2.5, 0, 2 * Math.PI); g.fill();
      }
      g.globalAlpha = 1;
    }
  }

  window.View3D = View3D;
})();
