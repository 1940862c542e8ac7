# syntax=docker/dockerfile:1
# glance-share-broker: one static-ish binary (rustls, no OpenSSL) on debian slim.
#
#   docker build -t glance-share-broker .
#   docker compose up        (see docker-compose.yml: Postgres + broker)

# ------------------------------------------------------------------ builder
FROM rust:1-bookworm AS builder
WORKDIR /src
# Queries are checked at run time (sqlx::query_as), so no database is needed to build.
ENV CARGO_TERM_COLOR=never
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin glance-share-broker \
 && install -D -m 0755 target/release/glance-share-broker /out/glance-share-broker

# ------------------------------------------------------------------ runtime
FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to Keystone/Glance; curl: the HEALTHCHECK below.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 broker \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin broker
COPY --from=builder /out/glance-share-broker /usr/local/bin/glance-share-broker
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS -o /dev/null http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["glance-share-broker"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
