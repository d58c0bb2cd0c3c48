"""URLs to `include()`: `path("inotifier/", include("inotifier.urls"))` gives /inotifier/health/."""

from django.urls import path

from . import views

app_name = "inotifier"

urlpatterns = [path("health/", views.health, name="health")]
