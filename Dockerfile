FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md celeryconfig.py ./
COPY bus ./bus
RUN pip install --no-cache-dir .
COPY routes ./routes
ENV BUS_ROUTES=/app/routes PYTHONUNBUFFERED=1
EXPOSE 8080 24224 24224/udp
CMD ["bus", "serve", "--bind", "0.0.0.0:8080", "--forward", "0.0.0.0:24224"]
