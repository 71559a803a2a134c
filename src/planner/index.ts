/** The pure planner: diff desired against actual placement, plan and order migrations, render plans. */
export { formatBytes } from './bytes';
export { diffPlacement, type DiskDiff, type PlacementDiff } from './diff';
export { orderBySpace, type OrderItem, type OrderOutcome, type Shortfall, type SpaceNeed } from './order';
export { planHasChanges, planMigrations, type PlanOptions } from './plan';
export {
  escapeMarkdown,
  MARKDOWN_LIMIT,
  planCopyBytes,
  renderPlanJson,
  renderPlanMarkdown,
  renderPlanTable,
  summarizePlan,
  toPlanDocument,
  type PlanDocument,
} from './render';
export { describeLocation, isPathInside, locationKey, Topology, type Location } from './topology';
