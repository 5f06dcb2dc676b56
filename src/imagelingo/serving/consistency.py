"""Does a served caption depend on the requests it was batched with? (issue 30)

Each image is captioned alone (one request at a time, so the server has nothing to batch it
with), then again inside random mixes: concurrent requests of 1..4 images each, the images'
decoding options mixed across requests, so the server batches different images, sizes and
options together. Every batched answer is compared with the image's answer alone: caption and
tokens must be identical, the score equal within 1e-5 relative.

    from imagelingo.serving.consistency import check_batch_mixes
    report = check_batch_mixes("http://127.0.0.1:8080", images)   # images: list of bytes

Used by benchmarks/batch_invariance.py (both local runtimes, on 200 Flickr8k test images) and
the runtime rehearsal's pod rounds (serving/kfs-runtime/podround.py).
"""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from imagelingo.serving.client import caption_remote

RELATIVE_SCORE_TOLERANCE = 1e-5
# Each image always gets the same options (by position), alone and in every mix: the default,
# greedy, and a wide beam with a short limit. Requests with different options meet in a batch.
OPTION_CHOICES: tuple[dict, ...] = ({}, {"beam_width": 1}, {"beam_width": 5, "max_len": 12})


@dataclass
class MixReport:
    images: int
    requests: int = 0  # batched requests sent
    compared: int = 0  # (image, mix) answers compared with the image's answer alone
    token_mismatches: int = 0
    max_relative_score_diff: float = 0.0
    examples: list[str] = field(default_factory=list)  # the first few mismatches, readable

    @property
    def ok(self) -> bool:
        return (
            self.token_mismatches == 0 and self.max_relative_score_diff <= RELATIVE_SCORE_TOLERANCE
        )

    def summary(self) -> str:
        return (
            f"{self.images} images, {self.compared} batched answers in {self.requests} requests: "
            f"{self.token_mismatches} with other tokens, max relative score difference "
            f"{self.max_relative_score_diff:.1e}"
        )


def check_batch_mixes(
    url: str,
    images: list[bytes],
    rounds: int = 3,
    concurrency: int = 8,
    max_images_per_request: int = 4,
    seed: int = 0,
    protocol: str = "v1",
    model: str = "imagelingo",
) -> MixReport:
    """Alone vs. `rounds` random batch mixes, sent from `concurrency` client threads."""
    options = [OPTION_CHOICES[i % len(OPTION_CHOICES)] for i in range(len(images))]

    def caption(indices: list[int]) -> list[dict]:
        blobs = [images[i] for i in indices]
        return caption_remote(url, blobs, protocol, model, options[indices[0]] or None)

    alone = [caption([i])[0] for i in range(len(images))]
    rng = random.Random(seed)
    requests: list[list[int]] = []
    for _ in range(rounds):
        for choice in range(len(OPTION_CHOICES)):  # a request's options apply to all its images
            group = [i for i in range(len(images)) if options[i] is OPTION_CHOICES[choice]]
            rng.shuffle(group)
            while group:
                size = rng.randint(1, max_images_per_request)
                requests.append(group[:size])
                group = group[size:]
    rng.shuffle(requests)
    with ThreadPoolExecutor(max_workers=concurrency) as pool:
        answers = list(pool.map(caption, requests))
    report = MixReport(images=len(images), requests=len(requests))
    for indices, batched in zip(requests, answers, strict=True):
        for index, got in zip(indices, batched, strict=True):
            report.compared += 1
            expected = alone[index]
            difference = abs(got["score"] - expected["score"]) / max(abs(expected["score"]), 1e-12)
            report.max_relative_score_diff = max(report.max_relative_score_diff, difference)
            if got["tokens"] != expected["tokens"]:
                report.token_mismatches += 1
                if len(report.examples) < 5:
                    report.examples.append(
                        f"image {index}: alone {expected['caption']!r}, batched {got['caption']!r}"
                    )
    return report
