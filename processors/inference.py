"""Emotion inference batched across calls, off the event loop.

The processor hands over the windows of *several* calls at once (one micro-batch of audio
events, gathered for at most ``settings.inference_max_wait_ms``). :class:`BatchClassifier` runs
one ``model.predict`` over all of them, ``settings.inference_batch`` windows at a time, then the
stage code's ``classify`` per call (calibrated verdict + temporal smoothing, exactly as offline
analysis does) on the precomputed probabilities. Everything runs in a one-thread
``ThreadPoolExecutor`` whose thread owns the model (torch threads = ``settings.model_threads``),
so numpy/torch work never blocks the asyncio loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

if TYPE_CHECKING:
    from callsense.settings import Settings

T = TypeVar("T")

#: one request = the windows of one call (in stream order), that call's smoothers by speaker
#: and its per-speaker model states (speaker normalisation) by speaker
Request = tuple[list[Any], dict[str, Any], dict[str, Any]]


class _Precomputed:
    """A model view whose ``predict`` returns rows computed earlier in one cross-call batch.

    ``rows`` are probabilities, or for a model that keeps per-speaker state the pooled encoder
    statistics (``model.embed``), which are finished here with the call's speaker states in
    window order (cheap: a standardisation and two small matrix products per window).
    ``classify`` calls ``predict`` on exactly the windows we computed, in order; anything else is
    a programming error and raises instead of returning wrong rows.
    """

    def __init__(self, model: Any, rows: list[Any]) -> None:
        self._model = model
        self._rows = rows
        self._used = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def predict(
        self, windows: Any, sample_rate: int | None = None, speakers: Any = None, **_: Any
    ) -> np.ndarray:
        n = len(windows)
        if self._used + n > len(self._rows):
            raise RuntimeError("classify asked for more windows than were batched")
        rows = self._rows[self._used : self._used + n]
        self._used += n
        if getattr(self._model, "uses_speaker_state", False):
            return np.asarray(self._model.predict_embedded(rows, speakers))
        return np.asarray(rows)


class BatchClassifier:
    """Owns the emotion model and a one-thread executor; see module docstring."""

    def __init__(
        self,
        settings: Settings,
        model: Any | None = None,
        loader: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.batch = int(settings.inference_batch)
        self.threshold = float(settings.uncertain_threshold)
        self.alpha = float(settings.smoothing_alpha)
        self._model = model
        self._loader = loader
        self._lock = threading.Lock()
        self.executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="inference", initializer=self._init_thread
        )
        self.windows_total = 0
        self.batches_total = 0

    def _init_thread(self) -> None:
        try:
            import torch

            torch.set_num_threads(int(self.settings.model_threads))
        except ImportError:  # pragma: no cover - torch is a dependency
            pass

    @property
    def model(self) -> Any:
        with self._lock:
            if self._model is None:
                if self._loader is not None:
                    self._model = self._loader()
                else:
                    from callsense.models import EmotionModel

                    self._model = EmotionModel.load(
                        model_dir=self.settings.model_dir,
                        int8=self.settings.model_int8,
                        threads=self.settings.model_threads,
                    )
            return self._model

    # ---------------------------------------------------------------- smoothers
    def new_smoother(self) -> Any:
        from callsense.models import TemporalSmoother

        return TemporalSmoother(self.model.labels, self.alpha)

    def smoother_from_state(self, d: dict[str, Any]) -> Any:
        from callsense.models import TemporalSmoother

        return TemporalSmoother.from_state(d)

    # ---------------------------------------------------------------- per-speaker model state
    def speaker_state_from(self, d: dict[str, Any] | None) -> Any:
        load = getattr(self.model, "speaker_state_from", None)
        return load(d) if load else None

    # ---------------------------------------------------------------- classification
    def predict_all(self, windows: Sequence[Any]) -> list[Any]:
        """Per window: probabilities, or for a model with per-speaker state its pooled
        statistics (finished per call in window order); ``self.batch`` windows per encoder
        call, across calls."""
        model = self.model
        stateful = getattr(model, "uses_speaker_state", False)
        rows: list[Any] = []
        for i in range(0, len(windows), self.batch):
            part = [np.asarray(w.samples, dtype=np.float32) for w in windows[i : i + self.batch]]
            if stateful:
                rows.extend(model.embed(part, self.settings.sample_rate))
            else:
                rows.extend(np.asarray(model.predict(part, self.settings.sample_rate)))
            self.batches_total += 1
        self.windows_total += len(windows)
        return rows

    def classify_many(self, requests: Sequence[Request]) -> list[list[Any]]:
        """Synchronous: classify the windows of several calls with one batched encoder pass."""
        from callsense.processors.stages import classify

        flat = [w for windows, _, _ in requests for w in windows]
        rows = self.predict_all(flat)
        out: list[list[Any]] = []
        offset = 0
        for windows, smoothers, speaker_states in requests:
            n = len(windows)
            if n == 0:
                out.append([])
                continue
            view = _Precomputed(self.model, rows[offset : offset + n])
            offset += n
            out.append(
                list(
                    classify(
                        view,
                        windows,
                        smoothers,
                        self.threshold,
                        self.alpha,
                        speaker_states=speaker_states,
                    )
                )
            )
        return out

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` in the inference thread (never on the event loop)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
