"""The health view: every host's daemon as JSON, HTTP 200 when all that should run do, 503 when not."""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_safe

from .conf import app_settings
from .health import assess, health_json

#: Longest host name a query may ask about (``DaemonStatus.host``).
HOST_MAX = 255


@never_cache
@require_safe
def health(request: HttpRequest) -> JsonResponse:
    """Answer whether the daemons that should run do (``?host=NAME``: that host only).

    Users with the *view daemon status* permission get every daemon's pid and
    counters; anyone else gets 403, unless INOTIFIER_HEALTH_PUBLIC opens the
    view to probes, which then get the verdict per host without them. No
    answer ever names a watched path. Two queries, whatever the number of watches.
    """
    user = getattr(request, "user", None)
    detail = bool(user is not None and user.has_perm("inotifier.view_daemonstatus"))
    if not detail and not app_settings.INOTIFIER_HEALTH_PUBLIC:
        return JsonResponse(
            {"error": "forbidden: staff with the view daemon status permission only"}, status=403
        )
    host = request.GET.get("host")
    if host is not None and (not host or len(host) > HOST_MAX or "\x00" in host):
        return JsonResponse({"error": "host: a host name of 1 to 255 characters, without NUL"}, status=400)
    result = assess(host)
    return JsonResponse(health_json(result, detail), status=200 if result.healthy else 503)
