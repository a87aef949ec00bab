# TimeTracker Integrations Gateway: one async process beside TimeTracker.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8080 \
    GATEWAY_DATA_DIR=/data \
    DATABASE_URL=sqlite+aiosqlite:////data/gateway.db

WORKDIR /app
# Dependencies first, so code changes do not reinstall them.
COPY pyproject.toml README.md ./
COPY gateway/__init__.py gateway/__init__.py
RUN pip install .
# The application: package, migrations, templates and the committed, built CSS.
COPY gateway ./gateway
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static

RUN useradd --system --uid 10001 --home-dir /app gateway \
    && mkdir -p /data && chown gateway /data
USER gateway
VOLUME ["/data"]
EXPOSE 8080

HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD python -c "import os,sys,urllib.request; port=os.environ.get('GATEWAY_PORT','8080'); sys.exit(0 if urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=4).status == 200 else 1)"

# `python -m gateway` is `serve`; run from /app so migrations/templates/static are found.
CMD ["python", "-m", "gateway"]
