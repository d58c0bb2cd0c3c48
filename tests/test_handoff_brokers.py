"""The hand-off with real engines: Celery workers on a Redis the test owns and on RabbitMQ, django-tasks-db.

Each test starts what it needs as processes of its own: a Redis server on a
port of its own (so it can be stopped and started), a Celery worker, the
daemon, a ``db_worker``; RabbitMQ is the machine's (127.0.0.1:5672), each test
on a queue of its own.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from inotifier.outbox import OutboxEntry
from inotifier.states import HandoffState

from .conftest import ROOT, DaemonProcess, wait_for
from .task_record import read_records

celery = pytest.importorskip("celery")
pytest.importorskip("redis")

#: Writes files f00000.txt ... as fast as it can (a process of its own, like a real producer).
WRITER = (
    "import os, sys\n"
    "for i in range(int(sys.argv[2])):\n"
    "    with open(os.path.join(sys.argv[1], f'f{i:05}.txt'), 'w') as fh: fh.write('x')\n"
)
REDIS_SERVER = "/usr/bin/redis-server"
#: Queued messages survive ``stop()`` / ``start()`` (SHUTDOWN SAVE, then loaded from --dir).
REDIS_MORE = ("--daemonize", "no", "--dbfilename", "dump.rdb", "--dir")
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672//"
CELERY_WORKER = (
    sys.executable,
    "-m",
    "celery",
    "-A",
    "tests.celeryapp",
    "worker",
    "--pool=solo",
    "-l",
    "warning",
)
CELERY_WORKER += ("--without-gossip", "--without-mingle", "--without-heartbeat")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


class RedisServer:
    """A redis-server of the test's own: ``stop()`` shuts it down (saving its data), ``start()`` again."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.dir = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        args = ("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, *args, *REDIS_MORE, str(self.dir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), 20)

    def stop(self) -> None:
        """Shut down cleanly: queued messages are saved and come back with ``start()``."""
        assert self.proc is not None
        subprocess.run(
            ["redis-cli", "-p", str(self.port), "shutdown", "save"], capture_output=True, timeout=30
        )
        self.proc.wait(30)

    def freeze(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.close()


class Worker:
    """A Celery worker of ``tests.celeryapp`` as a process, recording every event it runs."""

    def __init__(self, broker: str, queue: str, record: Path, log: Path) -> None:
        self.env = dict(
            os.environ,
            PYTHONPATH=str(ROOT),
            INOTIFIER_TEST_BROKER=broker,
            INOTIFIER_TEST_QUEUE=queue,
            INOTIFIER_TEST_TASK_RECORD=str(record),
        )
        self.record = record
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [*CELERY_WORKER, "-Q", self.env["INOTIFIER_TEST_QUEUE"], "-n", f"t{uuid.uuid4().hex[:8]}@%h"],
                env=self.env,
                cwd=ROOT,
                stdout=log,
                stderr=log,
            )

    def records(self) -> list[tuple[str, str]]:
        return read_records(self.record)

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


@pytest.fixture
def worker_for(tmp_path: Path) -> Iterator[Any]:
    started: list[Worker] = []

    def start(broker: str, queue: str) -> Worker:
        worker = Worker(broker, queue, tmp_path / "tasks.tsv", tmp_path / "worker.log")
        worker.start()
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.close()
        print("---- worker log ----")
        print(worker.log.read_text(errors="replace")[-5000:])


def burst(directory: Path, n: int, during: Any = None, at: int = 0) -> list[str]:
    """Write ``n`` files (closed after writing); call ``during()`` after the ``at``-th; return their paths."""
    names = []
    for i in range(n):
        path = directory / f"f{i:05}.txt"
        with open(path, "w") as fh:
            fh.write("x")
        names.append(str(path))
        if during is not None and i == at:
            during()
    return names


def use_celery(daemon: DaemonProcess, broker: str, queue: str, watch: Path) -> None:
    daemon.watch_paths = [[str(watch), "IN_CLOSE_WRITE", "tests.handoff_tasks.CeleryRecorder"]]
    daemon.env_extra.update(
        {
            "INOTIFIER_TEST_BROKER": broker,
            "INOTIFIER_TEST_QUEUE": queue,
            "INOTIFIER_OUTBOX_POLL_INTERVAL": "0.5",
            "INOTIFIER_OUTBOX_PUBLISH_TIMEOUT": "3",
        }
    )


# -- Celery on Redis --------------------------------------------------------------------------


def test_every_file_of_a_burst_is_processed_with_the_broker_stopped_10_s_in_the_middle(
    daemon: DaemonProcess, watch_dir: Path, redis_server: RedisServer, worker_for: Any
) -> None:
    queue = f"inotifier-{uuid.uuid4().hex[:8]}"
    worker = worker_for(redis_server.url, queue)
    use_celery(daemon, redis_server.url, queue, watch_dir)
    daemon.start()
    outage: dict[str, float] = {}

    def stop_broker_for_10_s() -> None:
        def run() -> None:
            redis_server.stop()
            outage["stopped"] = time.monotonic()
            time.sleep(10)
            redis_server.start()
            outage["started"] = time.monotonic()

        threading.Thread(target=run, daemon=True).start()

    started = time.monotonic()
    names = burst(watch_dir, 10_000, stop_broker_for_10_s, at=3_000)
    wait_for(lambda: "started" in outage, 60)

    def processed() -> set[str]:
        return {path for _id, path in worker.records()}

    wait_for(lambda: len(processed()) >= len(names), 240, interval=0.5)
    elapsed = time.monotonic() - started
    records = worker.records()
    assert processed() == set(names)
    ids = Counter(event_id for event_id, _path in records)
    paths = Counter(path for _id, path in records)
    duplicates = sum(n - 1 for n in paths.values())
    print(
        f"10 000 files, broker down {outage['started'] - outage['stopped']:.1f} s: every file processed "
        f"in {elapsed:.1f} s; {len(records)} task runs, {duplicates} duplicates "
        f"({sum(n - 1 for n in ids.values())} with the same event id)"
    )
    stderr = daemon.stderr_text()
    assert "outbox: celery unavailable for task tests.celeryapp.record" in stderr
    assert stderr.count("celery unavailable for task") == 1  # once per outage, not per row
    assert "accepts again after" in stderr
    wait_for(lambda: OutboxEntry.objects.filter(state=HandoffState.DONE).count() == 10_000, 60)
    assert not OutboxEntry.objects.filter(state=HandoffState.DEAD).exists()
    assert daemon.stop().returncode == 0


def test_a_frozen_broker_costs_at_most_the_publish_timeout(
    redis_server: RedisServer, monkeypatch: Any
) -> None:
    from inotifier.handoff.engines import CeleryEngine

    monkeypatch.setenv("INOTIFIER_TEST_BROKER", redis_server.url)
    app = celery.Celery("frozen", broker=redis_server.url)

    @app.task(name="frozen.task")
    def frozen_task(event: Any) -> None: ...

    engine = CeleryEngine(frozen_task, publish_timeout=1.0)
    engine.send([{"id": "a", "pathname": "/x"}])  # connected and accepted
    redis_server.freeze()
    try:
        started = time.monotonic()
        with pytest.raises(engine.transient):
            engine.send([{"id": "b", "pathname": "/y"}])
        assert time.monotonic() - started < 10  # a publish never blocks the dispatcher for long
    finally:
        redis_server.thaw()
    engine.send([{"id": "c", "pathname": "/z"}])  # a new connection once the broker answers
    engine.close()


# -- Celery on RabbitMQ: publisher confirms ------------------------------------------------------


needs_rabbitmq = pytest.mark.skipif(not port_open(5672), reason="RabbitMQ is not running at 127.0.0.1:5672")


@needs_rabbitmq
def test_on_rabbitmq_a_message_counts_as_accepted_once_the_broker_confirmed_it() -> None:
    from kombu import Connection

    from inotifier.handoff.engines import CeleryEngine

    queue = f"inotifier-{uuid.uuid4().hex[:8]}"
    app = celery.Celery("confirms", broker=RABBITMQ_URL)
    app.conf.task_default_queue = queue

    @app.task(name="confirms.task")
    def confirmed(event: Any) -> None: ...

    engine = CeleryEngine(confirmed, publish_timeout=5.0)
    try:
        engine.send([{"id": f"e{i}", "pathname": f"/srv/{i}"} for i in range(3)])
        channel = engine._connection.default_channel
        assert channel._confirm_selected  # publisher confirms on: each publish waited for the broker's ack
    finally:
        engine.close()
    with Connection(RABBITMQ_URL) as conn:
        channel = conn.default_channel
        ids = []
        try:
            for _ in range(3):
                message = channel.basic_get(queue, no_ack=True)
                assert message is not None
                ids.append(message.headers["id"])
        finally:
            channel.queue_delete(queue)
    assert ids == ["e0", "e1", "e2"]  # the task id is the event's id


@needs_rabbitmq
def test_a_worker_on_rabbitmq_processes_every_file(
    daemon: DaemonProcess, watch_dir: Path, worker_for: Any
) -> None:
    queue = f"inotifier-{uuid.uuid4().hex[:8]}"
    worker = worker_for(RABBITMQ_URL, queue)
    use_celery(daemon, RABBITMQ_URL, queue, watch_dir)
    daemon.start()
    names = burst(watch_dir, 300)
    wait_for(lambda: {p for _i, p in worker.records()} >= set(names), 120, interval=0.5)
    events = [e for e in OutboxEntry.objects.values_list("payload", flat=True)]
    assert {e["pathname"] for e in events} == set(names)
    assert {e["id"] for e in events} == {i for i, _p in worker.records()}
    assert daemon.stop().returncode == 0


# -- django-tasks-db: a real db_worker ------------------------------------------------------------


def test_a_db_worker_runs_every_event_handed_to_the_database_backend(
    daemon: DaemonProcess, watch_dir: Path, tmp_path: Path
) -> None:
    from django.conf import settings

    if "db" not in getattr(settings, "TASKS", {}):
        pytest.skip("django-tasks-db does not support this Django (it needs 5.2 or later)")
    record = tmp_path / "tasks.tsv"
    daemon.watch_paths = [[str(watch_dir), "IN_CLOSE_WRITE", "tests.handoff_tasks.DbRecorder"]]
    daemon.env_extra["INOTIFIER_OUTBOX_POLL_INTERVAL"] = "0.5"
    daemon.start()
    env = daemon.env()
    env["INOTIFIER_TEST_TASK_RECORD"] = str(record)
    log = open(tmp_path / "db_worker.log", "wb")  # noqa: SIM115  (closed once the worker is gone)
    worker = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "django",
            "db_worker",
            "--backend",
            "db",
            "--interval",
            "0.2",
            "--no-startup-delay",
        ],
        env=env,
        cwd=daemon.tmp,
        stdout=log,
        stderr=log,
    )
    try:
        names = burst(watch_dir, 200)
        wait_for(lambda: {p for _i, p in read_records(record)} >= set(names), 120, interval=0.5)
        wait_for(lambda: OutboxEntry.objects.filter(state=HandoffState.DONE).count() == 200, 30)
    finally:
        worker.terminate()
        try:
            worker.wait(20)
        except subprocess.TimeoutExpired:
            worker.kill()
        log.close()
        print((tmp_path / "db_worker.log").read_text(errors="replace")[-3000:])
    ids = {i for i, _p in read_records(record)}
    assert ids == {e["id"] for e in OutboxEntry.objects.values_list("payload", flat=True)}
    assert daemon.stop().returncode == 0


# -- kill -9 in the middle of a burst, then start: catch-up covers what was in memory -------------


def test_kill_9_during_a_burst_then_start_with_catch_up_changed_processes_every_file(
    daemon: DaemonProcess, watch_dir: Path, tmp_path: Path
) -> None:
    from inotifier.specs import SETTINGS_OPTIONS

    if "catch_up" not in SETTINGS_OPTIONS:
        pytest.skip("catch_up (issue 13, part 2) is not in this build")
    record = tmp_path / "tasks.tsv"
    daemon.watch_paths = [
        [str(watch_dir), "IN_CLOSE_WRITE", "tests.handoff_tasks.DjangoRecorder", {"catch_up": "changed"}]
    ]
    daemon.env_extra["INOTIFIER_TEST_TASK_RECORD"] = str(record)
    daemon.start()
    assert daemon.stop().returncode == 0  # a clean stop: the watch has its first watermark
    daemon.start()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(watch_dir), "5000"], stdout=subprocess.DEVNULL
    )
    wait_for(lambda: len(read_records(record)) >= 500, 60)
    daemon.signal(signal.SIGKILL)
    writer.wait(60)
    names = {str(watch_dir / f"f{i:05}.txt") for i in range(5000)}
    before = {p for _i, p in read_records(record)}
    assert before < names  # the kill came in the middle
    daemon.start()
    wait_for(lambda: names <= {p for _i, p in read_records(record)}, 120, interval=0.5)
    records = read_records(record)
    duplicates = len(records) - len({p for _i, p in records})
    print(f"kill -9 after {len(before)} of 5 000 files: every file processed, {duplicates} duplicates")
    assert daemon.stop().returncode == 0
