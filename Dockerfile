# syntax=docker/dockerfile:1
#
# logdist's image: the distributor (`logdist`, the default command), the
# shipper (`logdist-ship`) and the load tester (`logdist-loadtest`, whose
# `emitter` and `analyzer` roles docker-compose.yml runs), built from this
# workspace. README.md, "Run with Docker".
#
#   docker build -t logdist:local .          # or: just docker-build
#   docker run --rm -p 127.0.0.1:8082:8082 -p 8080:8080 -p 9000:9000 -p 8081:8081 logdist:local
#
# Stages: `chef` (the Rust toolchain of rust-version in Cargo.toml, with
# cargo-chef), `planner` (the dependency recipe), `builder` (dependencies
# first, in a layer of their own that only Cargo.toml/Cargo.lock changes
# rebuild; then the sources), and the runtime: debian:bookworm-slim, the
# three binaries, a non-root user, no compiler, no shell tools beyond Debian's
# base. scripts/lint-container.sh lints this file and checks it against
# docker-compose.yml and configs/docker.toml.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
# No debug info in the image's binaries (the workspace's release profile keeps
# it for profiling): a fraction of the size; backtraces keep function names.
ENV CARGO_PROFILE_RELEASE_DEBUG=0
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}"
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /src/recipe.json recipe.json
# Every dependency, compiled once and cached until the recipe changes.
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin logdist --bin logdist-ship --bin logdist-loadtest \
    && mkdir -p /out \
    && cp target/release/logdist target/release/logdist-ship target/release/logdist-loadtest /out/

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
LABEL org.opencontainers.image.title="logdist" \
      org.opencontainers.image.description="Log distributor: weighted, priority-ordered, no silent loss" \
      org.opencontainers.image.licenses="MIT"
ARG UID=10001
RUN groupadd --system --gid "${UID}" logdist \
    && useradd --system --uid "${UID}" --gid logdist --home-dir /var/lib/logdist \
        --no-create-home --shell /usr/sbin/nologin logdist \
    && mkdir -p /etc/logdist /var/lib/logdist \
    && chown logdist:logdist /var/lib/logdist
COPY --from=builder /out/logdist /out/logdist-ship /out/logdist-loadtest /usr/local/bin/
COPY configs/docker.toml /etc/logdist/logdist.toml

# `logdist` and `logdist health` both read the config from here.
ENV LOGDIST_CONFIG=/etc/logdist/logdist.toml
WORKDIR /var/lib/logdist
# Dead letters (delivery.dead_letter_path) and the disk-mode spool
# (durability.dir) live here.
VOLUME ["/var/lib/logdist"]
USER ${UID}:${UID}

# Emitters, the shipper's acking listener, analyzers, the admin API and /metrics.
EXPOSE 8080 9000 8081 8082

# logdist drains for delivery.shutdown_grace (5 s) and exits within 2 s more:
# inside `docker stop`'s default 10 s.
STOPSIGNAL SIGTERM
# GET /api/v1/health on the admin API (no curl needed): 0 healthy or
# degraded, 1 unhealthy (no analyzer attached), unreachable or an error.
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["logdist", "health"]

CMD ["logdist"]
