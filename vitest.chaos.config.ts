import { defineConfig } from "vitest/config"

// The fault scripts restart shared servers: one file at a time, never alongside the main suite.
export default defineConfig({
  test: {
    include: ["test/chaos/**/*.test.ts"],
    testTimeout: 600_000,
    hookTimeout: 120_000,
    pool: "forks",
    fileParallelism: false
  }
})
