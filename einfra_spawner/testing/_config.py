"""Settings of the fake scheduler and kubelet: timings and the images that misbehave."""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass


@dataclass(slots=True, kw_only=True)
class Timings:
    """How fast the simulated cluster reacts, in seconds of wall-clock time.

    With the defaults a pod that fits is Running about 50 ms after it is created. The fields
    may be changed during a test (``k8s.timings.running_delay = 0.3``); they are read at
    each step.
    ``time_factor`` scales durations that a real cluster measures in its own seconds: pod
    grace periods (30 s becomes 0.3 s at 0.01) and the image-pull and crash-loop back-offs.
    """

    schedule_delay: float = 0.0  # pod created -> scheduling attempt
    running_delay: float = 0.05  # pod bound to a node -> containers started
    pvc_bind_delay: float = 0.005  # PVC created -> Bound
    time_factor: float = 0.01
    port_timeout: float = 60.0  # process mode: how long to wait for a container port

    def scaled(self, seconds: float) -> float:
        return max(0.0, seconds * self.time_factor)


ImageMatcher = Callable[[str], bool]


def full_image_reference(image: str) -> str:
    """``jupyter/base:1`` as ``docker.io/jupyter/base:1``, the form a container runtime logs."""
    first, slash, _ = image.partition("/")
    if not slash:
        name = f"docker.io/library/{image}"
    elif "." in first or ":" in first or first == "localhost":
        name = image
    else:
        name = f"docker.io/{image}"
    last = name.rsplit("/", 1)[-1]
    if "@" not in last and ":" not in last:
        name += ":latest"
    return name


class ImageRules:
    """A set of image references (matched as given or in full form), plus optional predicates.

    Used for "images whose pull fails" and "images whose container crashes on start".
    Mutable during a test: ``k8s.image_pull_failures.add("example.org/broken:1")``.
    """

    def __init__(self, images: Collection[str] | ImageMatcher = ()) -> None:
        self._images: set[str] = set()
        self._predicates: list[ImageMatcher] = []
        if callable(images):
            self._predicates.append(images)
        else:
            for image in images:
                self.add(image)

    def add(self, image: str | ImageMatcher) -> None:
        if callable(image):
            self._predicates.append(image)
        else:
            self._images.add(full_image_reference(image))

    def discard(self, image: str) -> None:
        self._images.discard(full_image_reference(image))

    def clear(self) -> None:
        self._images.clear()
        self._predicates.clear()

    def matches(self, image: str) -> bool:
        if full_image_reference(image) in self._images:
            return True
        return any(predicate(image) for predicate in self._predicates)

    def __contains__(self, image: object) -> bool:
        return isinstance(image, str) and self.matches(image)
