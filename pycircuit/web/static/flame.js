// A flame graph (icicle: callers on top) of collapsed stacks, in plain SVG.
// Input lines: "frame;frame;...;frame COUNT". Click a frame to zoom in, the
// top bar to zoom out. Names are set with textContent: never parsed as HTML.
'use strict';
(function () {
  const SVG = 'http://www.w3.org/2000/svg';
  const ROW = 17;

  function parse(text) {
    const root = { name: 'all', value: 0, children: new Map() };
    for (const line of text.split('\n')) {
      const cut = line.lastIndexOf(' ');
      if (cut <= 0) continue;
      const n = Number(line.slice(cut + 1));
      if (!Number.isFinite(n) || n <= 0) continue;
      root.value += n;
      let node = root;
      for (const frame of line.slice(0, cut).split(';')) {
        let kid = node.children.get(frame);
        if (!kid) { kid = { name: frame, value: 0, children: new Map(), parent: node }; node.children.set(frame, kid); }
        kid.value += n;
        node = kid;
      }
    }
    return root;
  }

  function depth(node) {
    let d = 0;
    for (const kid of node.children.values()) d = Math.max(d, depth(kid));
    return d + 1;
  }

  function color(name) {
    let h = 0;
    for (let i = 0; i < name.length; i++) h = (h * 31 + name.charCodeAt(i)) >>> 0;
    return `hsl(${10 + (h % 45)}, ${60 + (h >> 8) % 25}%, ${58 + (h >> 16) % 14}%)`;
  }

  function draw(box, root, focus) {
    // Drawn at the box's own pixel width, so labels keep their font size.
    const WIDTH = Math.max(300, Math.floor(box.getBoundingClientRect().width) || 1000);
    const total = focus.value;
    const rows = depth(focus);
    const svg = document.createElementNS(SVG, 'svg');
    svg.setAttribute('viewBox', `0 0 ${WIDTH} ${rows * ROW}`);
    svg.setAttribute('role', 'img');
    const bar = (node, x, y, w) => {
      const g = document.createElementNS(SVG, 'g');
      g.setAttribute('class', 'frame');
      const r = document.createElementNS(SVG, 'rect');
      r.setAttribute('x', x); r.setAttribute('y', y); r.setAttribute('width', Math.max(w, 0.5));
      r.setAttribute('height', ROW - 1); r.setAttribute('fill', color(node.name));
      const title = document.createElementNS(SVG, 'title');
      title.textContent = `${node.name} — ${node.value} samples (${(100 * node.value / root.value).toFixed(1)} %)`;
      r.appendChild(title);
      g.appendChild(r);
      const chars = Math.floor((w - 6) / 6.6);
      if (chars >= 3) {
        const t = document.createElementNS(SVG, 'text');
        t.setAttribute('x', x + 3); t.setAttribute('y', y + ROW - 5);
        t.textContent = node.name.length > chars ? node.name.slice(0, chars - 1) + '…' : node.name;
        g.appendChild(t);
      }
      g.addEventListener('click', () => draw(box, root, node === focus && node.parent ? node.parent : node));
      svg.appendChild(g);
    };
    const walk = (node, x, y) => {
      const w = WIDTH * node.value / total;
      if (w < 0.3) return;
      bar(node, x, y, w);
      let kx = x;
      for (const kid of [...node.children.values()].sort((a, b) => a.name < b.name ? -1 : 1)) {
        walk(kid, kx, y + ROW);
        kx += WIDTH * kid.value / total;
      }
    };
    walk(focus, 0, 0);
    box.replaceChildren(svg);
  }

  // Renders into box; returns the number of samples (0: nothing to draw).
  window.renderFlame = function (box, text) {
    const root = parse(text);
    if (!root.value) { box.textContent = 'no samples'; return 0; }
    draw(box, root, root);
    return root.value;
  };
})();
