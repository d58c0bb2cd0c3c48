"""The running part of django-inotifier: the daemon, its reconcile loop and its helpers."""
