# spokehub image for the hub and the agent. Build from the repository root:
#   docker build -f deploy/hub.Dockerfile -t spokehub:local .
# Default command: `spokehub serve --config /etc/spokehub/hub.yaml` (mount the
# config there). The agent runs from the same image:
#   spokehub-agent --config /etc/spokehub/agent.yaml
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY hub ./hub
COPY agent ./agent
RUN python -m venv /opt/spokehub/venv \
 && /opt/spokehub/venv/bin/pip install --no-cache-dir --disable-pip-version-check .

FROM ${PYTHON_IMAGE}
RUN useradd --system --user-group --home-dir /var/lib/spokehub --create-home \
      --shell /usr/sbin/nologin spokehub
COPY --from=build /opt/spokehub/venv /opt/spokehub/venv
ENV PATH=/opt/spokehub/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER spokehub
WORKDIR /var/lib/spokehub
EXPOSE 8080
# SIGTERM drains: in-flight requests finish within shutdown_grace_s, then exit 0.
STOPSIGNAL SIGTERM
CMD ["spokehub", "serve", "--config", "/etc/spokehub/hub.yaml"]
