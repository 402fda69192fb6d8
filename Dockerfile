# syntax=docker/dockerfile:1

# Node 22 is an LTS line; the major stays pinned so a rebuild never jumps to a new one.
FROM node:22-bookworm-slim AS base
WORKDIR /app

# Every dependency, dev ones included: the compiler for `build`, vitest for `tester`.
FROM base AS deps
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund

FROM deps AS build
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

FROM base AS prod-deps
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# The black-box suite: vitest (a dev dependency), the test folder and its config, run against
# AGGREGATOR_URL. The user owns /app because vite and vitest write their caches under node_modules.
FROM base AS tester
RUN chown node:node /app
COPY --from=deps --chown=node:node /app/node_modules ./node_modules
COPY --chown=node:node package.json package-lock.json tsconfig.json tsconfig.build.json vitest.config.ts ./
COPY --chown=node:node src ./src
COPY --chown=node:node test ./test
COPY --from=build --chown=node:node /app/dist ./dist
USER node
CMD ["node", "dist/tester"]

# The aggregator and the publisher: production dependencies and the compiled programs only.
# Last, so a plain `docker build .` produces it.
FROM base AS runtime
ENV NODE_ENV=production
COPY package.json package-lock.json ./
COPY --from=prod-deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
# Without DATABASE_URL the aggregator keeps its data in ./data: the unprivileged user must own it.
RUN mkdir -p /app/data && chown node:node /app/data
USER node
EXPOSE 8080
CMD ["node", "dist/aggregator"]
