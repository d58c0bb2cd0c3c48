"""Settings for the test suite and for daemons the tests start; read through django-environ."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import django
import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()

SECRET_KEY = env("SECRET_KEY", default="tests-only-not-secret")
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = ["127.0.0.1", "localhost", "testserver"]
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "inotifier",
    "tests.testapp",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "tests.urls"
STATIC_URL = "static/"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

# Per test run (pid), so parallel runs on one machine never share a test database;
# daemons started by the tests get the test database's URL explicitly.
_run = os.environ.get("INOTIFIER_TEST_RUN", str(os.getpid()))
_sqlite_default = f"sqlite:////tmp/inotifier-tests-{_run}.sqlite3"
DATABASES = {"default": env.db_url_config(os.environ.get("DATABASE_URL") or _sqlite_default)}
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    # A file, not memory: the daemon the tests start is another process.
    DATABASES["default"]["TEST"] = {"NAME": DATABASES["default"]["NAME"]}
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 30
else:
    DATABASES["default"]["TEST"] = {"NAME": f"test_inotifier_{_run}"}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
# Tests only: a fast hasher (Django's advice for test settings). PBKDF2's cost is
# a quarter of a second per user made or logged in; the admin tests make hundreds.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

INOTIFIER_WATCH_PATHS = env.json("INOTIFIER_WATCH_PATHS", default=[])
INOTIFIER_PID_FILE = env("INOTIFIER_PID_FILE", default=None)
INOTIFIER_DAEMON_STDOUT = env("INOTIFIER_DAEMON_STDOUT", default=None)
INOTIFIER_DAEMON_STDERR = env("INOTIFIER_DAEMON_STDERR", default=None)
INOTIFIER_POLL_INTERVAL = env.float("INOTIFIER_POLL_INTERVAL", default=2.0)
INOTIFIER_RESYNC_INTERVAL = env.float("INOTIFIER_RESYNC_INTERVAL", default=300.0)
INOTIFIER_HOSTNAME = env("INOTIFIER_HOSTNAME", default=None)
INOTIFIER_LEASE_TIMEOUT = env.float("INOTIFIER_LEASE_TIMEOUT", default=30.0)
INOTIFIER_EVENT_LOG = env.bool("INOTIFIER_EVENT_LOG", default=False)
# The app's defaults unless a test's daemon is given other values.
INOTIFIER_EVENT_LOG_BUFFER = env.int("INOTIFIER_EVENT_LOG_BUFFER", default=None)
if "INOTIFIER_EVENT_LOG_BUFFER_BYTES" in os.environ:
    INOTIFIER_EVENT_LOG_BUFFER_BYTES = env.int("INOTIFIER_EVENT_LOG_BUFFER_BYTES")
INOTIFIER_EVENT_LOG_FLUSH_INTERVAL = env.float("INOTIFIER_EVENT_LOG_FLUSH_INTERVAL", default=0.25)
INOTIFIER_EVENT_LOG_MAX_AGE = env.float("INOTIFIER_EVENT_LOG_MAX_AGE", default=7 * 24 * 3600)
INOTIFIER_EVENT_LOG_MAX_ROWS = env.int("INOTIFIER_EVENT_LOG_MAX_ROWS", default=100_000)
INOTIFIER_PROCESSORS = env.list("INOTIFIER_PROCESSORS", default=None)
# The outbox: the app's defaults unless a test's daemon is given other values.
for _name, _cast in {
    "INOTIFIER_OUTBOX_BUFFER": int,
    "INOTIFIER_OUTBOX_FLUSH_INTERVAL": float,
    "INOTIFIER_OUTBOX_POLL_INTERVAL": float,
    "INOTIFIER_OUTBOX_PUBLISH_TIMEOUT": float,
    "INOTIFIER_OUTBOX_MAX_ATTEMPTS": int,
}.items():
    if _name in os.environ:
        globals()[_name] = _cast(os.environ[_name])
INOTIFIER_ALLOWED_ROOTS = env.list("INOTIFIER_ALLOWED_ROOTS", default=None)
# Metrics: a real port (0: any free one, logged) and/or a textfile, for daemons the tests start.
INOTIFIER_METRICS_PORT = env.int("INOTIFIER_METRICS_PORT", default=None)
INOTIFIER_METRICS_TEXTFILE = env("INOTIFIER_METRICS_TEXTFILE", default=None)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"inotifier": {"handlers": ["stderr"], "level": "INFO"}},
}

# Django's tasks framework: django.tasks on Django 6, the django-tasks backport before it, and a
# database backend (django-tasks-db) with a real worker where it supports this Django.
_TASKS_PACKAGE = None
if importlib.util.find_spec("django.tasks") is not None:
    _TASKS_PACKAGE = "django.tasks"
elif importlib.util.find_spec("django_tasks") is not None:
    _TASKS_PACKAGE = "django_tasks"
    INSTALLED_APPS.append("django_tasks")
if _TASKS_PACKAGE is not None:
    TASKS = {
        "default": {"BACKEND": f"{_TASKS_PACKAGE}.backends.immediate.ImmediateBackend"},
        "dummy": {"BACKEND": f"{_TASKS_PACKAGE}.backends.dummy.DummyBackend"},
    }
    if django.VERSION >= (5, 2) and importlib.util.find_spec("django_tasks_db") is not None:
        INSTALLED_APPS.append("django_tasks_db")
        TASKS["db"] = {"BACKEND": "django_tasks_db.DatabaseBackend"}
