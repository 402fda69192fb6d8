import type { EventInput } from "../../src/domain/Event.js"
import { Workload, type WorkloadOptions } from "../../src/publisher/Workload.js"

export interface WorkItem {
  /** Index of the distinct event (key); a duplicate shares it with its original. */
  readonly key: number
  readonly duplicate: boolean
  readonly event: EventInput
}

/** Every send of a workload with its event, in order (it holds them all: small workloads only). */
export const generateWorkload = (options: WorkloadOptions) => {
  const workload = new Workload(options)
  const cursor = workload.cursor()
  const originals: Array<EventInput> = []
  const items: Array<WorkItem> = []
  for (let key = cursor.next(); key !== -1; key = cursor.next()) {
    if (!cursor.duplicate) originals.push(workload.event(key))
    items.push({ key, duplicate: cursor.duplicate, event: originals[key] })
  }
  return {
    runId: workload.runId,
    distinctKeys: workload.distinctKeys,
    duplicateSends: workload.duplicateSends,
    originals,
    items
  }
}
