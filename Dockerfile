# Easel: docker build -t easel . && docker run -v easel-data:/data -e DISCORD_TOKEN=... -e OPENAI_API_KEY=... easel
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
# docker build --build-arg EXTRAS=local adds torch and diffusers for the local GPU renderer
# (run it with --gpus all; pip's default torch wheel for Linux bundles CUDA).
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

# A non-root user owns only the data volume.
RUN useradd --create-home --uid 10001 easel && mkdir /data && chown easel /data
COPY --chown=easel config.example.toml /app/config.toml
RUN sed -i 's|^path = "data/easel.sqlite3"|path = "/data/easel.sqlite3"|' /app/config.toml

USER easel
VOLUME ["/data"]
# Mount your own config over /app/config.toml, or pass DISCORD_TOKEN and OPENAI_API_KEY.
CMD ["python", "-m", "bot", "--config", "/app/config.toml"]
