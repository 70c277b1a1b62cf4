#!/usr/bin/env node
// Real-browser viewer test: opens an OME-Zarr image in vizarr (the Galaxy build,
// @galaxyproject/vizarr) in headless Chromium, served from 127.0.0.1, takes
// screenshots at fit, zoomed in and zoomed out, and checks that
//   (a) the image rendered: the WebGL canvas has lit, non-flat pixels,
//   (b) at least two different pyramid levels had chunks requested over HTTP,
//   (c) the page logged no errors (console errors, page errors, failed or
//       unexpected requests; 404s for missing chunks and for Zarr metadata
//       probes are expected and allowed).
//
// Usage: node view.mjs IMAGE_DIR OUT_DIR
// Env:   CHROMIUM         browser binary (default: first of /usr/bin/chromium,
//                         /usr/bin/chromium-browser, /usr/lib/chromium/chromium,
//                         /usr/bin/google-chrome that exists)
//        VIEWER_TIMEOUT_S overall time limit in seconds (default 120)
//        VIEWER_SIZE      viewport WxH (default 1024x768)
//        VIEWER_VERBOSE=1 log progress to stderr
// Exit:  0 pass, 1 fail (a check failed), 2 setup problem.
// Prints one line of JSON on stdout with what was measured.

import http from 'node:http';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);

// ---- thresholds -----------------------------------------------------------
const LIT_LEVEL = 10;          // a canvas pixel is "lit" if max(R,G,B) > this (4% of full scale)
const MIN_LIT_FRACTION = 0.005; // of the canvas area, at every view
const MIN_LIT_OF_DRAWN = 0.05; // of the area the image covers (opaque canvas pixels)
const MIN_DISTINCT = 16;       // distinct RGB values among the canvas pixels
const MIN_STDDEV = 2.0;        // std-dev of luminance over the canvas
const MIN_LEVELS = 2;          // distinct pyramid levels with chunk requests
const QUIET_MS = 1000;         // no image request in flight or started for this long after an action => settled

const verbose = process.env.VIEWER_VERBOSE === '1';
const log = (...a) => { if (verbose) console.error('[viewer]', ...a); };
const t0 = Date.now();
const elapsed = () => +((Date.now() - t0) / 1000).toFixed(2);

function setupFail(msg) {
  console.log(JSON.stringify({ pass: false, setup_error: msg, seconds: elapsed() }));
  console.error(`viewer test: SETUP ERROR: ${msg}`);
  process.exit(2);
}

// ---- arguments ------------------------------------------------------------
const [imageArg, outArg] = process.argv.slice(2);
if (!imageArg || !outArg) setupFail('usage: node view.mjs IMAGE_DIR OUT_DIR');
const IMAGE_DIR = path.resolve(imageArg);
const OUT_DIR = path.resolve(outArg);
const TIMEOUT_S = Number(process.env.VIEWER_TIMEOUT_S || 120);
const [VW, VH] = (process.env.VIEWER_SIZE || '1024x768').split('x').map(Number);

// Pyramid levels from the image's own metadata: path, shape and chunk grid
// (outer grid, i.e. shards, for sharded Zarr v3), to tell a missing chunk
// (a 404 the viewer expects: fill value) from a request outside the grid.
let levels, zarrFormat;
function readJson(f) { return JSON.parse(fs.readFileSync(f, 'utf8')); }
try {
  if (fs.existsSync(path.join(IMAGE_DIR, 'zarr.json'))) {
    zarrFormat = 3;
    const z = readJson(path.join(IMAGE_DIR, 'zarr.json'));
    const ms = z.attributes?.ome?.multiscales ?? z.attributes?.multiscales;
    levels = ms[0].datasets.map((d) => {
      const a = readJson(path.join(IMAGE_DIR, d.path, 'zarr.json'));
      const enc = a.chunk_key_encoding ?? { name: 'default' };
      const sep = enc.configuration?.separator ?? (enc.name === 'v2' ? '.' : '/');
      return { path: d.path, shape: a.shape, chunks: a.chunk_grid.configuration.chunk_shape, sep, prefix: enc.name === 'v2' ? '' : 'c' };
    });
  } else {
    zarrFormat = 2;
    const z = readJson(path.join(IMAGE_DIR, '.zattrs'));
    levels = z.multiscales[0].datasets.map((d) => {
      const a = readJson(path.join(IMAGE_DIR, d.path, '.zarray'));
      return { path: d.path, shape: a.shape, chunks: a.chunks, sep: a.dimension_separator ?? '.', prefix: '' };
    });
  }
} catch (e) {
  setupFail(`${IMAGE_DIR} is not an OME-Zarr multiscale image this test can read (${e.message})`);
}
const levelPaths = levels.map((l) => l.path);

// The viewer: the built static site from the npm package.
let STATIC_DIR;
try {
  STATIC_DIR = path.join(path.dirname(require.resolve('@galaxyproject/vizarr/package.json')), 'static');
} catch {
  setupFail('node_modules missing: run `npm ci` in tests/viewer (or use run.sh)');
}
const INDEX_JS_RAW = fs.readFileSync(path.join(STATIC_DIR, 'index.js'), 'utf8');

// The build imports pdf.js's JPEG-2000 decoder from a CDN at module load time.
// No CDN here: point that import at a local stub module (only the jpeg2k codec
// uses it, which OME-Zarr pyramids from ome-pyramid never do).
const CDN_JPX = /https:\/\/cdn\.jsdelivr\.net\/gh\/mozilla\/pdf\.js@[0-9a-f]+\/src\/core\/jpx\.js/g;
if (!CDN_JPX.test(INDEX_JS_RAW)) setupFail('vizarr index.js no longer imports jpx.js from the CDN: update the stub');
const INDEX_JS = INDEX_JS_RAW.replace(CDN_JPX, '/__stub__/jpx.js');
const JPX_STUB = 'export class JpxImage { parse() { throw new Error("jpeg2k codec is stubbed out in the ome-pyramid viewer test"); } }\n';
// Vite's preload helper adds <link rel=modulepreload> for code-split chunk
// files that the published package does not ship (their code is inlined in
// index.js). Answer them with empty modules instead of 404s.
const PRELOAD_NAMES = new Set(
  [...(INDEX_JS_RAW.match(/\.f=\[((?:"\.\/[\w.-]+\.js",?)+)\]/)?.[1] ?? '').matchAll(/"\.\/([\w.-]+\.js)"/g)].map((m) => m[1]),
);

const DATASET_ID = 'ome-pyramid-viewer-test';
const IMAGE_NAME = path.basename(IMAGE_DIR);

// ---- HTTP server ----------------------------------------------------------
const requests = [];        // {path, status, ms}
const unexpected = [];      // requests the test did not expect
let inFlight = 0;
let lastActivity = Date.now();
let origin = '';
let phase = 'load';         // which view the requests belong to

const MIME = { '.js': 'text/javascript', '.html': 'text/html', '.svg': 'image/svg+xml', '.json': 'application/json' };
const META_FILES = new Set(['.zarray', '.zattrs', '.zgroup', 'zarr.json', '.zmetadata']);

function classifyImagePath(rel) {
  // rel: path inside the image, e.g. "0/1/2/3" or ".zattrs" or "1/zarr.json"
  const parts = rel.split('/');
  const base = parts[parts.length - 1];
  if (META_FILES.has(base)) return { kind: 'meta' };
  for (const l of levels) {
    if (!rel.startsWith(l.path + '/')) continue;
    let key = rel.slice(l.path.length + 1);
    if (l.prefix) {
      if (key !== l.prefix && !key.startsWith(l.prefix + l.sep)) return { kind: 'other' };
      key = key.slice(l.prefix.length + 1);
    }
    const idx = key === '' ? [] : key.split(l.sep).map(Number);
    const inGrid = idx.length === l.shape.length &&
      idx.every((v, i) => Number.isInteger(v) && v >= 0 && v < Math.ceil(l.shape[i] / l.chunks[i]));
    return { kind: inGrid ? 'chunk' : 'outside', level: l.path };
  }
  return { kind: 'other' };
}

function send(res, status, body, type) {
  res.writeHead(status, {
    'Content-Type': type || 'application/octet-stream',
    'Cache-Control': 'no-store',
    'Access-Control-Allow-Origin': '*',
  });
  res.end(body);
}

const server = http.createServer(async (req, res) => {
  let p;
  try { p = decodeURIComponent(new URL(req.url, 'http://x').pathname); } catch { p = req.url; }
  const rec = { path: p, status: 0, t: Date.now(), phase, method: req.method };
  requests.push(rec);
  const isImage = p.startsWith('/image/');
  if (isImage) { inFlight++; lastActivity = Date.now(); }
  const done = (status, body, type) => {
    rec.status = status;
    if (isImage) { inFlight--; lastActivity = Date.now(); }
    send(res, status, body, type);
  };
  try {
    if (req.method !== 'GET' && req.method !== 'HEAD') return done(405, '');
    if (p === '/' || p === '/index.html') {
      // What Galaxy's visualization framework injects into the page: the
      // dataset id and the API root, in #app's data-incoming attribute.
      const incoming = JSON.stringify({ root: '/', visualization_config: { dataset_id: DATASET_ID } });
      const html = fs.readFileSync(path.join(STATIC_DIR, 'index.html'), 'utf8')
        .replace('<div id="app"></div>', `<div id="app" data-incoming='${incoming}'></div>`);
      return done(200, html, MIME['.html']);
    }
    if (p === '/index.js') return done(200, INDEX_JS, MIME['.js']);
    if (p === '/logo.svg') return done(200, fs.readFileSync(path.join(STATIC_DIR, 'logo.svg')), MIME['.svg']);
    if (p === '/__stub__/jpx.js') return done(200, JPX_STUB, MIME['.js']);
    if (p === '/favicon.ico') return done(204, '');
    if (PRELOAD_NAMES.has(p.slice(1))) return done(200, 'export {};\n', MIME['.js']);
    if (p === `/api/datasets/${DATASET_ID}`) {
      // Galaxy's dataset API, one record. A "deferred" dataset's data lives at
      // its source URI, which vizarr opens directly.
      return done(200, JSON.stringify({
        id: DATASET_ID,
        name: IMAGE_NAME,
        state: 'deferred',
        extension: 'ome_zarr',
        sources: [{ source_uri: `${origin}/image` }],
      }), MIME['.json']);
    }
    if (isImage) {
      const rel = p.slice('/image/'.length);
      const file = path.resolve(IMAGE_DIR, rel);
      if (file !== IMAGE_DIR && !file.startsWith(IMAGE_DIR + path.sep)) return done(403, '');
      let st;
      try {
        st = await fsp.stat(file);
        if (!st.isFile()) throw new Error('not a file');
      } catch {
        return done(404, '');
      }
      // Range requests: sharded Zarr v3 is read as the shard index (a suffix
      // range) and then each inner chunk's byte range.
      const range = req.headers.range;
      if (range) {
        const m = /^bytes=(\d*)-(\d*)$/.exec(range.trim());
        let start, end;
        if (m && m[1] === '' && m[2] !== '') { start = Math.max(0, st.size - Number(m[2])); end = st.size - 1; }
        else if (m && m[1] !== '') { start = Number(m[1]); end = m[2] === '' ? st.size - 1 : Math.min(Number(m[2]), st.size - 1); }
        if (start === undefined || start > end || start >= st.size) {
          rec.status = 416;
          if (isImage) { inFlight--; lastActivity = Date.now(); }
          res.writeHead(416, { 'Content-Range': `bytes */${st.size}`, 'Access-Control-Allow-Origin': '*' });
          return res.end();
        }
        const fh = await fsp.open(file, 'r');
        const buf = Buffer.alloc(end - start + 1);
        try { await fh.read(buf, 0, buf.length, start); } finally { await fh.close(); }
        rec.status = 206;
        rec.range = `${start}-${end}`;
        if (isImage) { inFlight--; lastActivity = Date.now(); }
        res.writeHead(206, {
          'Content-Type': 'application/octet-stream',
          'Content-Range': `bytes ${start}-${end}/${st.size}`,
          'Accept-Ranges': 'bytes',
          'Cache-Control': 'no-store',
          'Access-Control-Allow-Origin': '*',
        });
        return res.end(req.method === 'HEAD' ? '' : buf);
      }
      if (req.method === 'HEAD') {
        // zarrita asks HEAD for the size of a shard before reading its index.
        rec.status = 200;
        inFlight--; lastActivity = Date.now();
        res.writeHead(200, { 'Content-Length': st.size, 'Accept-Ranges': 'bytes', 'Cache-Control': 'no-store', 'Access-Control-Allow-Origin': '*' });
        return res.end();
      }
      return done(200, await fsp.readFile(file), MIME[path.extname(file)]);
    }
    unexpected.push(p);
    return done(404, '');
  } catch (e) {
    unexpected.push(`${p} (${e.message})`);
    return done(500, '');
  }
});

await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
origin = `http://127.0.0.1:${server.address().port}`;
log('serving on', origin, 'image', IMAGE_DIR, 'levels', levelPaths);

// ---- browser --------------------------------------------------------------
const candidates = process.env.CHROMIUM
  ? [process.env.CHROMIUM]
  : ['/usr/bin/chromium', '/usr/bin/chromium-browser', '/usr/lib/chromium/chromium', '/usr/bin/google-chrome'];
const executablePath = candidates.find((c) => fs.existsSync(c));
if (!executablePath) {
  server.close();
  setupFail(`no Chromium found (tried ${candidates.join(', ')}); apt-get install -y chromium, or set CHROMIUM`);
}

let puppeteer;
try {
  puppeteer = (await import('puppeteer-core')).default;
} catch (e) {
  server.close();
  setupFail(`puppeteer-core not installed (${e.message}); run npm ci in tests/viewer`);
}
const { PNG } = require('pngjs');

let browser;
const watchdog = setTimeout(() => {
  console.log(JSON.stringify({ pass: false, failures: [`timed out after ${TIMEOUT_S}s`], seconds: elapsed() }));
  console.error(`viewer test: FAIL: timed out after ${TIMEOUT_S}s`);
  try { browser?.process()?.kill('SIGKILL'); } catch {}
  process.exit(1);
}, TIMEOUT_S * 1000);

try {
  browser = await puppeteer.launch({
    executablePath,
    headless: true,
    args: [
      '--no-sandbox',                 // we may run as root (CI, containers)
      '--disable-dev-shm-usage',
      // WebGL2 without a GPU: ANGLE on SwiftShader (software Vulkan). Debian's
      // Chromium 156 headless picks it anyway; these keep it so where Chromium
      // would refuse the software fallback for WebGL.
      '--use-angle=swiftshader',
      '--enable-unsafe-swiftshader',
      '--ignore-gpu-blocklist',
      // Offline: anything not on 127.0.0.1 fails fast instead of hanging.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1',
      '--no-first-run',
      '--no-default-browser-check',
      `--window-size=${VW},${VH}`,
    ],
    defaultViewport: { width: VW, height: VH, deviceScaleFactor: 1 },
    timeout: 30000,
  });
} catch (e) {
  server.close();
  clearTimeout(watchdog);
  setupFail(`Chromium (${executablePath}) did not start: ${e.message.split('\n')[0]}`);
}

const errors = [];          // console errors, page errors, failed requests
const allowed404 = [];      // expected 404s (missing chunks, metadata probes)
const consoleLog = [];

const page = await browser.newPage();
page.on('console', (msg) => {
  const text = msg.text();
  consoleLog.push(`${msg.type()}: ${text}`);
  if (msg.type() !== 'error') return;
  // Chromium reports every HTTP error response as a console error. Those for
  // image paths are judged from the response itself (below), not twice here.
  const loc = msg.location()?.url || '';
  if (/^Failed to load resource: the server responded with a status of 404/.test(text) && loc.startsWith(`${origin}/image/`)) return;
  errors.push(`console: ${text}${loc ? ` (${loc})` : ''}`);
});
page.on('pageerror', (err) => errors.push(`pageerror: ${String(err.message || err).split('\n')[0]}`));
const aborted = [];         // image requests the viewer cancelled itself
page.on('requestfailed', (req) => {
  const u = req.url();
  const why = req.failure()?.errorText ?? '';
  // viv cancels tile loads that went out of view (AbortSignal), and zarrita
  // drops the body of a 404 probe: both show as net::ERR_ABORTED, not errors.
  if (why === 'net::ERR_ABORTED' && u.startsWith(`${origin}/image/`)) {
    const k = classifyImagePath(decodeURIComponent(new URL(u).pathname).slice('/image/'.length)).kind;
    if (k === 'chunk' || k === 'meta') { aborted.push(u.slice(origin.length)); return; }
  }
  errors.push(`requestfailed: ${u} ${why}`);
});
page.on('response', (resp) => {
  const u = resp.url();
  const s = resp.status();
  if (s < 400) return;
  if (u.startsWith(`${origin}/image/`)) {
    const rel = decodeURIComponent(new URL(u).pathname).slice('/image/'.length);
    const c = classifyImagePath(rel);
    if (s === 404 && (c.kind === 'chunk' || c.kind === 'meta')) { allowed404.push(rel); return; }
  }
  errors.push(`http ${s}: ${u}`);
});

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Settled = no image request in flight and none started for QUIET_MS since
// the last action, then the canvas unchanged between two frames (tiles that
// arrived are decoded, uploaded and drawn).
async function settle(maxMs = 60000) {
  const end = Date.now() + maxMs;
  lastActivity = Math.max(lastActivity, Date.now());   // the action itself counts
  while (Date.now() < end) {
    if (inFlight === 0 && Date.now() - lastActivity >= QUIET_MS) break;
    await sleep(100);
  }
  let prev = null;
  for (let i = 0; i < 20 && Date.now() < end; i++) {
    const cur = await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(() => {
      const cs = [...document.querySelectorAll('canvas')];
      const c = cs.sort((a, b) => b.width * b.height - a.width * a.height)[0];
      r(c ? c.toDataURL('image/png') : '');
    }))));
    if (cur === prev && inFlight === 0) return;
    prev = cur;
    await sleep(250);
  }
}

// Pixels of the WebGL canvas only (vizarr's DOM controls are not in it); the
// deck.gl canvas keeps its drawing buffer, so toDataURL sees the last frame.
async function canvasStats(name) {
  const dataUrl = await page.evaluate(() => {
    const cs = [...document.querySelectorAll('canvas')];
    const c = cs.sort((a, b) => b.width * b.height - a.width * a.height)[0];
    return c ? c.toDataURL('image/png') : null;
  });
  if (!dataUrl) return { name, error: 'no canvas on the page' };
  const buf = Buffer.from(dataUrl.split(',')[1], 'base64');
  await fsp.writeFile(path.join(OUT_DIR, `${name}-canvas.png`), buf);
  const png = PNG.sync.read(buf);
  const { width, height, data } = png;
  const n = width * height;
  let lit = 0, drawn = 0, sum = 0, sum2 = 0;
  const distinct = new Set();
  for (let i = 0; i < n; i++) {
    const r = data[4 * i], g = data[4 * i + 1], b = data[4 * i + 2];
    if (Math.max(r, g, b) > LIT_LEVEL) lit++;
    if (data[4 * i + 3] > 0) drawn++;   // outside the image the canvas is transparent
    const y = 0.299 * r + 0.587 * g + 0.114 * b;
    sum += y; sum2 += y * y;
    if (distinct.size < 100000) distinct.add((r << 16) | (g << 8) | b);
  }
  const mean = sum / n;
  const std = Math.sqrt(Math.max(0, sum2 / n - mean * mean));
  return {
    name, width, height,
    drawn_fraction: +(drawn / n).toFixed(4),
    lit_fraction: +(lit / n).toFixed(4),
    lit_of_drawn: drawn ? +(lit / drawn).toFixed(4) : 0,
    distinct: distinct.size,
    mean: +mean.toFixed(2),
    stddev: +std.toFixed(2),
    _pixels: data,
  };
}

function meanAbsDiff(a, b) {
  if (!a || !b || a.length !== b.length) return null;
  let s = 0;
  for (let i = 0; i < a.length; i += 4) s += Math.abs(a[i] - b[i]) + Math.abs(a[i + 1] - b[i + 1]) + Math.abs(a[i + 2] - b[i + 2]);
  return +(s / (a.length / 4) / 3).toFixed(2);
}

const shots = [];
const failures = [];
const timings = {};
let canvasBox;

async function shoot(name) {
  await settle();
  await page.screenshot({ path: path.join(OUT_DIR, `${name}.png`) });
  const st = await canvasStats(name);
  st.at_s = elapsed();
  shots.push(st);
  log(name, JSON.stringify({ ...st, _pixels: undefined }));
}

async function wheel(deltaY, times) {
  const cx = canvasBox.x + canvasBox.width / 2;
  const cy = canvasBox.y + canvasBox.height / 2;
  await page.mouse.move(cx, cy);
  for (let i = 0; i < times; i++) {
    await page.mouse.wheel({ deltaY });
    await sleep(150);
  }
}

try {
  await fsp.mkdir(OUT_DIR, { recursive: true });
  await page.goto(`${origin}/`, { waitUntil: 'load', timeout: 30000 });
  // Wait for deck.gl's canvas and the first chunk request of the image.
  await page.waitForSelector('canvas', { timeout: 30000 });
  const firstChunkBy = Date.now() + 30000;
  while (!requests.some((r) => r.path.startsWith('/image/') && classifyImagePath(r.path.slice(7)).kind === 'chunk')) {
    if (Date.now() > firstChunkBy) throw new Error('vizarr requested no chunk of the image within 30 s');
    if (errors.some((e) => e.startsWith('pageerror'))) break;
    await sleep(100);
  }
  timings.first_chunk_s = elapsed();
  canvasBox = await page.evaluate(() => {
    const cs = [...document.querySelectorAll('canvas')];
    const c = cs.sort((a, b) => b.width * b.height - a.width * a.height)[0];
    const r = c.getBoundingClientRect();
    return { x: r.x, y: r.y, width: r.width, height: r.height };
  });

  phase = 'fit';
  await shoot('1-fit');
  // deck.gl zooms by 2/(1+exp(-|delta|/100)) per wheel event: 1.46x (about
  // half a level) for a delta of 100. In ~2 levels, then out ~2 below fit.
  phase = 'zoomed-in';
  await wheel(-100, 4);
  await shoot('2-zoomed-in');
  phase = 'zoomed-out';
  await wheel(100, 8);
  await shoot('3-zoomed-out');
} catch (e) {
  failures.push(`browser run: ${e.message.split('\n')[0]}`);
}

try { await browser.close(); } catch {}
server.close();
clearTimeout(watchdog);

// ---- verdict --------------------------------------------------------------
const levelsRequested = {};
const levelsByPhase = {};
for (const r of requests) {
  if (!r.path.startsWith('/image/')) continue;
  const c = classifyImagePath(r.path.slice(7));
  if (c.kind !== 'chunk') continue;
  levelsRequested[c.level] = (levelsRequested[c.level] || 0) + 1;
  const ph = (levelsByPhase[r.phase] ??= {});
  ph[c.level] = (ph[c.level] || 0) + 1;
}
const levelCount = Object.keys(levelsRequested).length;
const outsideGrid = [...new Set(requests.filter((r) => r.path.startsWith('/image/') && classifyImagePath(r.path.slice(7)).kind === 'outside').map((r) => r.path.slice(7)))];
if (outsideGrid.length) failures.push(`the viewer requested ${outsideGrid.length} chunk key(s) outside the level's chunk grid: ${outsideGrid.slice(0, 5).join(', ')}`);

for (const s of shots) {
  if (s.error) { failures.push(`${s.name}: ${s.error}`); continue; }
  if (s.drawn_fraction === 0) failures.push(`${s.name}: nothing drawn on the canvas (no tile rendered)`);
  else if (s.lit_fraction < MIN_LIT_FRACTION || s.lit_of_drawn < MIN_LIT_OF_DRAWN) failures.push(`${s.name}: only ${(100 * s.lit_fraction).toFixed(2)}% of the canvas and ${(100 * s.lit_of_drawn).toFixed(2)}% of the drawn image are lit (need ${100 * MIN_LIT_FRACTION}% and ${100 * MIN_LIT_OF_DRAWN}%): blank/black image`);
  if (s.distinct < MIN_DISTINCT || s.stddev < MIN_STDDEV) failures.push(`${s.name}: flat image (${s.distinct} distinct colours, luminance std-dev ${s.stddev}; need ≥${MIN_DISTINCT} and ≥${MIN_STDDEV})`);
}
const byName = Object.fromEntries(shots.map((s) => [s.name, s]));
const zoomDiff = meanAbsDiff(byName['1-fit']?._pixels, byName['2-zoomed-in']?._pixels);
if (shots.length === 3 && zoomDiff !== null && zoomDiff < 1) failures.push(`zooming in did not change the view (mean abs diff ${zoomDiff})`);
if (levelCount < MIN_LEVELS) failures.push(`chunks of only ${levelCount} pyramid level(s) requested (${JSON.stringify(levelsRequested)}); need ≥${MIN_LEVELS}`);
if (errors.length) failures.push(`${errors.length} page error(s): ${errors.slice(0, 5).join(' | ')}`);
if (unexpected.length) failures.push(`unexpected requests: ${[...new Set(unexpected)].slice(0, 5).join(', ')}`);

const summary = {
  pass: failures.length === 0,
  image: IMAGE_DIR,
  zarr_format: zarrFormat,
  levels: levelPaths,
  levels_requested: levelsRequested,
  levels_by_view: levelsByPhase,
  shots: shots.map(({ _pixels, ...s }) => s),
  zoom_in_mean_abs_diff: zoomDiff,
  requests: requests.length,
  outside_grid: outsideGrid,
  expected_404: allowed404.length,
  aborted_by_viewer: aborted.length,
  errors,
  failures,
  timings: { ...timings, total_s: elapsed() },
  browser: executablePath,
  out_dir: OUT_DIR,
};
await fsp.writeFile(path.join(OUT_DIR, 'summary.json'), JSON.stringify(summary, null, 2));
await fsp.writeFile(path.join(OUT_DIR, 'console.log'), consoleLog.join('\n') + '\n');
await fsp.writeFile(path.join(OUT_DIR, 'requests.log'), requests.map((r) => `${r.status} ${r.method} ${r.phase} ${r.path}${r.range ? ` bytes ${r.range}` : ''}`).join('\n') + '\n');
console.log(JSON.stringify(summary));
if (failures.length) {
  console.error(`viewer test: FAIL (${IMAGE_DIR}):\n  - ${failures.join('\n  - ')}`);
  process.exit(1);
}
console.error(`viewer test: PASS (${IMAGE_DIR}) in ${elapsed()} s: levels ${Object.keys(levelsRequested).join(',')}, lit ${shots.map((s) => s.lit_fraction).join('/')}`);
process.exit(0);
