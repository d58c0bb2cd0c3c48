"""The WatchPath admin form: events as checkboxes, the processor from the allowlist."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from .masks import ALL_EVENTS, BITS, EVENT_NAMES, FLAG_NAMES, KERNEL_EVENT_NAMES
from .models import WatchPath
from .specs import SpecError, processor_allowlist, validate_processor_allowed

ALL = "ALL_EVENTS"
#: Human labels for the checkboxes, in the order shown.
EVENT_LABELS: dict[str, Any] = {
    ALL: _("All events"),
    "IN_ACCESS": _("IN_ACCESS: file read"),
    "IN_ATTRIB": _("IN_ATTRIB: metadata changed"),
    "IN_CLOSE_NOWRITE": _("IN_CLOSE_NOWRITE: file closed, not written"),
    "IN_CLOSE_WRITE": _("IN_CLOSE_WRITE: file closed after writing"),
    "IN_CREATE": _("IN_CREATE: file or directory created"),
    "IN_DELETE": _("IN_DELETE: file or directory deleted"),
    "IN_DELETE_SELF": _("IN_DELETE_SELF: the watched path deleted"),
    "IN_MODIFY": _("IN_MODIFY: file written"),
    "IN_MOVE_SELF": _("IN_MOVE_SELF: the watched path moved"),
    "IN_MOVED_FROM": _("IN_MOVED_FROM: moved out (rename source)"),
    "IN_MOVED_TO": _("IN_MOVED_TO: moved in (rename target)"),
    "IN_OPEN": _("IN_OPEN: file opened"),
    "IN_IGNORED": _("IN_IGNORED: watch removed by the kernel"),
    "IN_Q_OVERFLOW": _("IN_Q_OVERFLOW: queue overflow"),
    "IN_UNMOUNT": _("IN_UNMOUNT: file system unmounted"),
    "IN_DONT_FOLLOW": _("IN_DONT_FOLLOW (flag): do not follow a symlink"),
    "IN_EXCL_UNLINK": _("IN_EXCL_UNLINK (flag): ignore unlinked children"),
    "IN_ONLYDIR": _("IN_ONLYDIR (flag): only watch directories"),
}
MASK_CHOICES = [(name, EVENT_LABELS[name]) for name in (ALL, *EVENT_NAMES, *KERNEL_EVENT_NAMES, *FLAG_NAMES)]
#: The events ticked on a new watch: a file written, moved in, created or deleted.
ADD_FORM_EVENTS = ("IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_MOVED_TO")


def mask_to_names(mask: int) -> list[str]:
    """Return the checkbox values for an int mask."""
    names = [ALL] if mask & ALL_EVENTS == ALL_EVENTS else []
    return names + [name for name, _label in MASK_CHOICES[1:] if mask & BITS[name]]


def names_to_mask(names: list[str]) -> int:
    """Return the int mask for the ticked checkboxes."""
    mask = ALL_EVENTS if ALL in names else 0
    for name in names:
        if name != ALL:
            mask |= BITS[name]
    return mask


class EventMaskField(forms.MultipleChoiceField):
    """Checkboxes of event names whose cleaned value is the integer mask."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("choices", MASK_CHOICES)
        super().__init__(**kwargs)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, int):
            return mask_to_names(value)
        return value

    def has_changed(self, initial: Any, data: Any) -> bool:
        # The row's initial value is its int: compared as names (saving a change form needs it).
        return super().has_changed(self.prepare_value(initial), data)

    def clean(self, value: Any) -> int:
        names = super().clean(value)
        mask = names_to_mask(list(names))
        if not mask & (ALL_EVENTS | BITS["IN_IGNORED"] | BITS["IN_Q_OVERFLOW"] | BITS["IN_UNMOUNT"]):
            raise forms.ValidationError(_("Tick at least one event."), code="no_event")
        return mask


class WatchPathForm(forms.ModelForm):
    """Edit a WatchPath: the browser sees names, the database gets the integer."""

    mask = EventMaskField(label=_("Events"), help_text=_("The events to report."))
    exclusive = forms.BooleanField(
        label=WatchPath._meta.get_field("exclusive").verbose_name,
        help_text=WatchPath._meta.get_field("exclusive").help_text,
        required=False,
    )
    processor = forms.ChoiceField(
        label=_("Processor"),
        choices=(),
        help_text=_("The event processor (INOTIFIER_PROCESSORS lists the ones this site allows)."),
    )

    class Meta:
        model = WatchPath
        fields = (
            "path",
            "mask",
            "processor",
            "enabled",
            "recursive",
            "auto_add",
            "exclude",
            "host",
            "exclusive",
            "event_log",
            "settle",
            "settle_max",
            "catch_up",
            "description",
        )
        widgets = {
            "path": forms.TextInput(attrs={"size": 80}),
            "exclude": forms.Textarea(attrs={"rows": 3, "cols": 60}),
            "description": forms.Textarea(attrs={"rows": 2, "cols": 60}),
        }

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        allowed = processor_allowlist()
        choices = [(p, p) for p in allowed]
        current = self.instance.processor if self.instance.pk else None
        if current and current not in allowed:
            # Shown so the operator sees it, but cleaning still refuses it.
            choices.append((current, _("%s (not allowed)") % current))
        processor_field = self.fields["processor"]
        assert isinstance(processor_field, forms.ChoiceField)
        processor_field.choices = choices
        if not self.instance.pk:
            self.fields["processor"].initial = allowed[0] if allowed else None
            # The events people act on; the model's default (every event, IN_ACCESS and
            # IN_OPEN included) would fill the event log with reads.
            self.fields["mask"].initial = list(ADD_FORM_EVENTS)
        else:
            self.fields["mask"].initial = mask_to_names(int(self.instance.mask or ALL_EVENTS))

    def clean_processor(self) -> str:
        value = str(self.cleaned_data["processor"])
        try:
            validate_processor_allowed(value)
        except SpecError as exc:
            raise forms.ValidationError(str(exc), code="not_allowed") from None
        return value
