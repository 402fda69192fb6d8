import * as HttpApi from "@effect/platform/HttpApi"
import { AggregatorApi } from "../../domain/Api.js"

export interface Route {
  readonly method: string
  /** The endpoint's path as declared, e.g. `/events/:topic/:event_id`. */
  readonly path: string
  readonly pattern: RegExp
}

/** Every endpoint of the API, with a pattern that matches its concrete paths (a trailing slash allowed). */
export const routesOf = (api: HttpApi.HttpApi.Any): ReadonlyArray<Route> => {
  const routes: Array<Route> = []
  HttpApi.reflect(api as HttpApi.HttpApi.AnyWithProps, {
    onGroup: () => {},
    onEndpoint: ({ endpoint }) => {
      const pattern = endpoint.path.split("/").map((s) => s.startsWith(":") ? "[^/]+" : s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"))
      routes.push({ method: endpoint.method, path: endpoint.path, pattern: new RegExp(`^${pattern.join("/")}/?$`) })
    }
  })
  return routes
}

/** The aggregator's endpoints. */
export const routes = routesOf(AggregatorApi)

/** The path of a request URL, without its query. */
export const pathOf = (url: string): string => {
  const q = url.indexOf("?")
  return q === -1 ? url : url.slice(0, q)
}

/** Whether some endpoint declares this path, spelled as declared (a trailing slash allowed). */
export const isDeclaredPath = (path: string): boolean => routes.some((r) => r.pattern.test(path))

/** What a request's method and path match: its endpoint, or none; and whether any endpoint declares the path. */
export interface Match {
  readonly path: string
  readonly route: Route | undefined
  readonly declared: boolean
}

const matches = new WeakMap<object, Match>()

/**
 * The match of a request, worked out once however many layers ask (the API middleware to refuse undeclared
 * paths, the request observer for its metric label).
 */
export const matchOf = (request: { readonly method: string; readonly url: string }): Match => {
  let match = matches.get(request)
  if (match === undefined) {
    const path = pathOf(request.url)
    const route = routes.find((r) => r.method === request.method && r.pattern.test(path))
    match = { path, route, declared: route !== undefined || isDeclaredPath(path) }
    matches.set(request, match)
  }
  return match
}

/** The methods the endpoints on this path take. */
export const allowedMethods = (path: string): ReadonlyArray<string> => [
  ...new Set(routes.filter((r) => r.pattern.test(path)).map((r) => r.method))
]
