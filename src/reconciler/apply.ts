import type { RunResult } from '../machine/runner';
import type { HostStatus, Plan, VirtualMachineStatus } from '../types';
import type { PassInput, Reconciler } from './reconciler';

export interface ApplyOptions {
  /** write the status files: after every pass and after every step of a migration */
  writeStatus(vms: VirtualMachineStatus[], hosts: HostStatus[]): Promise<void>;
  /** show the plan and ask before the first migration starts; false starts none */
  confirm?(plan: Plan): Promise<boolean>;
}

export interface ApplyResult {
  /** the plan of the last pass, made after every migration of this run had finished */
  plan: Plan;
  /** migrations that finished in this run (resumed ones included), by VM */
  results: Map<string, RunResult>;
  statuses: VirtualMachineStatus[];
  /** VMs not started, with why (suspend, window, limits, a hold after a failure, not approved) */
  deferred: Map<string, string>;
  /** true when every VM is at its desired placement */
  converged: boolean;
  /** true when a migration of this run did not complete, or a planned one is blocked */
  anyFailed: boolean;
}

/**
 * `vmplace apply`: the daemon's reconciler run once to rest. First every interrupted migration
 * of the state dir is resumed and awaited; then passes run (each observes, plans, and starts
 * what suspend, maintenance windows, holds and limits allow), each next one as soon as a
 * migration finishes, until nothing is in flight. A VM gets at most one new migration per run
 * (`oncePerVm`): a failed one waits for the next run, or for the daemon's backoff.
 */
export class ApplyRun {
  private readonly results = new Map<string, RunResult>();
  private hosts: HostStatus[] = [];
  private passed = false;
  private writing: Promise<void> = Promise.resolve();

  constructor(
    private readonly rec: Reconciler,
    private readonly opts: ApplyOptions,
  ) {}

  /** Wire to the reconciler's `onTransition`: status is written after every step (one write at a time). */
  statusChanged(): Promise<void> {
    if (!this.passed) return Promise.resolve(); // nothing observed yet: no status to write
    const next = this.writing.then(() => this.opts.writeStatus(this.rec.statuses(), this.hosts));
    this.writing = next.catch(() => undefined);
    return next;
  }

  /** Wire to the reconciler's `onFinished`. */
  finished(vm: string, result: RunResult): void {
    if (!result.stopped) this.results.set(vm, result);
  }

  async run(input: PassInput): Promise<ApplyResult> {
    await this.rec.resume(input.settings, input.desired);
    await this.rec.settled();
    let approved = !this.opts.confirm;
    const approve = async (_: unknown, plan: Plan): Promise<boolean> =>
      (approved ||= (await this.opts.confirm?.(plan)) ?? true);
    const deferred = new Map<string, string>();
    for (;;) {
      const res = await this.rec.pass({ ...input, oncePerVm: true, approve });
      this.hosts = res.hosts;
      this.passed = true;
      for (const vm of res.started) deferred.delete(vm);
      for (const [vm, why] of res.deferred) deferred.set(vm, why);
      await this.statusChanged();
      if (this.rec.inFlight().length === 0) {
        const anyFailed =
          [...this.results.values()].some((r) => r.step !== 'Completed') ||
          res.plan.migrations.some((m) => m.blocked);
        const converged = res.plan.migrations.length === 0 && res.plan.unknown.length === 0;
        for (const vm of deferred.keys())
          if (!res.plan.migrations.some((m) => m.vm === vm)) deferred.delete(vm);
        return {
          plan: res.plan,
          results: this.results,
          statuses: res.statuses,
          deferred,
          converged,
          anyFailed,
        };
      }
      await this.rec.nextFinish();
    }
  }
}
