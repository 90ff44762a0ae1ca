"""The image's `ray` user cannot become root: the base's passwordless sudo is removed (Dockerfile, parsed).

rayproject/ray's base-deps stage installs sudo, adds `ray` to the sudo group
and appends `ray ALL=NOPASSWD: ALL` to /etc/sudoers. There is no Docker
engine here, so the Dockerfile's instructions are read in order, with the user
each RUN step runs as.
"""

from __future__ import annotations

import re

import pytest

from tests.deploy._deploy_files import DOCKERFILE

ROOT_USERS = {"root", "0", "0:0", "root:root"}


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) in order, continuation lines joined and comments dropped."""
    out: list[tuple[str, str]] = []
    pending = ""
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if pending and stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + stripped.removesuffix("\\").strip()
        if not stripped.endswith("\\"):
            word, _, args = pending.strip().partition(" ")
            out.append((word.upper(), args.strip()))
            pending = ""
    return out


def runs_with_user(text: str) -> list[tuple[str, str]]:
    """(user, command) of every RUN step (the base image's user is `ray`)."""
    user, out = "ray", []
    for word, args in instructions(text):
        if word == "FROM":
            user = "ray"
        elif word == "USER":
            user = args
        elif word == "RUN":
            out.append((user, args))
    return out


def removes_sudo(command: str) -> bool:
    """The step purges the sudo package and deletes the sudoers files, each checked after."""
    return bool(
        re.search(r"apt-get\s+(?:-\S+\s+)*(?:purge|remove)\b[^&|;]*\bsudo\b", command)
        and re.search(r"rm\s+-\S*f\S*\s+[^&|;]*/etc/sudoers(?:\s|$)", command)
        and re.search(r"rm\s+-\S*f\S*\s+[^&|;]*/etc/sudoers\.d\b", command)
        and "! command -v sudo" in command
    )


def sudo_problems(text: str) -> list[str]:
    """Every way the Dockerfile leaves `ray` (or whoever runs the container) able to become root."""
    problems = []
    steps = instructions(text)
    users = [args for word, args in steps if word == "USER"]
    if not users or users[-1] in ROOT_USERS:
        problems.append("the final USER is root (or missing); end with USER ray")
    runs = runs_with_user(text)
    removal = [i for i, (user, cmd) in enumerate(runs) if user in ROOT_USERS and removes_sudo(cmd)]
    if not removal:
        problems.append("no RUN step as root removes sudo (apt-get purge sudo, rm /etc/sudoers*)")
    for i, (user, cmd) in enumerate(runs):
        if removal and i > removal[0] and re.search(r"\bsudo\b|sudoers|NOPASSWD", cmd):
            problems.append(f"a RUN step after the removal grants or uses sudo again: {cmd[:80]}")
        if user not in ROOT_USERS and re.search(r"(?:^|[;&|]\s*)sudo\b", cmd):
            problems.append(f"a RUN step as {user} needs sudo: {cmd[:80]}")
    if removal:
        last_root_run = max(i for i, (user, _) in enumerate(runs) if user in ROOT_USERS)
        if last_root_run < removal[0]:
            problems.append("the sudo removal is not the last root step")
    return problems


def test_the_image_removes_sudo_before_it_drops_to_ray():
    assert sudo_problems(DOCKERFILE.read_text()) == []


def test_the_removal_step_also_takes_ray_out_of_the_sudo_group():
    runs = runs_with_user(DOCKERFILE.read_text())
    step = next(cmd for user, cmd in runs if user in ROOT_USERS and removes_sudo(cmd))
    assert "gpasswd -d ray sudo" in step
    assert "! id -nG ray | grep -qw sudo" in step  # checked after, so the build fails if it is left


def test_the_base_image_is_the_one_whose_sudo_this_removes():
    """rayproject/ray is the base that grants it; another base needs its own look."""
    froms = [args for word, args in instructions(DOCKERFILE.read_text()) if word == "FROM"]
    assert froms == ["rayproject/ray:${RAY_VERSION}-${PY_TAG}${RAY_PLATFORM}"]


GOOD = """FROM rayproject/ray:2.60.0-py311
USER root
RUN SUDO_FORCE_REMOVE=yes apt-get purge -y sudo \\
    && rm -rf /etc/sudoers /etc/sudoers.d \\
    && ! command -v sudo
USER ray
RUN pip install x
"""


def test_a_good_dockerfile_passes():
    assert sudo_problems(GOOD) == []


@pytest.mark.parametrize(
    "text",
    [
        GOOD.replace("USER ray\n", ""),  # ends as root
        GOOD.replace("USER ray\n", "USER ray\nUSER 0\n"),  # back to root
        GOOD.replace("USER root\n", ""),  # the removal runs as ray: fails, or does nothing
        GOOD.replace("apt-get purge -y sudo", "true"),  # sudo stays
        GOOD.replace("rm -rf /etc/sudoers /etc/sudoers.d", "true"),  # sudoers stays
        GOOD + "USER root\nRUN echo 'ray ALL=NOPASSWD: ALL' >> /etc/sudoers\nUSER ray\n",  # granted again
        GOOD + "RUN sudo apt-get install -y curl\n",  # relies on sudo
        "FROM rayproject/ray:2.60.0-py311\nUSER root\nRUN mkdir -p /outputs\nUSER ray\n",  # before this change
    ],
    ids=["final-root", "back-to-0", "as-ray", "no-purge", "no-rm", "regranted", "uses-sudo", "unchanged"],
)
def test_the_sudo_check_catches(text):
    assert sudo_problems(text)
