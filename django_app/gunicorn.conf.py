"""gunicorn settings, read from the environment so that one image fits every instance size."""

import os
from collections.abc import Mapping

import environ
from pythonjsonlogger.json import JsonFormatter

env = environ.Env()

wsgi_app = "config.wsgi:application"
# TCP inside the container, for the image's HEALTHCHECK; and a unix socket when the deploy names
# one (in a directory it mounts from the host), which is what the host's nginx connects to.
bind = [env.str("GUNICORN_BIND", default="0.0.0.0:8000")]
if unix_socket := env.str("GUNICORN_UNIX_SOCKET", default=""):
    bind.append(f"unix:{unix_socket}")
# The affinity mask, unlike cpu_count(), honours a container's cpuset.
workers = env.int("GUNICORN_WORKERS", default=2 * len(os.sched_getaffinity(0)) + 1)
threads = env.int("GUNICORN_THREADS", default=1)
timeout = env.int("GUNICORN_TIMEOUT", default=30)
# On SIGTERM (docker stop) workers finish in-flight requests for this long; it must stay below the
# deploy's stop timeout, or Docker kills them mid-request.
graceful_timeout = env.int("GUNICORN_GRACEFUL_TIMEOUT", default=20)
keepalive = env.int("GUNICORN_KEEPALIVE", default=5)
# Recycling workers now and then bounds any slow leak; the jitter keeps them from restarting together.
max_requests = env.int("GUNICORN_MAX_REQUESTS", default=2000)
max_requests_jitter = env.int("GUNICORN_MAX_REQUESTS_JITTER", default=200)

# Import the app once in the master: a configuration error stops the container at once instead of
# every worker failing to boot, and workers share the imported code's memory.
preload_app = True
# Worker heartbeats on a tmpfs: the root filesystem is read-only, and a disk-backed file can stall workers.
worker_tmp_dir = env.str("GUNICORN_WORKER_TMP_DIR", default="/dev/shm")
# The control socket would go under $HOME, which does not exist on a read-only root; the rollout
# replaces containers instead of steering gunicorn at run time.
control_socket_disable = True

# Over TCP, nginx would reach the container from the Docker bridge gateway (172.17.0.1 and
# friends); gunicorn trusts a unix socket's peer by itself.
forwarded_allow_ips = env.str("GUNICORN_FORWARDED_ALLOW_IPS", default="127.0.0.1,::1,172.16.0.0/12")

loglevel = env.str("GUNICORN_LOG_LEVEL", default="info")
access_log_format = "%(m)s %(U)s %(s)s %(M)sms"


# Access log fields and the gunicorn atoms they come from.
ACCESS_FIELDS = {
    "remote_addr": "h",
    "forwarded_for": "{x-forwarded-for}i",
    "method": "m",
    "path": "U",
    "query": "q",
    "status": "s",
    "bytes": "B",
    "duration_ms": "M",
    "user_agent": "a",
}


class AccessJsonFormatter(JsonFormatter):
    """gunicorn passes its access atoms as the record's args; this lifts the useful ones into fields."""

    def add_fields(self, log_data, record, message_dict):
        super().add_fields(log_data, record, message_dict)
        if isinstance(record.args, Mapping):
            log_data.update({field: record.args[atom] for field, atom in ACCESS_FIELDS.items()})
            log_data["status"] = int(log_data["status"])


# Same fields as Django's LOGGING (config/settings/base.py), so every line of the container log parses alike.
_json = {
    "fmt": "%(levelname)s %(name)s %(message)s",
    "rename_fields": {"levelname": "level", "name": "logger"},
}
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": JsonFormatter, **_json, "timestamp": "time"},
        "access": {"()": AccessJsonFormatter, **_json, "timestamp": "time"},
    },
    "handlers": {
        "stdout": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "json"},
        "access": {"class": "logging.StreamHandler", "stream": "ext://sys.stdout", "formatter": "access"},
    },
    "root": {"level": "INFO", "handlers": ["stdout"]},
    "loggers": {
        "gunicorn.error": {"level": loglevel.upper(), "handlers": ["stdout"], "propagate": False},
        "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
    },
}
