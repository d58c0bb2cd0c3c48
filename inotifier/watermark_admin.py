"""The catch-up watermarks in the admin: read-only, as the daemons write them."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.translation import gettext_lazy as _

from .admin_tools import OwnFiltersOnly, path_html, show_time, shown
from .models import Watermark


class WatermarkAdmin(OwnFiltersOnly):
    """How far each host delivered each watch with ``catch_up``; written by the daemons only.

    Deleting a mark (the delete permission) makes the watch's next start on
    that host a first start: ``"changed"`` then delivers nothing.
    """

    list_display = ("path_display", "host_display", "mark_display", "updated_display", "key")
    list_filter = ("host",)
    search_fields = ("path", "key")
    ordering = ("host", "path")
    fields = ("path_display", "host_display", "key", "mark_display", "updated_display")
    readonly_fields = fields

    # -- what is shown (escaped: paths and host names come from outside) ----------------------

    @admin.display(description=_("path"), ordering="path")
    def path_display(self, obj: Watermark) -> str:
        return path_html(obj.path)

    @admin.display(description=_("host"), ordering="host")
    def host_display(self, obj: Watermark) -> str:
        return shown(obj.host)

    @admin.display(description=_("delivered up to"), ordering="mark")
    def mark_display(self, obj: Watermark) -> str:
        return show_time(obj.mark)

    @admin.display(description=_("updated"), ordering="updated")
    def updated_display(self, obj: Watermark) -> str:
        return show_time(obj.updated)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
