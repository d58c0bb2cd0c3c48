"""Settings of the demo project, read from the environment through django-environ."""

from __future__ import annotations

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent
env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional file of VAR=value lines

SECRET_KEY = env("SECRET_KEY", default="demo-only-not-secret")
DEBUG = env.bool("DEBUG", default=True)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])
USE_TZ = True
TIME_ZONE = env("TIME_ZONE", default="UTC")
PROJECT_PATH = str(BASE_DIR)  # the pid file is PROJECT_PATH/inotifier.pid ...
INOTIFIER_PID_FILE = env("INOTIFIER_PID_FILE", default=None)  # ... unless this names another

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "inotifier",
    "demo",
]
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]
ROOT_URLCONF = "demo.urls"
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
STATIC_URL = "static/"
DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
DATABASES["default"].setdefault("OPTIONS", {})
if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
    DATABASES["default"]["OPTIONS"].setdefault("timeout", 20)
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

WATCHED = env("DEMO_WATCHED_DIR", default=str(BASE_DIR / "watched"))
INOTIFIER_WATCH_PATHS = [
    (
        f"{WATCHED}/inbox",
        "IN_CREATE|IN_CLOSE_WRITE|IN_MOVED_TO|IN_DELETE",
        "inotifier.event_processors.AllEventsPrinter",
    ),
    (
        f"{WATCHED}/uploads",
        "IN_CREATE|IN_MOVED_FROM|IN_MOVED_TO",
        "inotifier.event_processors.CreateViaChunksSignaler",
    ),
]
INOTIFIER_ALLOWED_ROOTS = env.list("INOTIFIER_ALLOWED_ROOTS", default=[WATCHED])
INOTIFIER_EVENT_LOG = env.bool("INOTIFIER_EVENT_LOG", default=True)
INOTIFIER_POLL_INTERVAL = env.float("INOTIFIER_POLL_INTERVAL", default=1.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "inotifier": {"handlers": ["stderr"], "level": "INFO"},
        "demo": {"handlers": ["stderr"], "level": "INFO"},
    },
}
