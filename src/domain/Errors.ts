import * as HttpApiSchema from "@effect/platform/HttpApiSchema"
import * as Schema from "effect/Schema"
import { Issue } from "./Event.js"

export class ValidationFailed extends Schema.TaggedError<ValidationFailed>()(
  "ValidationFailed",
  {
    error: Schema.tag("validation_failed"),
    message: Schema.String,
    issues: Schema.Array(Issue)
  },
  HttpApiSchema.annotations({ status: 422, description: "The request or one of its fields is invalid; nothing was stored" })
) {
  /** The refusal of `what` for the issues found, counted in its message. */
  static fromIssues(issues: ReadonlyArray<{ readonly path: string; readonly message: string }>, what = "the request") {
    return new ValidationFailed({
      message: `${what} is invalid (${issues.length} issue${issues.length === 1 ? "" : "s"})`,
      issues
    })
  }
}

export class PayloadTooLarge extends Schema.TaggedError<PayloadTooLarge>()(
  "PayloadTooLarge",
  {
    error: Schema.tag("payload_too_large"),
    message: Schema.String,
    limit: Schema.Number
  },
  HttpApiSchema.annotations({ status: 413, description: "Body bytes or batch size over the configured limit" })
) {}

export class Unauthorized extends Schema.TaggedError<Unauthorized>()(
  "Unauthorized",
  {
    error: Schema.tag("unauthorized"),
    message: Schema.String
  },
  HttpApiSchema.annotations({
    status: 401,
    description: "API keys are configured and the request carries no `Authorization: Bearer <key>` with one of " +
      "them; nothing was read, stored or counted"
  })
) {}

export class NotFound extends Schema.TaggedError<NotFound>()(
  "NotFound",
  {
    error: Schema.tag("not_found"),
    message: Schema.String
  },
  HttpApiSchema.annotations({ status: 404 })
) {}

export class StorageUnavailable extends Schema.TaggedError<StorageUnavailable>()(
  "StorageUnavailable",
  {
    error: Schema.tag("storage_unavailable"),
    message: Schema.String
  },
  HttpApiSchema.annotations({
    status: 503,
    description: "The database is unreachable or the write did not commit; retry after `Retry-After` seconds"
  })
) {}

export class NotReady extends Schema.TaggedError<NotReady>()(
  "NotReady",
  {
    error: Schema.tag("not_ready"),
    reason: Schema.String
  },
  HttpApiSchema.annotations({ status: 503 })
) {}

export class UnsupportedMediaType extends Schema.TaggedError<UnsupportedMediaType>()(
  "UnsupportedMediaType",
  {
    error: Schema.tag("unsupported_media_type"),
    message: Schema.String
  },
  HttpApiSchema.annotations({ status: 415, description: "Bodies must be JSON, optionally gzip- or deflate-encoded" })
) {}

export class Overloaded extends Schema.TaggedError<Overloaded>()(
  "Overloaded",
  {
    error: Schema.tag("overloaded"),
    message: Schema.String
  },
  HttpApiSchema.annotations({
    status: 429,
    description: "Too many events are waiting to be written; retry after `Retry-After` seconds"
  })
) {}

export class MethodNotAllowed extends Schema.TaggedError<MethodNotAllowed>()(
  "MethodNotAllowed",
  {
    error: Schema.tag("method_not_allowed"),
    message: Schema.String
  },
  HttpApiSchema.annotations({
    status: 405,
    description: "The path exists under other methods, listed in the `Allow` header"
  })
) {}
