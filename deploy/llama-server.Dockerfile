# llama.cpp's llama-server, built by scripts/llamacpp.sh exactly as on a developer
# machine (CPU only, from the llama.cpp source vendored in the llama-cpp-python
# sdist, RUNPATH $ORIGIN so no LD_LIBRARY_PATH is needed), plus the tiny
# random-weight model of scripts/tinymodel.py at /models/tiny.gguf. It answers
# gibberish, fast. Build from the repository root:
#   docker build -f deploy/llama-server.Dockerfile -t spokehub-llama-server:local .
# For a real model, mount it and pass -m (see deploy/docker-compose.yml).
ARG LLAMA_CPP_PY_VERSION=0.3.36

FROM debian:bookworm AS build
ARG LLAMA_CPP_PY_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake ninja-build g++ patchelf libssl-dev \
      python3 python3-venv ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/build \
 && /opt/build/bin/pip install --no-cache-dir 'gguf>=0.10' 'numpy>=1.26'
WORKDIR /src
COPY scripts/llamacpp.sh scripts/tinymodel.py scripts/
RUN SPOKEHUB_CACHE=/opt/cache SPOKEHUB_LLAMA_CPP_PY_VERSION=${LLAMA_CPP_PY_VERSION} \
      PYTHON=/opt/build/bin/python bash scripts/llamacpp.sh \
 && mv /opt/cache/llama.cpp-${LLAMA_CPP_PY_VERSION} /opt/llama.cpp
RUN /opt/build/bin/python scripts/tinymodel.py \
      --vocab /opt/llama.cpp/vocab/ggml-vocab-llama-spm.gguf \
      --out /models/tiny.gguf --seed 0 --name tiny

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libgomp1 libssl3 curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/llama.cpp/bin /opt/llama.cpp/bin
COPY --from=build /models /models
RUN useradd --system --user-group --no-create-home --shell /usr/sbin/nologin llama
USER llama
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s \
  CMD ["curl", "-fsS", "http://127.0.0.1:8080/health"]
ENTRYPOINT ["/opt/llama.cpp/bin/llama-server"]
CMD ["-m", "/models/tiny.gguf", "--alias", "tiny", "--host", "0.0.0.0", "--port", "8080", \
     "-np", "2", "--slots", "--no-webui"]
