# The runtime image the Container Apps jobs run: `bulwark agent schedule` (cron-triggered) and
# `bulwark agent worker` (queue-triggered). Node 24 runs the TypeScript sources directly (type
# stripping), so there is no build step; only production dependencies are installed.
FROM node:24-slim AS dependencies
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

FROM node:24-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=dependencies /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY runtime ./runtime
# The demo drives the local emulator (test code); it is not part of the image.
RUN rm -rf runtime/demo
USER node
ENTRYPOINT ["node", "/app/runtime/cli/main.ts"]
CMD ["agent", "worker"]
