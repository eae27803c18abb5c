# syntax=docker/dockerfile:1
#
# rdscred controller image.
#   docker build -t ghcr.io/rdscred/rdscred:0.1.0 \
#     --build-arg VERSION=0.1.0 --build-arg GIT_COMMIT="$(git rev-parse HEAD)" .
#
# Base images are build arguments so they can be pinned by digest, e.g.
#   --build-arg RUST_IMAGE=docker.io/library/rust:1-bookworm@sha256:<digest>
#   --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest>
# The build context has no .git (see .dockerignore): the commit comes in as GIT_COMMIT.
ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# Build stage: the Debian bookworm Rust toolchain, so the binary links against the same glibc
# as the runtime image. TLS is rustls (ring), so no OpenSSL is needed at run time.
FROM ${RUST_IMAGE} AS build
ARG GIT_COMMIT=unknown
WORKDIR /src
# Every manifest of the workspace and every target they declare (benches/ holds the root
# package's bench, crates/ a test-only member) must be present for Cargo to resolve the
# workspace; only the rdscred binary is compiled.
COPY Cargo.toml Cargo.lock ./
COPY benches ./benches
COPY crates ./crates
COPY src ./src
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RDSCRED_GIT_COMMIT="${GIT_COMMIT}" cargo build --release --locked --bin rdscred \
 && install -m 0755 target/release/rdscred /rdscred

# Runtime: distroless with glibc and libgcc (cc), no shell, no package manager; runs as the
# image's nonroot user (65532), which the Helm chart's securityContext also enforces.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
ARG GIT_COMMIT=unknown
LABEL org.opencontainers.image.title="rdscred" \
      org.opencontainers.image.description="Kubernetes controller for the whole life of an application's database credential on AWS" \
      org.opencontainers.image.source="https://github.com/rdscred/rdscred" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${GIT_COMMIT}"
COPY --from=build /rdscred /rdscred
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/rdscred"]
CMD ["run"]
