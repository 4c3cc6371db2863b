# The one Switchyard image: `switchyard operator`, `switchyard gateway`, `switchyard validate`...
# Build: docker build -t switchyard .
# What ships is built by bench/pgo.sh: the `dist` profile (fat LTO, one codegen unit: the code the
# benchmarks measure), profile-guided: built once instrumented, run through bench/train.sh's
# requests on 127.0.0.1 inside the build, then built again with that profile (about half an hour on
# 2 cores). `release` is the quicker local build of the README's first command.
FROM rust:1.95-bookworm AS build
# llvm-profdata of rustc's LLVM, and python3 for the training run's config.
RUN rustup component add llvm-tools \
 && apt-get update && apt-get install -y --no-install-recommends python3 curl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    export CARGO_TARGET_DIR=/src/target \
 && bin="$(bench/pgo.sh switchyard)" \
 && cp "$bin" /switchyard

# Distroless: glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /switchyard /usr/local/bin/switchyard
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["gateway", "--help"]
