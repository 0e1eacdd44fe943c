"""What operators measure: jobs by outcome, queue depth, wait and render times, batches, spend, workers.

``JobMetrics`` is the one observer every job move reports to: the lifecycle (claims, endings,
posts), the worker (render calls) and the remote transport (live workers, reclaims, dead letters). Its methods record nothing, so a lifecycle or worker built
without metrics (most tests, ``python -m bot render``) needs none. ``Metrics`` records the same
events in a Prometheus registry of its own: never the process-wide default, so two apps in one
process (tests, a bot beside a worker) keep their counts apart.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.errors import RenderFailed
from bot.jobs import Job, JobStatus, utcnow
from bot.renderers.base import RenderResult

OUTCOMES = {JobStatus.POSTED: "posted", JobStatus.FAILED: "failed", JobStatus.CANCELLED: "cancelled"}
# Waits run from seconds (an idle bot) to an hour (a busy GPU behind a long queue).
WAIT_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
# Renders: a second (a turbo model, a fast OpenAI call) to minutes (an SDXL batch on a small GPU).
RENDER_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300)
BATCH_BUCKETS = (1, 2, 3, 4, 6, 8, 12, 16)


class Queues(Protocol):
    """What the queue-depth gauge reads at scrape time (a ``JobLifecycle`` has both)."""

    def waiting(self, backend: str) -> int:
        """How many jobs wait for ``backend``."""
        ...

    def backends(self) -> Iterable[str]:
        """The backends that have a line."""
        ...


class JobMetrics:
    """The events a job's moves report; this base records nothing."""

    def jobs_started(self, jobs: Sequence[Job]) -> None:
        """Jobs were claimed for rendering (queued → running)."""

    def batch_rendered(
        self, backend: str, outcomes: Sequence[RenderResult | RenderFailed], seconds: float
    ) -> None:
        """One renderer call for one job or a batch ended after ``seconds``."""

    def job_ended(self, job: Job, usd: float = 0.0) -> None:
        """A job changed state; counted when it is posted, failed or cancelled (``usd``: its settled charge)."""

    def workers_live(self, backend: str, count: int) -> None:
        """``count`` workers serve ``backend`` now."""

    def lease_reclaimed(self, backend: str, jobs: int = 1) -> None:
        """``jobs`` were taken back from a worker whose lease ran out (the remote transport)."""

    def dead_lettered(self, backend: str, jobs: int = 1) -> None:
        """``jobs`` were given up after too many deliveries without completing (the remote transport)."""


NO_METRICS = JobMetrics()


class Metrics(JobMetrics):
    """The job events as Prometheus metrics, in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self._jobs = Counter(
            "easel_jobs_total",
            "Jobs that ended, by backend and outcome (posted, failed, cancelled).",
            ["backend", "outcome"],
            registry=registry,
        )
        self._wait = Histogram(
            "easel_job_wait_seconds",
            "Seconds a job waited in the fair queue before it was claimed (queued to running).",
            ["backend"],
            buckets=WAIT_BUCKETS,
            registry=registry,
        )
        self._render = Histogram(
            "easel_job_render_seconds",
            "Seconds a job's renderer call took (running to rendered); a batch's jobs share one call.",
            ["backend"],
            buckets=RENDER_BUCKETS,
            registry=registry,
        )
        self._batch = Histogram(
            "easel_batch_images",
            "Images one renderer call produced (a batch of jobs, or one job of several images).",
            ["backend"],
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._spend = Counter(
            "easel_spend_usd_total",
            "Estimated USD of posted jobs, from the price table, as spend budgets count it (OpenAI).",
            ["backend"],
            registry=registry,
        )
        self._workers = Gauge(
            "easel_workers_live",
            "Render workers serving a backend: remote workers whose heartbeat is fresh, or 1 for an "
            "in-process renderer that loaded (0 if it failed).",
            ["backend"],
            registry=registry,
        )
        self._reclaims = Counter(
            "easel_lease_reclaims_total",
            "Jobs taken back from a worker whose lease ran out (remote workers only).",
            ["backend"],
            registry=registry,
        )
        self._dead = Counter(
            "easel_dead_lettered_jobs_total",
            "Jobs given up after too many deliveries without completing (remote workers only).",
            ["backend"],
            registry=registry,
        )
        self._depth = _QueueDepth()
        registry.register(self._depth)

    def expect(self, backends: Iterable[str]) -> None:
        """Create the series of ``backends`` at 0 now, not at their first job.

        A rate or a ratio over them then works before the first failure, and an alert on
        "no series" is not needed.
        """
        for backend in backends:
            for outcome in OUTCOMES.values():
                self._jobs.labels(backend=backend, outcome=outcome)
            self._depth.known.add(backend)

    def watch_queues(self, queues: Queues) -> None:
        """Read the queue depth of every backend from ``queues`` at each scrape."""
        self._depth.queues = queues

    def workers_live(self, backend: str, count: int) -> None:
        """Set how many workers serve ``backend`` now."""
        self._workers.labels(backend=backend).set(count)
        # A backend with workers can lose leases and dead-letter jobs: its counters start at 0.
        self._reclaims.labels(backend=backend)
        self._dead.labels(backend=backend)

    def jobs_started(self, jobs: Sequence[Job]) -> None:
        """Observe each job's wait from acceptance to its claim."""
        now = utcnow()
        for job in jobs:
            self._wait.labels(backend=job.backend).observe(max(0.0, (now - job.created_at).total_seconds()))

    def batch_rendered(
        self, backend: str, outcomes: Sequence[RenderResult | RenderFailed], seconds: float
    ) -> None:
        """Observe the call's images and, for each job it rendered, its render time."""
        rendered = [o for o in outcomes if isinstance(o, RenderResult)]
        if not rendered:
            return
        self._batch.labels(backend=backend).observe(sum(len(r.images) for r in rendered))
        for _ in rendered:
            self._render.labels(backend=backend).observe(seconds)

    def job_ended(self, job: Job, usd: float = 0.0) -> None:
        """Count a job that reached an end, and the spend it settled."""
        outcome = OUTCOMES.get(job.status)
        if outcome is None:
            return
        self._jobs.labels(backend=job.backend, outcome=outcome).inc()
        if usd > 0:
            self._spend.labels(backend=job.backend).inc(usd)

    def lease_reclaimed(self, backend: str, jobs: int = 1) -> None:
        """Count jobs taken back from a worker whose lease ran out."""
        self._reclaims.labels(backend=backend).inc(jobs)

    def dead_lettered(self, backend: str, jobs: int = 1) -> None:
        """Count jobs given up after too many deliveries."""
        self._dead.labels(backend=backend).inc(jobs)


class _QueueDepth(Collector):
    """``easel_queue_depth``, read from the fair queue when Prometheus scrapes, not kept in step."""

    def __init__(self) -> None:
        self.queues: Queues | None = None
        self.known: set[str] = set()

    def describe(self) -> Iterable[Metric]:
        # Without describe() the registry would call collect() at registration, before any queue exists.
        return [self._family()]

    def collect(self) -> Iterable[Metric]:
        family = self._family()
        backends = set(self.known)
        if self.queues is not None:
            backends.update(self.queues.backends())
        for backend in sorted(backends):
            depth = 0 if self.queues is None else self.queues.waiting(backend)
            family.add_metric([backend], depth)
        return [family]

    @staticmethod
    def _family() -> GaugeMetricFamily:
        return GaugeMetricFamily(
            "easel_queue_depth", "Jobs waiting in the fair queue, per backend.", labels=["backend"]
        )


class WorkerMetrics:
    """A remote render worker's own metrics (``python -m bot worker``), in ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, name: str, model: str) -> None:
        self.registry = registry
        Gauge(
            "easel_worker_info",
            "This render worker: its name and the model it serves (always 1).",
            ["worker", "model"],
            registry=registry,
        ).labels(worker=name, model=model).set(1)
        self._batches = Counter(
            "easel_worker_batches_total",
            "Batches this worker took, by outcome: published, lost (its lease ran out), "
            "dead_lettered (given up after too many deliveries), malformed.",
            ["outcome"],
            registry=registry,
        )
        self._jobs = Counter(
            "easel_worker_jobs_total",
            "Jobs of the batches this worker took, by outcome: rendered, failed, lost, dead_lettered.",
            ["outcome"],
            registry=registry,
        )
        self._render = Histogram(
            "easel_worker_render_seconds",
            "Seconds one batch's render took on this worker.",
            buckets=RENDER_BUCKETS,
            registry=registry,
        )
        self._images = Histogram(
            "easel_worker_batch_images",
            "Images one published batch carried.",
            buckets=BATCH_BUCKETS,
            registry=registry,
        )
        self._renewals = Counter(
            "easel_worker_lease_renewals_total",
            "Lease renewals this worker made while rendering.",
            registry=registry,
        )
        self._lost = Counter(
            "easel_worker_leases_lost_total",
            "Batches whose lease this worker lost (frozen or cut off past it): another worker renders them.",
            registry=registry,
        )
        self._reclaims = Counter(
            "easel_worker_reclaims_total",
            "Batches this worker took back from a worker whose lease ran out.",
            registry=registry,
        )
        # Series at 0 from the start, so rates and alerts work before the first event.
        for outcome in ("published", "lost", "dead_lettered", "malformed"):
            self._batches.labels(outcome=outcome)
        for outcome in ("rendered", "failed", "lost", "dead_lettered"):
            self._jobs.labels(outcome=outcome)

    def published(self, outcomes: Sequence[RenderResult | RenderFailed], seconds: float) -> None:
        """A batch rendered in ``seconds`` had its results published."""
        self._batches.labels(outcome="published").inc()
        rendered = [o for o in outcomes if isinstance(o, RenderResult)]
        self._jobs.labels(outcome="rendered").inc(len(rendered))
        self._jobs.labels(outcome="failed").inc(len(outcomes) - len(rendered))
        self._render.observe(seconds)
        self._images.observe(sum(len(r.images) for r in rendered))

    def lost(self, jobs: int) -> None:
        """The lease on a batch of ``jobs`` ran out before its results were published."""
        self._batches.labels(outcome="lost").inc()
        self._jobs.labels(outcome="lost").inc(jobs)
        self._lost.inc()

    def dead_lettered(self, jobs: int) -> None:
        """A batch of ``jobs`` was given up after too many deliveries."""
        self._batches.labels(outcome="dead_lettered").inc()
        self._jobs.labels(outcome="dead_lettered").inc(jobs)

    def malformed(self) -> None:
        """A batch this worker could not read was dropped."""
        self._batches.labels(outcome="malformed").inc()

    def renewed(self) -> None:
        """The lease on the batch being rendered was renewed."""
        self._renewals.inc()

    def reclaimed(self) -> None:
        """A batch was taken back from a worker past its lease."""
        self._reclaims.inc()
