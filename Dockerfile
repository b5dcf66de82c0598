# One image for every role of aggregator: `aggregator run` (all in one, SQLite by default),
# `aggregator run --role worker`, `granian --interface wsgi --factory aggregator.wsgi:make_app` (web,
# the `server` extra; docker-compose.yml has the full command line), `aggregator db upgrade`.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
RUN useradd --system --home /var/lib/aggregator --create-home aggregator
WORKDIR /src
COPY pyproject.toml README.md ./
COPY aggregator ./aggregator
COPY migrations ./migrations
COPY data ./data
RUN pip install '.[postgres,redis,server]' && rm -rf /src
USER aggregator
WORKDIR /var/lib/aggregator
ENV AGGREGATOR_DATABASE_URL=sqlite:////var/lib/aggregator/aggregator.db \
    AGGREGATOR_HOST=0.0.0.0 \
    AGGREGATOR_PORT=8080
EXPOSE 8080
CMD ["aggregator", "run"]
