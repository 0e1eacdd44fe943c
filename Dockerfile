# Easel: docker build -t easel . && docker run -v easel-data:/data -e DISCORD_TOKEN=... -e OPENAI_API_KEY=... easel
#
# The base image is pinned by digest, so a rebuild gets exactly the image that was reviewed, not
# whatever the tag points at that day. To update it (do so regularly: the image carries Debian's
# and Python's security fixes), look up the tag's current digest and replace both the tag and the
# digest below:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line)
# The pin below is python:3.11.10-slim-bookworm as published in October 2024; it was taken from a
# public record of that tag's digest without pulling it, so refresh it before the next release.
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
# docker build --build-arg EXTRAS=local adds torch and diffusers for the local GPU renderer
# (run it with --gpus all; pip's default torch wheel for Linux bundles CUDA).
ARG EXTRAS=""
RUN pip install ".${EXTRAS:+[$EXTRAS]}"

# A non-root user owns only the data volume, and only it may read it (the database holds prompts
# and interaction tokens, the images members' results).
RUN useradd --create-home --uid 10001 easel && mkdir -m 0700 /data && chown easel /data
# The config stays root's and read-only: a compromised bot process cannot rewrite its own settings
# (an api_base pointing elsewhere, say) for the next start.
COPY config.example.toml /app/config.toml
RUN sed -i 's|^path = "data/easel.sqlite3"|path = "/data/easel.sqlite3"|' /app/config.toml \
    && chmod 0444 /app/config.toml

USER easel
VOLUME ["/data"]
# Mount your own config over /app/config.toml (read-only: -v ./config.toml:/app/config.toml:ro), or
# pass DISCORD_TOKEN and OPENAI_API_KEY. Keep a mounted config unreadable to other users of the host.
CMD ["python", "-m", "bot", "--config", "/app/config.toml"]
