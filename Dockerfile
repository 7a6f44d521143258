# syntax=docker/dockerfile:1
#
# auth-broker container image.
#   docker build -t auth-broker .
#   docker run --rm -p 8080:8080 -v auth-broker-data:/var/lib/auth-broker/data auth-broker
# Without configuration it runs the embedded default (SQLite in /var/lib/auth-broker/data);
# set AUTH_BROKER__STORAGE__DATABASE_URL for PostgreSQL (see docker-compose.yml).

# --- build stage: compiles the release binary -------------------------------------------------
FROM rust:1.95-bookworm AS builder
# The SAML service provider links xmlsec and libxml2 (bindgen needs libclang).
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends pkg-config libssl-dev libxml2-dev \
       libxmlsec1-dev libclang-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The whole crate (filtered by .dockerignore): manifest, lock file, src/, migrations/ (embedded
# into the binary at compile time), and the test and bench targets the manifest declares.
COPY . .
# Cache mounts keep the crates.io download and the target directory between builds; the binary
# is copied out of the cached target directory in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin auth-broker \
    && install -D -m 0755 target/release/auth-broker /out/auth-broker

# --- runtime stage: the binary, CA certificates and an unprivileged user -----------------------
FROM debian:bookworm-slim
# CA certificates for outbound TLS (PostgreSQL with sslmode, upstream token endpoints). Not
# version-pinned on purpose: certificate updates should reach every rebuild.
# hadolint ignore=DL3008
# xmlsec, libxml2 and OpenSSL at run time for SAML signature verification.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates libxmlsec1 libxmlsec1-openssl \
       libxml2 libssl3 \
    && rm -rf /var/lib/apt/lists/*
# A fixed non-root uid/gid, so that volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 auth-broker \
    && useradd --system --uid 10001 --gid auth-broker --home-dir /var/lib/auth-broker \
       --shell /usr/sbin/nologin auth-broker \
    && install -d -o auth-broker -g auth-broker -m 0700 /var/lib/auth-broker /var/lib/auth-broker/data
COPY --from=builder /out/auth-broker /usr/local/bin/auth-broker
USER 10001:10001
# The working directory makes the default `storage.data_dir = "./data"` resolve to the volume
# below, and `config/auth-broker.toml` (if mounted here) the default config file.
WORKDIR /var/lib/auth-broker
VOLUME ["/var/lib/auth-broker/data"]
EXPOSE 8080
ENTRYPOINT ["auth-broker"]
CMD ["serve", "--listen", "0.0.0.0:8080"]
