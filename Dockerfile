# Easel: docker compose up (see compose.yaml), or
#   docker build -t easel . && docker run -v easel-data:/data -e DISCORD_TOKEN=... -e OPENAI_API_KEY=... easel
#
# The base image is pinned by digest, so a rebuild gets exactly the image that was reviewed, not
# whatever the tag points at that day. To update it (do so regularly: the image carries Debian's
# and Python's security fixes), look up the tag's current digest and replace both the tag and the
# digest below:
#   docker buildx imagetools inspect python:3.11-slim-bookworm   (the "Digest:" line)
# The pin below is python:3.11.10-slim-bookworm as published in October 2024; it was taken from a
# public record of that tag's digest without pulling it, so refresh it before the next release.
FROM python:3.11.10-slim-bookworm@sha256:5148c0e4bbb64271bca1d3322360ebf4bfb7564507ae32dd639322e4952a6b16

# EASEL_DATA: where the database and images go unless the config's [storage] path says otherwise,
# so a config mounted over the default one still keeps them on the /data volume.
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 EASEL_DATA=/data

WORKDIR /app
# The dependencies first, from pyproject.toml alone: a change to the code rebuilds only the layers
# after this one, and never downloads the dependencies (or torch) again. .ci/run runs these steps.
COPY pyproject.toml ./
COPY scripts/dependencies.py ./scripts/
# docker build --build-arg EXTRAS=local adds torch and diffusers for the local GPU renderer (run
# it with --gpus all). torch comes from TORCH_INDEX, PyTorch's own index of CUDA 12.4 builds by
# default, not whatever build PyPI would pick; for another CUDA (e.g. .../whl/cu126 for newer
# drivers and torch releases) or a CPU-only image (.../whl/cpu), pass --build-arg TORCH_INDEX=...
ARG EXTRAS=""
ARG TORCH_INDEX=https://download.pytorch.org/whl/cu124
RUN torch="$(python scripts/dependencies.py --torch "$EXTRAS")" \
    && if [ -n "$torch" ]; then \
        pip install --index-url "$TORCH_INDEX" "$torch" \
        && python -c 'import importlib.metadata as m; print("torch==" + m.version("torch"))' > /tmp/pins.txt; \
    else : > /tmp/pins.txt; fi \
    && python scripts/dependencies.py "$EXTRAS" > /tmp/requirements.txt \
    && pip install --constraint /tmp/pins.txt --requirement /tmp/requirements.txt \
    && rm /tmp/pins.txt /tmp/requirements.txt
# The constraint keeps that torch: a dependency asking for another fails the build instead of
# silently swapping in PyPI's.

# Then the code, installed without touching the dependencies.
COPY README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-deps --no-build-isolation .

# A non-root user owns only the data volume, and only it may read it (the database holds prompts
# and interaction tokens, the images members' results).
RUN useradd --create-home --uid 10001 easel && mkdir -m 0700 /data && chown easel /data
# The config stays root's and read-only: a compromised bot process cannot rewrite its own settings
# (an api_base pointing elsewhere, say) for the next start. It leaves [storage] path unset, so
# the database is $EASEL_DATA/easel.sqlite3.
COPY config.example.toml /app/config.toml
RUN chmod 0444 /app/config.toml

USER easel
VOLUME ["/data"]
# Until the bot serves a health endpoint, the check is check-config: the config loads and the data
# volume can be written. It does not see a lost Discord connection (the bot retries that itself).
HEALTHCHECK --interval=60s --timeout=20s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot", "check-config", "--config", "/app/config.toml"]
# Mount your own config over /app/config.toml (read-only: -v ./config.toml:/app/config.toml:ro), or
# pass DISCORD_TOKEN and OPENAI_API_KEY. Keep a mounted config unreadable to other users of the host.
# docker stop sends SIGTERM, which Easel handles like Ctrl-C: it stops taking work and closes cleanly.
CMD ["python", "-m", "bot", "--config", "/app/config.toml"]
