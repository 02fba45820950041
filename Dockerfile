# syntax=docker/dockerfile:1
# The gateway image: FastAPI service and its migration command. It holds the
# serving dependencies only (pyproject's base `dependencies`): the models run
# in Triton, so no torch, tensorflow or onnxruntime here.

ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /build
COPY pyproject.toml ./

# Only the base dependency list is installed, not the project itself: the
# runtime stage copies the source, so a code change does not invalidate this
# layer, and the extras (train, triton, dev) never enter the image.
# --only-binary keeps compilers out of the build: every pin has a wheel.
RUN python -c "import tomllib; \
deps = tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']; \
open('requirements.txt', 'w').write('\n'.join(deps) + '\n')" \
    && pip install --only-binary=:all: -r requirements.txt \
    && pip check


FROM ${PYTHON_IMAGE} AS runtime

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONPATH=/app \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOST=0.0.0.0 \
    PORT=8080

RUN groupadd --system --gid 10001 app \
    && useradd --system --uid 10001 --gid app --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /opt/venv /opt/venv

WORKDIR /app
# Owned by root and read-only for the service user.
COPY features/ features/
COPY gateway/ gateway/
COPY db/ db/
COPY config/ config/
RUN python -m compileall -q /app

USER 10001:10001

EXPOSE 8080

# Liveness, not readiness: /health answers 503 while Triton or PostgreSQL is
# down, and the gateway then degrades on purpose (fail-safe REVIEW, 503 on
# writes). A restart would not bring them back, so 503 counts as alive here;
# only a process that does not answer, or answers otherwise, is unhealthy.
COPY --chmod=755 <<'EOF' /usr/local/bin/gateway-healthcheck
#!/opt/venv/bin/python
import os
import sys
import urllib.error
import urllib.request

url = f"http://127.0.0.1:{os.environ.get('PORT', '8080')}/health"
try:
    urllib.request.urlopen(url, timeout=2)
except urllib.error.HTTPError as exc:
    sys.exit(0 if exc.code == 503 else 1)
except OSError:
    sys.exit(1)
EOF
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/gateway-healthcheck"]

CMD ["python", "-m", "gateway"]
