FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY bus ./bus
RUN pip install --no-cache-dir .
COPY routes ./routes
# The bus runs as a user of its own, never root: a hole in the ingress or a route's TLS stack
# gets no more than this user can do. /data is Flower's volume (a new named volume takes the
# owner of this directory). Files under /app stay root's, so the code cannot be rewritten.
RUN useradd --system --uid 10001 --no-create-home bus && mkdir /data && chown bus /data
USER bus
ENV BUS_ROUTES=/app/routes PYTHONUNBUFFERED=1
EXPOSE 8080 24224 24224/udp
CMD ["bus", "serve", "--bind", "0.0.0.0:8080", "--forward", "0.0.0.0:24224"]
