# callscope: one binary for every role (broker, pipeline, query-api, standalone, loadgen).
#
#   docker build -t callscope .
#   docker run --rm -p 8080:8080 -p 9092:9092 callscope   # standalone with its embedded broker
#   docker run --rm callscope --help
#
# Targets: `image` (the default, built from source) and `prebuilt` (the same runtime with a
# binary built outside: `docker build --target prebuilt -f Dockerfile <dir holding callscope>`,
# what CI does with the binary it tested).

# Build stage: the Rust toolchain the project is tested with; librdkafka is built from
# source by rdkafka-sys (needs make, a C compiler, perl, zlib).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential perl zlib1g-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin callscope \
 && install -m 0755 target/release/callscope /usr/local/bin/callscope

# Runtime: Debian slim, CA certificates (S3, webhooks, SMTP over TLS) and curl for the
# health check; an unprivileged user with its data under /var/lib/callscope.
FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/callscope --create-home callscope
USER 10001:10001
WORKDIR /var/lib/callscope
ENV CALLSCOPE_DATA_DIR=/var/lib/callscope/data \
    CALLSCOPE_LOG_FORMAT=json
# 8080 query API, 9092 the embedded Kafka-compatible broker, 9464 a pipeline's own metrics.
EXPOSE 8080 9092 9464
# The query API's liveness; pipelines override it with their --metrics-addr /health.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/health || exit 1
ENTRYPOINT ["callscope"]
CMD ["standalone", "--http-addr", "0.0.0.0:8080", "--kafka-addr", "0.0.0.0:9092", "--kafka-advertised-addr", "127.0.0.1:9092"]

FROM runtime AS prebuilt
COPY --chmod=0755 callscope /usr/local/bin/callscope

FROM runtime AS image
COPY --from=build /usr/local/bin/callscope /usr/local/bin/callscope
