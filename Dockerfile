# TimeTracker Integrations Gateway: one async process beside TimeTracker.
# Stage 1 builds the wheel (package, templates, built CSS and migrations as package data).
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY gateway ./gateway
COPY templates ./templates
COPY static ./static
COPY migrations ./migrations
RUN pip wheel --no-deps -w /wheels .

# Stage 2 installs it: nothing of the source tree is needed at run time.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATA_DIR=/data \
    DATABASE_URL=sqlite+aiosqlite:////data/gateway.db
COPY --from=build /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data gateway \
    && mkdir -p /data && chown gateway /data
USER gateway
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os,sys,urllib.request; port=os.environ.get('GATEWAY_PORT','8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"

# `python -m gateway` is `serve`; SIGTERM ends it within GATEWAY_SHUTDOWN_TIMEOUT.
CMD ["python", "-m", "gateway"]
