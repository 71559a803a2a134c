/**
 * How vmplace runs programs on a host: the lowest layer below transfer/ and drivers/.
 */

export interface ProgressFn {
  (bytesDone: number, bytesTotal: number): void;
}

/** Runs programs on one host, locally or through ssh. */
export interface HostExec {
  /** a short label for logs, e.g. `local` or `root@10.0.0.1` */
  readonly label: string;
  run(
    argv: readonly string[],
    opts?: { input?: string | Buffer; timeoutMs?: number; allowExitCodes?: number[]; signal?: AbortSignal },
  ): Promise<{ stdout: string; stderr: string; exitCode: number }>;
  close(): Promise<void>;
}
