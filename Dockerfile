# Switchyard in an image holding nothing but the static binary and its config (README, Deploy).
#   docker build -t switchyard --build-arg GIT_COMMIT=$(git rev-parse --short HEAD) .
#   docker run --rm -p 8080:8080 switchyard
# tests/static_binary.rs builds the same root without Docker (from this file's COPY, USER, CMD and
# STOPSIGNAL lines) and runs it in a chroot.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The commit `switchyard --version` names (the build context has no .git).
ARG GIT_COMMIT=
# The static build, profile-guided (deploy/pgo-build.sh: instrumented, trained over loopback by the proxy
# bench, rebuilt), with the compiler's llvm-profdata.
RUN rustup component add llvm-tools \
 && SWITCHYARD_GIT_COMMIT="$GIT_COMMIT" deploy/pgo-build.sh \
 && cp target/x86_64-unknown-linux-gnu/dist/switchyard /switchyard

FROM scratch
COPY --from=build /switchyard /switchyard
COPY deploy/config.json /etc/switchyard/config.json
# Any unprivileged numeric id: a scratch image has no /etc/passwd.
USER 65532:65532
EXPOSE 8080
# SIGTERM drains: no new connections, in-flight requests and streams finish (server.drain_timeout_ms).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/switchyard"]
CMD ["--config", "/etc/switchyard/config.json"]
