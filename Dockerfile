# The modwatch worker image (also runs `modwatch replay`, `backtest`, `rules test` ...).
#   docker build -t modwatch .
#   docker run --rm -e MODWATCH_BOOTSTRAP_SERVERS=kafka:9092 -p 9464:9464 modwatch worker
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies and the package first, so editing the rules does not reinstall them.
COPY pyproject.toml README.md ./
COPY streams ./streams
RUN pip install .

# Rules, scoring, fixtures and the example log (for the replay job and `modwatch rules test`).
COPY config/rules.yaml config/scoring.yaml ./config/
COPY config/fixtures ./config/fixtures
COPY examples ./examples

RUN useradd --system --uid 10001 --home-dir /data --create-home modwatch
USER modwatch

# In a container the metrics endpoint must listen beyond loopback for Prometheus to scrape it;
# Faust's own web server stays on 127.0.0.1. Faust keeps its local data under /data.
ENV MODWATCH_RULES_DIR=/app/config \
    MODWATCH_DATA_DIR=/data/faust \
    MODWATCH_METRICS_HOST=0.0.0.0 \
    MODWATCH_METRICS_PORT=9464
EXPOSE 9464
VOLUME ["/data"]

ENTRYPOINT ["modwatch"]
CMD ["worker"]
