/**
 * The lab: real libvirt on this machine (and two hosts in network namespaces) with a writing
 * guest, for the lab tests (`test/lab/`), the benchmarks (`bench/`, from `dist/lab`) and the
 * demo (`scripts/demo.js`). Not part of vmplace's pipeline: nothing else in `src/` imports it.
 * The shell side (install, start, stop, guest build) is `scripts/lab/`.
 */
export * from './run';
export * from './libvirt';
export * from './guest';
export * from './hosts';
export * from './etcd';
export * from './etcd-registry';
export * from './partition';
