# syntax=docker/dockerfile:1
#
# rlslab in a container. Build: docker build -t rlslab .
# Usually run through docker-compose.yml, which also starts PostgreSQL and PgBouncer.
# Inside the container rlslab needs a database through DATABASE_URL (it has no local
# PostgreSQL binaries and no Docker to fall back on).

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so code edits do not re-download modules.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# Static binary: the runtime image has no C toolchain or libc to match.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o /out/rlslab ./cmd/rlslab

FROM debian:bookworm-slim
# ca-certificates: for DATABASE_URLs that use TLS (sslmode=verify-full).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 rlslab \
 && useradd --system --uid 10001 --gid rlslab --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin rlslab
COPY --from=build /out/rlslab /usr/local/bin/rlslab
# Numeric, so runtimes that check runAsNonRoot can verify it.
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rlslab"]
# The default -addr is 127.0.0.1:8080, unreachable from outside a container.
CMD ["serve", "-addr", "0.0.0.0:8080"]
