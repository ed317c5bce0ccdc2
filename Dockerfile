# passback: slim image, non-root, `passback serve` as the entry point.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PASSBACK_VAR_DIR=/var/lib/passback

WORKDIR /srv/passback
RUN useradd --system --home-dir /var/lib/passback --create-home passback

COPY pyproject.toml ./
COPY app ./app
RUN pip install --no-compile -e . && chown -R passback /var/lib/passback

USER passback
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status == 200 else 1)"
ENTRYPOINT ["passback", "serve", "--host", "0.0.0.0", "--port", "8000"]
