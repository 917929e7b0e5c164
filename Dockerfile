# syntax=docker/dockerfile:1
# Build: resolve the locked dependencies into a virtual environment.
FROM python:3.12-slim AS build
COPY --from=ghcr.io/astral-sh/uv:0.9 /uv /usr/local/bin/uv
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PROJECT_ENVIRONMENT=/opt/venv
WORKDIR /src
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY src ./src
RUN uv sync --frozen --no-dev --no-editable

# Run: the environment only, as an unprivileged user.
FROM python:3.12-slim
RUN useradd --create-home --uid 10001 atelier
COPY --from=build /opt/venv /opt/venv
COPY entrypoint.sh /usr/local/bin/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 ATELIER_HOST=0.0.0.0 ATELIER_PORT=8000
USER atelier
WORKDIR /home/atelier
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s \
  CMD python -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=2)" || exit 1
ENTRYPOINT ["entrypoint.sh"]
CMD ["atelier", "serve"]
