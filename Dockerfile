# passback: the package built as a wheel, installed into a slim image with locked dependencies.
#
#   docker build -t passback .
#   docker run passback                    # passback serve --host 0.0.0.0 --port 8000
#   docker run passback migrate            # the same image runs `worker` and `migrate` too
#
# Settings come from the environment (PASSBACK_*, see .env.example); outside development
# PASSBACK_API_KEYS and PASSBACK_KEY_ENCRYPTION_KEY are required (the start refuses without).

FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml ./
COPY app ./app
RUN pip install --no-cache-dir --disable-pip-version-check --no-compile --upgrade pip \
 && pip wheel --no-cache-dir --disable-pip-version-check --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PASSBACK_VAR_DIR=/var/lib/passback
# A system user without a shell; its home is the writable var dir (SQLite, development files).
RUN useradd --system --user-group --uid 10001 --shell /usr/sbin/nologin \
        --home-dir /var/lib/passback --create-home passback \
 && chmod 0750 /var/lib/passback

# Dependencies first, exactly as locked (versions and hashes): this layer stays cached until
# requirements.lock changes, whatever happens to the code.
COPY requirements.lock /tmp/requirements.lock
RUN pip install --require-hashes --no-deps -r /tmp/requirements.lock && rm /tmp/requirements.lock

# Then the package itself, not editable, with its migrations inside it.
COPY --from=build /wheels/ /tmp/wheels/
RUN pip install --no-deps /tmp/wheels/*.whl && rm -rf /tmp/wheels

USER passback
WORKDIR /var/lib/passback
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/readyz', timeout=4).status != 200)"]
ENTRYPOINT ["passback"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]
