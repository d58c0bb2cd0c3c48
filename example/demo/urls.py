from django.contrib import admin
from django.urls import include, path
from django.views.generic import RedirectView

urlpatterns = [
    path("admin/", admin.site.urls),
    path("inotifier/", include("inotifier.urls")),  # /inotifier/health/: every daemon, 200 or 503
    path("", RedirectView.as_view(url="/admin/inotifier/watchpath/")),
]
