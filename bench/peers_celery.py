"""Celery 5.x peer: Redis broker, no result backend, real prefork worker subprocess.

This module is also the Celery app the worker subprocess loads
(``celery -A bench.peers_celery worker ...``).

Per task Celery does (and we time): the worker's consumer BRPOPs the message from the
Redis list, records it in the ``unacked`` hash (visibility-timeout bookkeeping), acks it
(early ack, Celery's default: ``task_acks_late=False``), hands it over a pipe to a prefork
child, which runs the task. The task body is one Redis ``INCR`` on a counter: without a
result backend that is how the benchmark learns that all N ran. It is one extra loopback
round trip per task (~0.1 ms), a cost procrastinate's peer does not pay, but procrastinate
pays a durable ``UPDATE ... SET status='succeeded'`` per job instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from celery import Celery

BROKER_URL = os.environ.get("SLUICE_BENCH_CELERY_BROKER", "redis://127.0.0.1:6379/15")
QUEUE = "sluice_bench"
IDLE_QUEUE = "sluice_bench_idle"
COUNTER_KEY = "sluice_bench:done"

app = Celery("sluice_bench", broker=BROKER_URL)
app.conf.update(
    task_ignore_result=True,
    result_backend=None,
    task_default_queue=QUEUE,
    task_serializer="json",
    accept_content=["json"],
    worker_send_task_events=False,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)

_counter: redis.Redis | None = None


@app.task(name="sluice_bench.noop", ignore_result=True)
def noop() -> None:
    """No-op task; counts itself so the driver knows when all N have run."""
    global _counter
    if _counter is None:  # created lazily, i.e. in the prefork child after fork
        _counter = redis.Redis.from_url(BROKER_URL)
    _counter.incr(COUNTER_KEY)


def _wait_ready(hostname: str, proc: subprocess.Popen[bytes], deadline: float) -> None:
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"celery worker exited early with code {proc.returncode}")
        if app.control.ping(destination=[hostname], timeout=0.5):
            return
    raise TimeoutError("celery worker did not answer ping in time")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate the worker and its prefork children (its own process group)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)  # warm shutdown
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=15)
    except ProcessLookupError:
        pass


def run(
    n: int,
    concurrency: int = 2,
    pool: str = "prefork",
    timeout: float = 600.0,
) -> dict[str, Any]:
    """Enqueue ``n`` no-op tasks, then time a real worker subprocess executing all of them.

    The worker is started first, consuming only an empty idle queue, and waited for until
    it answers a ping; the timer starts when it is told (``add_consumer``) to consume the
    filled benchmark queue. So worker start-up (fork, connect) is not in the drain time,
    just as procrastinate's pool opening is not.
    """
    r = redis.Redis.from_url(BROKER_URL)
    r.flushdb()  # dedicated db number: only the benchmark lives here

    # Enqueue: Celery has no batch-publish API; ``delay()`` publishes one message (one
    # LPUSH round trip) per call, through the app's producer pool.
    t0 = time.perf_counter()
    for _ in range(n):
        noop.delay()
    enqueue_s = time.perf_counter() - t0
    queued = r.llen(QUEUE)
    if queued != n:
        raise RuntimeError(f"celery: expected {n} messages in {QUEUE!r}, found {queued}")

    hostname = f"sluice-bench-{os.getpid()}@{socket.gethostname()}"
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root), env.get("PYTHONPATH")) if p)
    cmd = [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "bench.peers_celery",
        "worker",
        f"--pool={pool}",
        f"--concurrency={concurrency}",
        "--loglevel=WARNING",
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
        "-Q",
        IDLE_QUEUE,
        "-n",
        hostname,
    ]
    with tempfile.TemporaryFile() as log:
        proc = subprocess.Popen(
            cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            deadline = time.monotonic() + timeout
            _wait_ready(hostname, proc, min(deadline, time.monotonic() + 60))

            t0 = time.perf_counter()
            app.control.add_consumer(QUEUE, destination=[hostname])
            done = 0
            while done < n:
                if proc.poll() is not None:
                    raise RuntimeError(f"celery worker died (code {proc.returncode})")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"celery: only {done}/{n} tasks ran before the timeout")
                time.sleep(0.002)
                done = int(r.get(COUNTER_KEY) or 0)
            drain_s = time.perf_counter() - t0
        except BaseException as exc:
            _stop(proc)
            log.seek(0)
            tail = log.read().decode(errors="replace")[-2000:]
            raise RuntimeError(f"{exc}\n--- celery worker output (tail) ---\n{tail}") from exc
        finally:
            _stop(proc)

    left = r.llen(QUEUE)
    done = int(r.get(COUNTER_KEY) or 0)
    r.flushdb()
    if done != n or left != 0:
        raise RuntimeError(f"celery: {done}/{n} tasks counted, {left} left in the queue")

    return {
        "n": n,
        "concurrency": concurrency,
        "pool": pool,
        "enqueue_batch_per_s": None,
        "enqueue_single_per_s": n / enqueue_s,
        "drain_per_s": n / drain_s,
        "drain_s": drain_s,
    }


if __name__ == "__main__":
    print(run(int(sys.argv[1]) if len(sys.argv) > 1 else 2000))
