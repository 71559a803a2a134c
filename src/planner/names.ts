/** Lists of VM names in findings, bounded (pure). */
const MAX_NAMES = 10;

export function listNames(names: readonly string[]): string {
  if (names.length <= MAX_NAMES) return names.join(', ');
  return `${names.slice(0, MAX_NAMES).join(', ')} and ${names.length - MAX_NAMES} more`;
}

export function cycleText(cycle: readonly string[]): string {
  if (cycle.length <= MAX_NAMES + 1) return cycle.join(' -> ');
  return `${cycle.slice(0, MAX_NAMES).join(' -> ')} -> ... (${cycle.length - 1} VMs) -> ${cycle[0]!}`;
}
