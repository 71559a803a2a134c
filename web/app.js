// The fleet page (read-only): one EventSource on /v1/events, a snapshot then patches, rendered
// with preact + htm (both served by the daemon from its own package: no CDN, no build step).
// This script sends no request but GETs: the stream and its own files.
import { h, render } from './vendor/preact.js';
import htm from './vendor/htm.js';

const html = htm.bind(h);

/** @type {{ view: any, conn: string, error?: string }} */
const state = { view: null, conn: 'connecting' };
const stats = { renders: 0, lastMs: 0, maxMs: 0, events: 0, lastEventAt: 0 };
// read by the browser test: how long renders take, and when the last event arrived
window.__vmplace = stats;

let scheduled = false;
function schedule() {
  if (scheduled) return;
  scheduled = true;
  requestAnimationFrame(() => {
    scheduled = false;
    const t0 = performance.now();
    const root = document.getElementById('app');
    // the first render replaces the server's "Loading" text
    if (stats.renders === 0) root.textContent = '';
    render(html`<${App} s=${state} />`, root);
    const ms = performance.now() - t0;
    stats.renders++;
    stats.lastMs = ms;
    stats.maxMs = Math.max(stats.maxMs, ms);
  });
}

function applyPatch(view, p) {
  const next = { ...view, at: p.at };
  if (p.daemon) next.daemon = p.daemon;
  if (p.hosts) next.hosts = p.hosts;
  if (p.recent) next.recent = p.recent;
  if (p.vms || p.removed) {
    const byName = new Map(view.vms.map((v) => [v.name, v]));
    for (const v of p.vms ?? []) byName.set(v.name, v);
    for (const n of p.removed ?? []) byName.delete(n);
    next.vms = [...byName.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }
  return next;
}

function connect() {
  const es = new EventSource('/v1/events');
  es.addEventListener('snapshot', (e) => {
    state.view = JSON.parse(e.data);
    state.conn = 'live';
    stats.events++;
    stats.lastEventAt = Date.now();
    schedule();
  });
  es.addEventListener('patch', (e) => {
    if (!state.view) return;
    state.view = applyPatch(state.view, JSON.parse(e.data));
    stats.events++;
    stats.lastEventAt = Date.now();
    schedule();
  });
  es.onopen = () => {
    state.conn = 'live';
    schedule();
  };
  es.onerror = () => {
    // EventSource reconnects by itself (retry: 2000); a 401/403 closes it for good
    state.conn = es.readyState === EventSource.CLOSED ? 'closed' : 'reconnecting';
    schedule();
  };
}

// relative times ("12 s ago") age without events
setInterval(schedule, 5000);
connect();

// ------------------------------------------------------------------ formatting

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
function bytes(n) {
  if (!Number.isFinite(n)) return '?';
  let i = 0;
  while (Math.abs(n) >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)} ${UNITS[i]}`;
}
function duration(sec) {
  if (sec < 60) return `${Math.round(sec)} s`;
  if (sec < 3600) return `${Math.floor(sec / 60)} min ${Math.round(sec % 60)} s`;
  return `${Math.floor(sec / 3600)} h ${Math.round((sec % 3600) / 60)} min`;
}
function pause(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}
function ago(iso) {
  if (!iso) return 'never';
  const s = (Date.now() - Date.parse(iso)) / 1000;
  return s < 2 ? 'just now' : `${duration(s)} ago`;
}
function clock(iso) {
  return iso ? new Date(iso).toLocaleString() : '';
}
function short(rev) {
  return rev ? rev.slice(0, 12) : '–';
}
function where(p) {
  return p.storage ? `${p.host}/${p.storage}` : p.host;
}
function pct(part, whole) {
  return whole > 0 ? Math.round((100 * part) / whole) : 0;
}

// ------------------------------------------------------------------ components

function App({ s }) {
  const v = s.view;
  if (!v)
    return html`<main id="main">
      <h1>vmplace fleet</h1>
      <p role="status">${s.conn === 'closed' ? 'Not allowed to see the fleet (token?).' : 'Connecting…'}</p>
    </main>`;
  const migrating = v.vms.filter((x) => x.migration);
  const attention = v.vms.filter((x) => x.problem || x.heldBack);
  return html`
    <${Header} v=${v} conn=${s.conn} />
    <main id="main">
      <${InFlight} vms=${migrating} />
      <${Attention} vms=${attention} />
      <${Hosts} hosts=${v.hosts} vms=${v.vms} />
      <${Recent} recent=${v.recent} />
    </main>
    <footer>
      ${
        'Read-only: changes to the fleet go through git. ' +
        (v.daemon.replica ? `This replica (${v.daemon.replica}) shows the VMs it owns. ` : '') +
        `Updated ${clock(v.at)}.`
      }
    </footer>
  `;
}

function Header({ v, conn }) {
  const d = v.daemon;
  const phases = {};
  for (const x of v.vms) phases[x.phase] = (phases[x.phase] ?? 0) + 1;
  return html`<header class="top">
    <h1>vmplace fleet</h1>
    <ul class="badges" aria-label="Daemon">
      <li class=${conn === 'live' ? 'ok' : 'warn'} data-conn=${conn}>
        <span role="status">${conn === 'live' ? 'live' : conn}</span>
      </li>
      <li title=${d.revision ?? ''}>revision <code>${short(d.revision)}</code></li>
      ${
        d.manifestRevision && d.manifestRevision !== d.revision
          ? html`<li title=${d.manifestRevision}>manifests <code>${short(d.manifestRevision)}</code></li>`
          : null
      }
      <li title=${clock(d.lastSyncAt)}>synced ${ago(d.lastSyncAt)}</li>
      ${d.suspended ? html`<li class="warn" data-flag="suspended">suspended</li>` : null}
      ${
        d.outsideWindow
          ? html`<li class="warn" data-flag="outside-window">outside maintenance windows</li>`
          : null
      }
      ${d.syncError ? html`<li class="bad" data-flag="sync-error">git sync failing: ${d.syncError}</li>` : null}
      ${d.ready ? null : html`<li class="warn">first pass not finished</li>`}
    </ul>
    <p class="summary">
      ${
        `${v.vms.length} VMs` +
        Object.entries(phases)
          .sort()
          .map(([p, n]) => `, ${n} ${p.toLowerCase()}`)
          .join('') +
        ` · ${v.hosts.length} hosts`
      }
    </p>
  </header>`;
}

function InFlight({ vms }) {
  return html`<section aria-labelledby="h-flight">
    <h2 id="h-flight">Migrations in flight <span class="count">(${vms.length})</span></h2>
    ${
      vms.length === 0
        ? html`<p class="none">None.</p>`
        : html`<ul class="flights">
            ${vms.map((x) => html`<${Flight} key=${x.name} vm=${x} />`)}
          </ul>`
    }
  </section>`;
}

function Flight({ vm }) {
  const m = vm.migration;
  const label = `${vm.name}: ${m.step}, ${pct(m.bytesDone, m.bytesTotal)}% copied`;
  return html`<li class="flight" data-vm=${vm.name} data-step=${m.step}>
    <div class="flight-head">
      <strong class="name">${vm.name}</strong>
      <span class="tag">${m.strategy}</span>
      <span class="route">${where(m.from)} → ${where(m.to)}</span>
    </div>
    <div class="step">
      step <b>${m.step}</b>${m.round ? ` (round ${m.round})` : ''}${
        m.attempts > 1 ? `, attempt ${m.attempts}` : ''
      }
    </div>
    <progress max=${Math.max(1, m.bytesTotal)} value=${m.bytesDone} aria-label=${label}></progress>
    <div class="numbers">
      <span data-bytes-done=${m.bytesDone}>${bytes(m.bytesDone)} of ${bytes(m.bytesTotal)}</span>
      ${m.rateBytesPerSec ? html`<span>${bytes(m.rateBytesPerSec)}/s</span>` : null}
      ${m.etaSec !== undefined ? html`<span>ETA ${duration(m.etaSec)}</span>` : null}
      ${m.pauseMs !== undefined ? html`<span data-pause-ms=${m.pauseMs}>pause ${pause(m.pauseMs)}</span>` : null}
      ${m.startedAt ? html`<span title=${clock(m.startedAt)}>started ${ago(m.startedAt)}</span>` : null}
    </div>
  </li>`;
}

function Attention({ vms }) {
  return html`<section aria-labelledby="h-attention">
    <h2 id="h-attention">Blocked, failed, held back <span class="count">(${vms.length})</span></h2>
    ${
      vms.length === 0
        ? html`<p class="none">Nothing needs a look.</p>`
        : html`<div class="scroll" role="region" aria-label="Blocked, failed and held back VMs" tabindex="0">
            <table>
              <thead>
                <tr>
                  <th scope="col">VM</th>
                  <th scope="col">Phase</th>
                  <th scope="col">Reason</th>
                  <th scope="col">Message</th>
                </tr>
              </thead>
              <tbody>
                ${vms.map(
                  (x) =>
                    html`<tr key=${x.name} data-vm=${x.name} class=${`phase-${x.phase}`}>
                      <th scope="row">${x.name}</th>
                      <td>${x.phase}</td>
                      <td data-reason>${x.problem ? x.problem.reason : 'held back'}</td>
                      <td class="msg">${x.problem ? x.problem.message : x.heldBack}</td>
                    </tr>`,
                )}
              </tbody>
            </table>
          </div>`
    }
  </section>`;
}

function Hosts({ hosts, vms }) {
  const byName = new Map(vms.map((x) => [x.name, x]));
  return html`<section aria-labelledby="h-hosts">
    <h2 id="h-hosts">Hosts and storage <span class="count">(${hosts.length})</span></h2>
    <div class="hosts">${hosts.map((x) => html`<${Host} key=${x.name} host=${x} byName=${byName} />`)}</div>
  </section>`;
}

function Host({ host, byName }) {
  return html`<article class="host" data-host=${host.name} aria-labelledby=${`host-${host.name}`}>
    <h3 id=${`host-${host.name}`}>
      ${host.name}${host.cluster ? html` <span class="tag">cluster ${host.cluster}</span>` : null}
    </h3>
    ${host.storage.map((l) => html`<${Location} key=${l.name} host=${host.name} loc=${l} byName=${byName} />`)}
    ${
      host.elsewhere.length
        ? html`<div class="loc">
            <h4>outside its storage locations</h4>
            <${Chips} names=${host.elsewhere} byName=${byName} />
          </div>`
        : null
    }
  </article>`;
}

function Location({ host, loc, byName }) {
  const used = Math.max(0, loc.capacityBytes - loc.freeBytes);
  const p = pct(used, loc.capacityBytes);
  return html`<div class="loc" data-storage=${loc.name}>
    <h4>
      ${loc.name} <span class="tag">${loc.kind}</span>
      <span class="path" title=${loc.path}>${loc.path}</span>
    </h4>
    ${
      loc.capacityBytes > 0
        ? html`<meter
              min="0"
              max=${loc.capacityBytes}
              value=${used}
              high=${loc.capacityBytes * 0.85}
              aria-label=${`${host}/${loc.name} fill`}
            ></meter>
            <div class="fill">
              ${bytes(used)} of ${bytes(loc.capacityBytes)} used (${p}%), ${bytes(loc.freeBytes)} free
            </div>`
        : html`<div class="fill">capacity unknown (not mounted or not created yet)</div>`
    }
    <${Chips} names=${loc.vms} byName=${byName} />
  </div>`;
}

function Chips({ names, byName }) {
  if (names.length === 0) return html`<p class="none">no VMs</p>`;
  return html`<ul class="chips">
    ${names.map((n) => {
      const x = byName.get(n);
      const phase = x ? x.phase : 'Unknown';
      return html`<li key=${n} data-vm=${n} class=${`chip phase-${phase}`}>
        ${n}${phase !== 'Placed' ? html` <small>${phase.toLowerCase()}</small>` : null}${
          x && x.running === false ? html` <small>off</small>` : null
        }
      </li>`;
    })}
  </ul>`;
}

function Recent({ recent }) {
  return html`<section aria-labelledby="h-recent">
    <h2 id="h-recent">Recently finished <span class="count">(${recent.length})</span></h2>
    ${
      recent.length === 0
        ? html`<p class="none">No migration finished since the daemon started.</p>`
        : html`<div class="scroll" role="region" aria-label="Recently finished migrations" tabindex="0">
            <table>
              <thead>
                <tr>
                  <th scope="col">VM</th>
                  <th scope="col">Result</th>
                  <th scope="col">Strategy</th>
                  <th scope="col">From → to</th>
                  <th scope="col">Pause</th>
                  <th scope="col">Copied</th>
                  <th scope="col">Finished</th>
                </tr>
              </thead>
              <tbody>
                ${recent.map(
                  (r) =>
                    html`<tr key=${r.id} data-vm=${r.vm} data-result=${r.result}>
                      <th scope="row">${r.vm}</th>
                      <td class=${`result-${r.result}`}>
                        ${r.result}${r.error ? html`<br /><small>${r.error.reason}</small>` : null}
                      </td>
                      <td>${r.strategy}</td>
                      <td>${where(r.from)} → ${where(r.to)}</td>
                      <td data-pause-ms=${r.pauseMs ?? ''}>
                        ${r.pauseMs !== undefined ? pause(r.pauseMs) : '–'}
                      </td>
                      <td>${bytes(r.bytes)}</td>
                      <td title=${clock(r.finishedAt)}>${ago(r.finishedAt)}</td>
                    </tr>`,
                )}
              </tbody>
            </table>
          </div>`
    }
  </section>`;
}
