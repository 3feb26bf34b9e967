# Portico's container image: built from source on the official Rust image,
# run on distroless "cc" as a numeric non-root user, with no shell.
#
#   docker build -t portico:0.1.0 .        (or: podman build -t portico:0.1.0 .)
#
# image/Dockerfile.scratch makes the same image FROM scratch from a static
# binary built outside (see the README, "Container image").

FROM docker.io/library/rust:1.95-slim-bookworm AS build
WORKDIR /src
# Every target Cargo.toml names must exist for cargo to read it.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# The code layout build.rs gives the linker (README, "Code layout").
COPY loadtest/hot-functions.txt ./loadtest/hot-functions.txt
COPY benches ./benches
COPY loadtest/ws_bench.rs ./loadtest/ws_bench.rs
RUN cargo build --release --locked --bin portico

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="portico" \
      org.opencontainers.image.description="Portico: an edge ingress gateway for HTTP services on Kubernetes" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/portico /usr/local/bin/portico
# distroless's "nonroot" user; the Deployment's runAsUser says the same.
USER 65532:65532
# listen.http, listen.https, operator.listen (never public).
EXPOSE 8080 8443 9901
ENTRYPOINT ["/usr/local/bin/portico", "serve"]
CMD ["--config", "/etc/portico/config/portico.yaml"]
