"""The checkov checks an object fails on purpose, stated on the object with the reason (``checkov.io/skipN``)."""

from __future__ import annotations

from . import _names

#: Reasons that hold for every pod the renderer writes.
SECRET_ENV = ("CKV_K8S_35", "the process reads its settings from the environment; the values come from "
                            "secretKeyRef, never inline")
PULL_POLICY = ("CKV_K8S_15", "images are pinned (the config refuses untagged and latest images), so IfNotPresent "
                             "runs the same code as Always without a registry round trip at every start")
NO_CPU_LIMIT = ("CKV_K8S_11", "no CPU limit on purpose: CFS throttling would stall every turn of the pod; the "
                              "request reserves the CPU and the autoscaler adds pods (set resources.limits.cpu to "
                              "cap it)")
TAG_ONLY = ("CKV_K8S_43", "pinned to a tag, which the config requires; give image@sha256:... in the config to pin "
                          "the digest too")


def skip_annotations(skips: list[tuple[str, str]]) -> dict[str, str]:
    """``checkov.io/skip1: CKV_K8S_xx=reason``, numbered in order."""
    return {f"checkov.io/skip{index}": f"{check}={reason}" for index, (check, reason) in enumerate(skips, start=1)}


def pod_skips(images: list[str], cpu_limit: str | None) -> list[tuple[str, str]]:
    """The deliberate exceptions of a pod running ``images`` with (or without) a CPU limit."""
    skips = [SECRET_ENV, PULL_POLICY]
    if cpu_limit is None:
        skips.append(NO_CPU_LIMIT)
    if any(not _names.has_digest(image) for image in images):
        skips.append(TAG_ONLY)
    return skips
