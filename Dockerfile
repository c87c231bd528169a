# qtrain-server image. Stage 1 compiles with Debian's -dev packages; stage 2 holds the runtime
# libraries, qtrain-server and the qtrain CLI (health check, `qtrain token new`) only, running as a
# non-root user with its data dir on a volume. Build and check it offline with
# scripts/docker_verify.sh.
#
# Secure by default: TLS and bearer tokens from /etc/qtrain (docs/security.md):
#   docker build --network host -t qtrain .
#   docker run -p 50051:50051 -v qtrain-data:/var/lib/qtrain \
#     -v $PWD/tls.crt:/etc/qtrain/tls.crt:ro -v $PWD/tls.key:/etc/qtrain/tls.key:ro \
#     -v $PWD/access.json:/etc/qtrain/access.json:ro qtrain
# On a trusted machine only, without TLS or tokens:
#   docker run -p 127.0.0.1:50051:50051 qtrain --listen=0.0.0.0:50051 --allow_insecure
ARG BASE=debian:bookworm-slim

FROM ${BASE} AS build
WORKDIR /src
COPY scripts/install_deps.sh scripts/
RUN bash scripts/install_deps.sh --build && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B /build -G Ninja -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF \
      -DQTRAIN_BUILD_BENCHMARKS=OFF -DQTRAIN_BUILD_PYTHON=OFF \
    && cmake --build /build --target qtrain-server qtrain \
    && strip /build/bin/qtrain-server /build/bin/qtrain

FROM ${BASE}
RUN apt-get update -qq \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
       libabsl20220623 libc-ares2 libcivetweb1 libdnnl2 libgomp1 libgrpc++1.51 libgrpc29 \
       libonnx1 libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libprotobuf32 libre2-9 \
       libssl3 libgloo0 libopenblas0-openmp \
       ocl-icd-libopencl1 zlib1g \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/qtrain --create-home qtrain
COPY --from=build /build/bin/qtrain-server /build/bin/qtrain /usr/local/bin/
USER qtrain
WORKDIR /var/lib/qtrain
VOLUME /var/lib/qtrain
# gRPC (TLS), the plaintext health port (grpc.health.v1 only) and Prometheus /metrics. The
# health check asks $QTRAIN_HEALTH, else $QTRAIN_SERVER: set it when you change the ports.
EXPOSE 50051 8081 9464
ENV QTRAIN_SERVER=127.0.0.1:50051 QTRAIN_HEALTH=127.0.0.1:8081
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
  CMD ["sh", "-c", "exec qtrain health --timeout=3 --server=\"${QTRAIN_HEALTH:-$QTRAIN_SERVER}\""]
ENTRYPOINT ["qtrain-server"]
CMD ["--listen=0.0.0.0:50051", "--tls_cert=/etc/qtrain/tls.crt", "--tls_key=/etc/qtrain/tls.key", \
     "--auth_tokens=/etc/qtrain/access.json", "--health_listen=0.0.0.0:8081", \
     "--metrics_listen=0.0.0.0:9464", "--data_dir=/var/lib/qtrain"]
