# syntax=docker/dockerfile:1
# statsig-forwarder image:  docker build -t statsig-forwarder .
# Stage `build` installs the package and its dependencies (all published as wheels: no
# compiler needed) into a venv without pip; the final image is python:slim plus that venv,
# with pip/setuptools removed, running as a non-root user.
# tests/test_deploy.py runs this file's install and entrypoint commands in a fresh venv.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    VIRTUAL_ENV=/opt/statsig-forwarder
WORKDIR /src
COPY pyproject.toml README.md ./
COPY forwarder/ forwarder/
RUN python -m venv --without-pip "$VIRTUAL_ENV" \
 && python -m pip --python "$VIRTUAL_ENV/bin/python" install --prefer-binary . \
 && "$VIRTUAL_ENV/bin/statsig-forwarder" --version

FROM ${PYTHON_IMAGE}
ENV VIRTUAL_ENV=/opt/statsig-forwarder \
    PATH=/opt/statsig-forwarder/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    FORWARDER_STATE_DIR=/var/lib/statsig-forwarder \
    FORWARDER_METRICS_LISTEN=0.0.0.0:9464 \
    FORWARDER_LOG_FORMAT=json
RUN python -m pip uninstall -y -q pip setuptools wheel \
 && groupadd --system --gid 10001 forwarder \
 && useradd --system --uid 10001 --gid forwarder --no-create-home --shell /usr/sbin/nologin forwarder \
 && mkdir -p /var/lib/statsig-forwarder /var/log/app \
 && chown forwarder:forwarder /var/lib/statsig-forwarder
COPY --from=build /opt/statsig-forwarder /opt/statsig-forwarder
# Numeric, so Kubernetes' runAsNonRoot can verify it; the same ids as the user and group made above.
USER 10001:10001
# Checkpoints, lock and dead-letter file: keep them across container restarts.
VOLUME ["/var/lib/statsig-forwarder"]
EXPOSE 9464
# SIGTERM: stop reading, deliver what was read (shutdown_timeout, 10 s), checkpoint, exit 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=4)"]
ENTRYPOINT ["statsig-forwarder"]
# The forwarder expands globs itself; mount the application's log directory at /var/log/app.
CMD ["run", "/var/log/app/*.ndjson"]
