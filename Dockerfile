# syntax=docker/dockerfile:1
# CMN gateway image: `docker build -t ariesone/cmn-service:0.1.0 .` (the tag is the package version;
# deploy/k8s and docker-compose.yml name the same one, tests/deploy checks they agree).
# Two stages so the runtime image carries the installed virtualenv but no build tools or sources.

FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Runtime dependencies only, at the versions and hashes of the lock (no test extra, no embedded broker:
# a deployment always names its brokers); a layer of their own, rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --no-cache-dir --require-hashes -r requirements.lock
# Then the gateway itself, without resolving anything again. pyproject.toml names README.md as the
# long description, so the build needs it.
COPY pyproject.toml README.md ./
COPY gateway ./gateway
RUN pip install --no-cache-dir --no-deps .

FROM python:3.11-slim AS runtime
RUN groupadd --system --gid 10001 cmn \
    && useradd --system --uid 10001 --gid cmn --no-create-home --shell /usr/sbin/nologin cmn
COPY --from=build /opt/venv /opt/venv
# HOME=/tmp: the user has no home, and the root filesystem is read-only under Kubernetes (deploy/k8s
# mounts an emptyDir at /tmp); development certificates (`source: dev`, default ~/.cmn/certs) land there.
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    ENABLE_METRICS=true \
    METRICS_PORT=9090 \
    LOG_FORMAT=json
# Numeric ids so Kubernetes' runAsNonRoot can verify the user without reading /etc/passwd.
USER 10001:10001
EXPOSE 9090
# The slim image has no curl: probe /healthz with the interpreter that is already there.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request as u; u.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9090'), timeout=2)"]
# SIGTERM starts the drain: stop consuming, finish in-flight requests, settle, exit 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cmn"]
CMD ["serve"]
