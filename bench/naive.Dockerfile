# The comparison point for `make bench`, not for use: the single-stage Dockerfile many tutorials
# show. Build tools stay in, pip's cache stays in, and the code is copied before the
# dependencies are installed, so any change reinstalls them.
ARG BASE_IMAGE=python:3.13-slim-trixie
FROM ${BASE_IMAGE}
RUN apt-get update && apt-get install -y build-essential libpq-dev python3-dev python3-venv
WORKDIR /app
COPY . .
RUN --mount=type=secret,id=ca \
    if [ -f /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi; \
    python3 -m venv /venv && /venv/bin/pip install -r requirements.txt
ENV PATH=/venv/bin:$PATH
CMD ["gunicorn", "--config", "gunicorn.conf.py", "config.wsgi"]
