import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import { formatBytes } from '../planner/bytes';

/** Progress bars per VM on a terminal (cli-progress); silent elsewhere. */
export class ProgressView {
  private readonly multi = new MultiBar(
    {
      format: ' {vm} |{bar}| {percentage}% {done}/{size} {state}',
      hideCursor: true,
      clearOnComplete: false,
      stopOnComplete: false,
    },
    Presets.shades_classic,
  );
  private readonly bars = new Map<string, SingleBar>();
  private closed = false;

  start(vm: string, totalBytes: number): void {
    const bar = this.multi.create(Math.max(totalBytes, 1), 0, {
      vm: vm.padEnd(16),
      done: formatBytes(0),
      size: formatBytes(totalBytes),
      state: 'copying',
    });
    this.bars.set(vm, bar);
  }

  update(vm: string, done: number, total: number): void {
    const bar = this.bars.get(vm);
    if (!bar) return;
    bar.setTotal(Math.max(total, 1));
    bar.update(done, { done: formatBytes(done), size: formatBytes(total) });
  }

  stop(vm: string, step: string): void {
    const bar = this.bars.get(vm);
    if (!bar) return;
    if (step === 'Completed') bar.update(bar.getTotal(), { state: 'done' });
    else bar.update({ state: step });
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.multi.stop();
  }
}
