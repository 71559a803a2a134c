/**
 * The page's live feed as Server-Sent Events: on connect one `snapshot` event (the whole
 * {@link FleetView}), then `patch` events with what changed ({@link diffFleetView}). Changes are
 * coalesced: however often the daemon says "changed" (every progress line of a copy), views are
 * built and sent at most once per `minIntervalMs`, and not at all while nobody watches.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import { diffFleetView, type FleetView } from './view';

export interface FleetEventsOptions {
  /** at most one update per this many ms (default 250: four a second) */
  minIntervalMs?: number;
  /** a comment line this often keeps proxies from closing an idle stream (default 15 s) */
  heartbeatMs?: number;
  /** streams open at once (default 16); more get 503 */
  maxClients?: number;
}

/** The SSE hub of one daemon. */
export class FleetEvents {
  private readonly clients = new Set<ServerResponse>();
  private current?: FleetView;
  private dirty = false;
  private timer?: NodeJS.Timeout;
  private lastSent = 0;
  private readonly heartbeat: NodeJS.Timeout;
  private readonly minIntervalMs: number;
  private readonly maxClients: number;
  /** views built, patches sent (for tests and the report) */
  readonly counts = { built: 0, patches: 0 };

  constructor(
    private readonly source: () => FleetView,
    opts: FleetEventsOptions = {},
  ) {
    this.minIntervalMs = opts.minIntervalMs ?? 250;
    this.maxClients = opts.maxClients ?? 16;
    this.heartbeat = setInterval(() => this.write(': keep-alive\n\n'), opts.heartbeatMs ?? 15_000);
    this.heartbeat.unref();
  }

  /** Something the page shows may have changed: send it soon (coalesced). */
  changed(): void {
    this.dirty = true;
    if (this.clients.size === 0 || this.timer) return;
    const wait = Math.max(0, this.lastSent + this.minIntervalMs - Date.now());
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flush();
    }, wait);
    this.timer.unref();
  }

  /** The view as last sent (built now when nobody watched). */
  view(): FleetView {
    if (!this.current || (this.dirty && this.clients.size === 0)) this.rebuild();
    return this.current!;
  }

  /** Serve one event stream on `res` until the client goes away. */
  attach(req: IncomingMessage, res: ServerResponse): void {
    if (this.clients.size >= this.maxClients) {
      res.writeHead(503, { 'Content-Type': 'text/plain; charset=utf-8', 'Retry-After': '10' });
      res.end('too many event streams\n');
      return;
    }
    // the others get what changed first, so the snapshot below and the patches after it agree
    if (this.dirty && this.clients.size > 0) this.flush();
    const view = this.view();
    res.writeHead(200, {
      'Content-Type': 'text/event-stream; charset=utf-8',
      'Cache-Control': 'no-store',
      'X-Accel-Buffering': 'no',
    });
    if (req.method === 'HEAD') {
      res.end();
      return;
    }
    res.socket?.setNoDelay(true);
    // reconnect after 2 s when the daemon restarts
    res.write(`retry: 2000\nevent: snapshot\ndata: ${JSON.stringify(view)}\n\n`);
    this.clients.add(res);
    res.on('close', () => this.clients.delete(res));
  }

  /** Close every stream (the daemon stops). */
  close(): void {
    clearInterval(this.heartbeat);
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    for (const c of this.clients) c.end();
    this.clients.clear();
  }

  get watchers(): number {
    return this.clients.size;
  }

  private rebuild(): void {
    this.current = this.source();
    this.dirty = false;
    this.counts.built++;
  }

  private flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    const prev = this.current;
    this.rebuild();
    this.lastSent = Date.now();
    const patch = prev ? diffFleetView(prev, this.current!) : undefined;
    if (!patch && prev) return;
    this.counts.patches++;
    this.write(
      patch
        ? `event: patch\ndata: ${JSON.stringify(patch)}\n\n`
        : `event: snapshot\ndata: ${JSON.stringify(this.current)}\n\n`,
    );
  }

  private write(chunk: string): void {
    for (const c of this.clients) c.write(chunk);
  }
}
