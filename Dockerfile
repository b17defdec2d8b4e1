# syntax=docker/dockerfile:1
# kubeecr's image: a release build, then distroless with CA certificates, as a numeric non-root user.
#   docker buildx build --platform linux/amd64,linux/arm64 -t ghcr.io/deft/kubeecr:0.2.0 .
# The build stage runs on the builder's own platform and cross-compiles for TARGETARCH, so an
# arm64 image does not build under emulation.

ARG RUST_VERSION=1.94.1

FROM --platform=$BUILDPLATFORM rust:${RUST_VERSION}-slim-bookworm AS build
ARG TARGETARCH
# The cross toolchain is Debian's current one for bookworm, used in this stage only; pinning
# its point versions would break the build at every Debian update, and none reaches the image.
# hadolint ignore=DL3008
RUN set -eu; \
    case "$TARGETARCH" in \
      amd64) triple=x86_64-unknown-linux-gnu; gcc=x86-64-linux-gnu ;; \
      arm64) triple=aarch64-unknown-linux-gnu; gcc=aarch64-linux-gnu ;; \
      *) echo "unsupported TARGETARCH: $TARGETARCH" >&2; exit 1 ;; \
    esac; \
    apt-get update; \
    apt-get install -y --no-install-recommends "gcc-$gcc" "libc6-dev-$TARGETARCH-cross"; \
    rm -rf /var/lib/apt/lists/*; \
    rustup target add "$triple"; \
    echo "$triple" > /triple
# ring compiles C for the target: point cc and the linker at the cross toolchain.
ENV CC_x86_64_unknown_linux_gnu=x86_64-linux-gnu-gcc \
    CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER=x86_64-linux-gnu-gcc \
    CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc \
    CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
WORKDIR /src
COPY . .
# The same release profile CI builds (strip, LTO, one codegen unit); caches keep rebuilds short.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,id=kubeecr-target-$TARGETARCH \
    set -eu; triple=$(cat /triple); \
    cargo build --release --locked --bin kubeecr --target "$triple"; \
    cp "target/$triple/release/kubeecr" /kubeecr

# glibc, libgcc and CA certificates (AWS and STS calls verify TLS); no shell, no package manager.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /kubeecr /usr/local/bin/kubeecr
# nonroot's uid and gid, numeric so that runAsNonRoot can check it.
USER 65532:65532
# mimalloc's arenas, under transparent huge pages set to `always`, fill whole 2 MiB pages:
# idle RSS 55 MiB instead of 36 with 10,000 watched Secrets (BENCHMARKS.md). This turns THP
# off for this process only. And mimalloc gives freed pages back at once: with its default
# 1 s delay, a page freed when a burst of writes ends waits for the next page to be freed,
# which an idle process may never do (10,000 Secrets filled: 49 MiB kept instead of 40, at
# the same admission throughput; BENCHMARKS.md).
ENV MIMALLOC_ALLOW_THP=0 MIMALLOC_PURGE_DELAY=0
EXPOSE 8443 8080
ENTRYPOINT ["/usr/local/bin/kubeecr"]
CMD ["serve"]
