# The one Switchyard image: `switchyard operator`, `switchyard gateway`, `switchyard validate`...
# Build: docker build -t switchyard .
# What ships is built with the `dist` profile (fat LTO, one codegen unit: the code the benchmarks
# measure); `release` is the quicker local build of the README's first command.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --profile dist --locked -p switchyard \
 && cp target/dist/switchyard /switchyard

# Distroless: glibc and CA certificates, no shell, runs as uid 65532.
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /switchyard /usr/local/bin/switchyard
USER 65532:65532
EXPOSE 8080 8081
ENTRYPOINT ["/usr/local/bin/switchyard"]
CMD ["gateway", "--help"]
