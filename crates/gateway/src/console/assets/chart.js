// A bar chart as SVG elements built one by one (no library, no HTML strings): bars with a
// <title> tooltip each, the largest value and the first and last bucket labelled.

import { h, utc } from './dom.js';

export function bars(title, points, { format = String, bad = false } = {}) {
  const W = 480, H = 160, left = 8, bottom = 18, top = 16;
  const max = points.reduce((m, p) => (p.value > m ? p.value : m), 0);
  const bw = points.length ? (W - left * 2) / points.length : 0;
  const scale = (v) => (max > 0 ? (v / max) * (H - bottom - top) : 0);
  const svg = h(
    'svg',
    { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title },
    h('line', { class: 'axis', x1: left, y1: H - bottom, x2: W - left, y2: H - bottom }),
    points.map((p, i) => {
      const bh = scale(p.value);
      return h(
        'rect',
        { class: bad ? 'bar bad' : 'bar', x: left + i * bw + 1, y: H - bottom - bh, width: Math.max(bw - 2, 1), height: bh },
        h('title', { text: `${utc(p.at)}: ${format(p.value)}` }),
      );
    }),
    h('text', { x: left, y: 11, text: 'max ' + format(max) }),
    points.length ? h('text', { x: left, y: H - 4, text: utc(points[0].at) }) : null,
    points.length ? h('text', { x: W - left, y: H - 4, 'text-anchor': 'end', text: utc(points[points.length - 1].at) }) : null,
  );
  return h('div', { class: 'chart' }, h('h3', { text: title }), svg);
}
