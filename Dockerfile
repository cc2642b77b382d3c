# syntax=docker/dockerfile:1
# BackApp server. Build:  docker build -t backapp-server .
# Run (see docs/deploy.md for production: PostgreSQL, S3, several processes behind a TLS proxy):
#   docker run -p 8000:8000 -v backapp-data:/var/lib/backapp backapp-server
# Configuration is all environment variables (README, "Configuration reference").

FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md piccolo_conf.py ./
COPY backend ./backend
COPY desktop_agent ./desktop_agent
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[redis]"

FROM python:3.11-slim-bookworm
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BACKAPP_HOST=0.0.0.0 \
    BACKAPP_PORT=8000 \
    BACKAPP_DATA_DIR=/var/lib/backapp
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links /wheels "backapp[redis]" \
    && useradd --system --uid 10001 --home-dir /var/lib/backapp --shell /usr/sbin/nologin backapp \
    && install -d -o backapp -g backapp -m 0750 /var/lib/backapp
USER backapp
WORKDIR /var/lib/backapp
VOLUME ["/var/lib/backapp"]
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('BACKAPP_PORT', '8000')}/api/health\", timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["backapp"]
CMD ["serve"]
