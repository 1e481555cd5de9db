# syntax=docker/dockerfile:1
# holdfast in a container: `docker build -t holdfast .`, then
# `docker run --rm -p 8080:8080 --stop-timeout 30 holdfast` (see deploy/README.md).

# Build: the official Rust image on Debian 12, the same Debian as the runtime
# image below (same glibc). RUST_VERSION is the toolchain the tests ran on.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The caches speed up rebuilds; the binary is copied out of the cached target/.
# Installed stripped: the line tables the release profile keeps (for
# profiling on a developer's machine) are most of its size.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p holdfast \
    && install -m 0755 --strip target/release/holdfast /usr/local/bin/holdfast

# Run: Debian 12 slim, plus CA certificates (rediss:// and the doctor's
# wss:// checks use the system roots) and busybox, whose wget is the health
# check (the slim image has neither curl nor wget; busybox is ~1 MB with no
# libraries, curl would bring libcurl and a dozen more).
FROM debian:12-slim
# Unpinned on purpose: Debian 12's security updates replace these versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates busybox \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin holdfast
COPY --from=build /usr/local/bin/holdfast /usr/local/bin/holdfast
# Inside the container listen on every interface (the default is loopback).
ENV HOLDFAST_LISTEN=0.0.0.0:8080
EXPOSE 8080
USER 10001:10001
# Liveness on the port HOLDFAST_LISTEN names (so overriding it keeps the check
# right); /readyz would also turn the container unhealthy while Redis is away.
# No `wget -T`: Debian 12's busybox is built without it and crashes on it;
# --timeout bounds the check instead.
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["/bin/sh", "-c", "busybox wget -q -O /dev/null http://127.0.0.1:${HOLDFAST_LISTEN##*:}/healthz || exit 1"]
# SIGTERM (what `docker stop` sends) drains clients over --drain-window (10 s by
# default), so give `docker stop` more than that: --stop-timeout 30.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/holdfast"]
CMD ["serve"]
