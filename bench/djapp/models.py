"""``BenchEvent``: one row per inotify event, for the ORM baselines."""

from __future__ import annotations

from django.db import models


class BenchEvent(models.Model):
    path = models.TextField()
    mask = models.IntegerField()
    created = models.DateTimeField()

    class Meta:
        app_label = "djapp"

    def __str__(self) -> str:
        return f"{self.mask:#x} {self.path}"
