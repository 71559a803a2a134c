/**
 * Manifests and status files: reading the repository into typed desired and actual state.
 */
export { loadDesiredState, MANIFESTS_DIR, type LoadOptions } from './load';
export { formatProblem } from './format';
export { DEFAULT_LIMITS, type ReadLimits } from './yaml-source';
export { SCHEMA_DIR, SCHEMA_FILES, getValidator, validateAgainstSchema } from './schemas';
