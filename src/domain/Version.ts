/** The version every program reports (aggregator `GET /`, the OpenAPI document, the publisher's `--version`); package.json's, checked by a test. */
export const VERSION = "0.1.0"
