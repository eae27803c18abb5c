# syntax=docker/dockerfile:1
#
# rdscred controller image.
#   docker build -t ghcr.io/rdscred/rdscred:0.1.0 .
#
# Build stage: the Debian bookworm Rust toolchain, so the binary links against the same glibc
# as the runtime image. TLS is rustls (ring), so no OpenSSL is needed at run time.
FROM rust:1-bookworm AS build
WORKDIR /src
# The whole workspace manifest set is needed to resolve Cargo.lock (crates/ holds a test-only
# member); only the rdscred binary is compiled.
COPY Cargo.toml Cargo.lock ./
COPY crates ./crates
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin rdscred \
 && install -m 0755 target/release/rdscred /rdscred

# Runtime: distroless with glibc and libgcc (cc), no shell, no package manager; runs as the
# image's nonroot user (65532), which the Helm chart's securityContext also enforces.
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="rdscred" \
      org.opencontainers.image.description="Kubernetes controller for the whole life of an application's database credential on AWS" \
      org.opencontainers.image.source="https://github.com/rdscred/rdscred" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /rdscred /rdscred
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/rdscred"]
CMD ["run"]
