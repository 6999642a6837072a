# Multi-stage build: compile a standalone o3sr with Bun, then ship only the
# binary on a minimal base.
#   docker build -t o3sr .
#   docker run --rm -p 6543:6543 -p 6544:6544 o3sr matcher
#   docker run --rm o3sr relay --matcher-host hub.example.com --dest-host 10.0.0.5 --dest-port 3000

FROM node:22-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# The host's architecture: linux-x64 or linux-arm64.
RUN arch="$(uname -m | sed -e s/x86_64/x64/ -e s/aarch64/arm64/)" \
 && node_modules/.bin/bun build --compile --minify --target="bun-linux-${arch}" src/main_bun.ts --outfile /o3sr \
 && /o3sr --version

# Bun binaries need glibc and libstdc++; distroless/cc carries exactly those.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /o3sr /usr/local/bin/o3sr
EXPOSE 6543 6544
USER nonroot
ENTRYPOINT ["/usr/local/bin/o3sr"]
CMD ["--help"]
