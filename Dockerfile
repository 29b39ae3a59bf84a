# pbkv in a container: slim, runs as an unprivileged user, one process per container.
#   docker build -t pbkv .
#   docker compose up          (compose.yaml: a view service and three servers)
# Stage 1 builds the wheel; stage 2 installs it (and its runtime dependencies) only.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --create-home --home-dir /var/lib/pbkv pbkv
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER pbkv
WORKDIR /var/lib/pbkv
# The data directory (compose.yaml mounts a named volume here): created by pbkv, so a new volume
# starts owned by pbkv; a mount point absent from the image would be root's, and unwritable.
RUN mkdir -p /var/lib/pbkv/data
# 7000: the protocol port (view service or server); 9100: Prometheus metrics.
EXPOSE 7000 9100
ENTRYPOINT ["pbkv"]
CMD ["--help"]
