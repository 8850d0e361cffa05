# syntax=docker/dockerfile:1
# tollgate: multi-stage image. The builder runs exactly the release build CI runs
# (`.ci/run`, checked by crates/cli/tests/it/deploy.rs); the runtime is Debian slim with the
# binary, curl for the health check, and a non-root user. Docker is not available on the
# development machines: see docs/operations.md (Deploy) for what was and was not run.

FROM rust:1.94-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release -p tollgate-cli --locked

FROM debian:bookworm-slim
# curl only for HEALTHCHECK; TLS roots are built into the binary (webpki-roots, `[tls]`).
RUN apt-get update \
    && apt-get install -y --no-install-recommends curl \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tollgate \
    && useradd --system --uid 10001 --gid tollgate --home-dir /var/lib/tollgate --create-home tollgate
COPY --from=builder /src/target/release/tollgate /usr/local/bin/tollgate
USER 10001:10001
WORKDIR /var/lib/tollgate
EXPOSE 8402
# The public listener must listen on 0.0.0.0:8402 inside the container (deploy/tollgate.toml).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["curl", "-fsS", "-o", "/dev/null", "http://127.0.0.1:8402/readyz"]
# `tollgate serve --config /etc/tollgate/tollgate.toml`; compose passes another --config for
# the demo. Other subcommands: `docker compose exec gateway-1 tollgate admin ...`.
ENTRYPOINT ["tollgate", "serve"]
CMD ["--config", "/etc/tollgate/tollgate.toml"]
