# syntax=docker/dockerfile:1
# wegate image: build with the full toolchain, ship only dist/ + production
# node_modules (package.json `dependencies`: exactly what dist/ imports; the
# benchmark's and tests' packages are devDependencies) on a slim Node 22 LTS,
# running as the unprivileged `node` user (uid 1000). Node 20 reached end of life
# in April 2026; `--build-arg NODE_IMAGE=node:24-bookworm-slim` builds on Node 24 LTS.
#   docker build -t wegate:0.1.0 .
#   docker run --rm -p 8080:8080 -v $PWD/my-gateway.yaml:/etc/wegate/gateway.yaml:ro wegate:0.1.0
# The bundled default config needs JWT_SECRET: its fallback is the repository's public
# demo secret, which `serve` refuses (exit 1) so that nobody can forge tokens:
#   docker run --rm -p 8080:8080 -e JWT_SECRET="$(openssl rand -base64 48)" wegate:0.1.0
ARG NODE_IMAGE=node:22-bookworm-slim

# Production dependencies only, in their own stage so they are cached apart
# from the source: a code change does not re-download them.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error && npm cache clean --force

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error
# .dockerignore keeps node_modules, dist, tests and git out of this copy.
COPY . .
# config/ (the exported JSON schema for editors) may be absent in a checkout:
# create it so the runtime COPY below never fails on it.
RUN npm run build && mkdir -p config

FROM ${NODE_IMAGE} AS runtime
# The app does not switch behaviour on NODE_ENV; set for libraries that do.
ENV NODE_ENV=production \
    WEGATE_CONFIG=/etc/wegate/gateway.yaml
WORKDIR /app
# Everything stays owned by root: the node user can read the app, never change it.
COPY package.json ./
COPY --from=deps /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY --from=build /app/config ./config
# The repository's default config (memory store, local demo settings) so that
# `docker run -e JWT_SECRET=…` starts (without it: refused, the default secret is
# public); production mounts its own at /etc/wegate (see deploy/).
COPY gateway.yaml ./gateway.yaml
COPY gateway.yaml /etc/wegate/gateway.yaml
USER node
EXPOSE 8080 9091
# No curl in the slim image: Node's fetch asks the admin port's liveness
# endpoint. Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.ADMIN_PORT || 9091) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# Exec form: node is PID 1 and receives SIGTERM/SIGHUP itself; the gateway
# installs handlers for both (drain on TERM, reload on HUP; a crash is logged,
# drained and exits 1). No shell, no npm.
CMD ["node", "dist/cli/main.js", "serve", "-c", "/etc/wegate/gateway.yaml"]
