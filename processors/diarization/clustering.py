"""Incremental (online) speaker clustering with per-call state.

Each step of the streaming diarizer sees up to three *local* speakers in its rolling buffer
(the segmentation model's output slots, whose order is arbitrary from one chunk to the next).
This module maps them to *global* speakers that keep their identity for the whole call:

* a global speaker is a centroid: the running sum of the L2-normalised CAM++ embeddings that
  were assigned to it (so it becomes steadier as the call goes on);
* local speakers of one chunk are matched to centroids with the Hungarian algorithm on cosine
  distance, so two local speakers of the same chunk never land on the same global speaker
  while another one is free;
* a local speaker farther than ``delta_new`` from every centroid opens a new global speaker,
  as long as there are fewer than ``max_speakers`` and its embedding rests on at least
  ``min_new_s`` seconds of single-speaker speech; with too little speech it stays unlabelled
  in this chunk (later chunks, which hear more of it, label it); once ``max_speakers`` are
  known it joins its nearest centroid;
* only embeddings with enough clean speech (``min_update_s``) move a centroid.

Global ids are assigned in order of appearance and never change, so labels are stable over
the whole call. The state is plain numpy and round-trips through :meth:`to_state`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment


class OnlineClustering:
    def __init__(
        self,
        max_speakers: int = 2,
        delta_new: float = 0.3,
        dim: int = 192,
        continuity_weight: float = 0.0,
    ) -> None:
        if max_speakers < 1:
            raise ValueError("max_speakers must be >= 1")
        self.max_speakers = max_speakers
        self.delta_new = delta_new
        self.continuity_weight = continuity_weight
        self.dim = dim
        self.centers = np.zeros((max_speakers, dim), dtype=np.float64)
        self.count = 0  # number of global speakers opened so far

    # -- state ----------------------------------------------------------------------------
    def to_state(self) -> dict[str, Any]:
        return {"centers": self.centers[: self.count].copy(), "count": self.count}

    def load_state(self, state: dict[str, Any]) -> None:
        count = int(state["count"])
        if count > self.max_speakers:
            raise ValueError(f"state has {count} speakers, max_speakers is {self.max_speakers}")
        self.centers[:] = 0.0
        self.centers[:count] = np.asarray(state["centers"], dtype=np.float64)
        self.count = count

    # -- assignment -----------------------------------------------------------------------
    def distances(self, embeddings: np.ndarray) -> np.ndarray:
        """Cosine distance (K local x count global)."""
        centers = self.centers[: self.count]
        norms = np.linalg.norm(centers, axis=1, keepdims=True)
        unit = centers / np.maximum(norms, 1e-12)
        emb = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        return 1.0 - emb @ unit.T

    def _cost(self, embeddings: np.ndarray, continuity: np.ndarray | None) -> np.ndarray:
        dist = self.distances(embeddings)
        if continuity is not None and self.continuity_weight:
            dist = dist - self.continuity_weight * continuity[:, : self.count]
        return dist

    def assign(
        self,
        embeddings: np.ndarray,
        can_open: np.ndarray,
        can_update: np.ndarray,
        continuity: np.ndarray | None = None,
    ) -> list[int]:
        """Global speaker index for each local embedding (rows of ``embeddings``).

        ``can_open[k]``: local speaker k has enough clean speech to open a new speaker.
        ``can_update[k]``: it may move its centroid.
        ``continuity[k, g]`` (0-1): how much local speaker k's activity coincides with global
        speaker g's activity in the previous chunk over their common audio; it lowers the
        distance by ``continuity_weight * continuity`` (a local speaker that continues a
        global speaker's turn is most likely that speaker).
        """
        num_local = len(embeddings)
        result = [-1] * num_local
        if num_local == 0:
            return result
        if self.count:
            dist = self._cost(embeddings, continuity)
            rows, cols = linear_sum_assignment(dist)
            for r, c in zip(rows, cols, strict=True):
                if dist[r, c] <= self.delta_new:
                    result[r] = int(c)
        # open new speakers for far-away locals (most speech first: the order is the caller's)
        for k in range(num_local):
            if result[k] >= 0:
                continue
            if can_open[k] and self.count < self.max_speakers:
                if self.count:
                    taken = {g for g in result if g >= 0}
                    dist_k = self._cost(embeddings, continuity)[k]
                    # a free centroid close enough was not matched only because of the
                    # one-to-one constraint: do not open a duplicate of an existing speaker
                    if any(
                        dist_k[g] <= self.delta_new for g in range(self.count) if g not in taken
                    ):
                        result[k] = int(
                            min(
                                (g for g in range(self.count) if g not in taken),
                                key=lambda g: dist_k[g],
                            )
                        )
                        continue
                self.centers[self.count] = 0.0
                result[k] = self.count
                self.count += 1
            elif self.count >= self.max_speakers:
                # every speaker is known: join the nearest centroid not already used in this
                # chunk, or the nearest overall when all are taken
                dist_k = self._cost(embeddings, continuity)[k]
                taken = {g for g in result if g >= 0}
                free = [g for g in range(self.count) if g not in taken]
                pool = free or list(range(self.count))
                result[k] = int(min(pool, key=lambda g: dist_k[g]))
        for k, g in enumerate(result):
            if g >= 0 and (can_update[k] or not self.centers[g].any()):
                self.centers[g] += embeddings[k]
        return result
