"""``aerialdet submit detect|train``: run a job on a remote Ray cluster through its job API.

A thin wrapper over Ray's ``JobSubmissionClient``: it uploads the project's
own code (``jobs.job_upload``: ``pyproject.toml``, ``README.md``,
``pipeline/``, ``retinanet/``, ``jobs/`` and nothing else, less any file that
looks like a secret, which it names), runs
``python -m jobs.detect ARGS`` or ``python -m jobs.train ARGS`` on the
cluster, streams the job's logs and exits with the job's status (0
succeeded, 1 failed or stopped, 2 on bad usage or when the job API cannot be
reached or refuses the token).

What travels with the job: the named, non-secret object-store and GDAL
settings of this shell (``jobs.job_env.FORWARDED_ENV``: ``AWS_ENDPOINT_URL``
without any ``user:password@``, ``AWS_REGION``, GDAL performance options ...),
as the job's environment.  Credentials, cookies, proxies and file paths (a CA
bundle) never do: Ray records a job's runtime environment in its logs and job
table, so the cluster's nodes must hold their own (environment variables on
the nodes, a mounted credentials file, or an IAM role).

Token authentication: the job API of a Ray 2.52+ cluster started with
``RAY_AUTH_MODE=token`` wants ``Authorization: Bearer TOKEN``.  The token is
read from ``--token-file``, else ``$RAY_AUTH_TOKEN``, else the file named by
``$RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token`` (Ray's own order) and sent
as that header; it is never printed.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import click

from jobs.job_env import forwarded_env
from jobs.job_upload import stage_project
from jobs.options import UserError, one_line

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
# how long to retry while a freshly started head says "No available agent to submit job"
AGENT_WAIT_S = 60.0

# The jobs a submission may run: name -> the module the cluster runs with `python -m`.
JOB_MODULES = {"detect": "jobs.detect", "train": "jobs.train"}

EPILOG = """\b
Examples:
  $ aerialdet submit detect s3://aerialdet/scenes/ --model /outputs/runs/demo/best --out /outputs/detections
  $ aerialdet submit train /outputs/synth/labels.parquet --out /outputs/runs/demo --epochs 10 \\
        --address http://127.0.0.1:8265 --token-file ~/.aerialdet/ray_token
  $ ssh -N -L 8265:127.0.0.1:8265 head-host &   # reach a remote head's job API privately
  $ kubectl port-forward svc/aerialdet-head-svc 8265:8265 &

\b
ARGS are the job's own arguments (`aerialdet detect --help`, `aerialdet
train --help`); paths in them are paths on the cluster's nodes.  The job
runs with this shell's AWS_ENDPOINT_URL (without user:password@), AWS_REGION
and GDAL performance settings but never its credentials, cookies, proxies or
CA bundle paths: the cluster's nodes hold their own (environment on the
nodes, a mounted credentials file, or an IAM role).  Only the project's code
is uploaded (pyproject.toml, README.md, pipeline/, retinanet/, jobs/), less
any file that looks like a secret.  Anyone who can
reach the job API can run code on the cluster: keep it on 127.0.0.1 and use
an SSH tunnel or kubectl port-forward, with token authentication on.
Exit status: 0 the job succeeded, 1 it failed or was stopped, 2 bad usage,
unreachable job API or refused token.
"""


def job_env() -> dict[str, str]:
    """The job's environment: the allowlisted object-store/GDAL settings (``jobs.job_env.FORWARDED_ENV``).

    Returns:
        Variable name -> value, URLs without ``user:password@``; never a credential,
        cookie, header, proxy or file path.
    """
    return forwarded_env()


def job_entrypoint(job: str, args: tuple[str, ...] | list[str]) -> str:
    """Shell command the cluster runs for ``job`` (``detect`` or ``train``) with ``args``.

    Example:
        >>> job_entrypoint("detect", ["s3://b/scenes", "--out", "/outputs/d x"])
        "python -m jobs.detect s3://b/scenes --out '/outputs/d x'"
    """
    return shlex.join(["python", "-m", JOB_MODULES[job], *args])


def job_runtime_env(working_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """Ray runtime env of a submission: ``working_dir`` (a staged directory) and ``job_env()``."""
    return {"working_dir": str(working_dir), "env_vars": job_env()}


@contextlib.contextmanager
def prepared_runtime_env(project_dir: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """The runtime env ``submit`` passes to Ray: the project's own code, staged, and ``job_env()``.

    The allowlisted paths of ``project_dir`` (``jobs.job_upload.UPLOADED_PATHS``)
    are copied into a temporary directory, which is the ``working_dir`` Ray
    zips and uploads; it is deleted on exit.  Files left out because they look
    like secrets (or are links, or sit in hidden folders) are named in one
    warning line on stderr.

    Args:
        project_dir: the aerialdet project root (``--working-dir``).

    Yields:
        The runtime env dict for ``JobSubmissionClient.submit_job``.
    """
    with tempfile.TemporaryDirectory(prefix="aerialdet-submit-") as staged:
        left_out = stage_project(project_dir, staged)
        if left_out:
            click.echo(
                f"warning: not uploaded from {project_dir} (they look like secrets, or are links or "
                f"in hidden folders): {', '.join(left_out)}",
                err=True,
            )
        yield job_runtime_env(staged)


def read_token(token_file: str | None) -> str:
    """The cluster's auth token, looked up in Ray's order; never printed.

    Args:
        token_file: ``--token-file``, or None for ``$RAY_AUTH_TOKEN``, then
            ``$RAY_AUTH_TOKEN_PATH``, then ``~/.ray/auth_token``.

    Raises:
        UserError: no token anywhere, or a token file that is unreadable or empty.
    """
    if token_file:
        return _read_token_file(Path(token_file).expanduser())
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip()
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return _read_token_file(Path(os.environ["RAY_AUTH_TOKEN_PATH"]).expanduser())
    default = Path.home() / ".ray" / "auth_token"
    if default.is_file():
        return _read_token_file(default)
    raise UserError(
        "no Ray auth token: pass --token-file FILE or set RAY_AUTH_TOKEN (the token the cluster "
        "was started with; `ray get-auth-token` on the head prints it)"
    )


def _read_token_file(path: Path) -> str:
    try:
        token = path.read_text().strip()
    except OSError as exc:
        raise UserError(
            f"token file {path}: {exc.strerror or type(exc).__name__}; pass the file holding the cluster's auth token"
        ) from None
    if not token:
        raise UserError(f"token file {path}: empty; write the cluster's auth token in it")
    return token


def check_address(address: str) -> str:
    """Validate the job API URL; warn when a token would cross a network in clear text.

    Raises:
        click.BadParameter: not an http(s) URL, or one with a user name or password in it.
    """
    parts = urlsplit(address)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise click.BadParameter(
            f"expected the job API URL like {DEFAULT_ADDRESS}, got {address!r}", param_hint="--address"
        )
    if parts.username or parts.password:
        raise click.BadParameter(
            "the URL must not carry credentials; pass the token with --token-file", param_hint="--address"
        )
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        click.echo(
            f"warning: the token goes to {parts.hostname} unencrypted over plain http; reach the job API "
            "through an SSH tunnel or kubectl port-forward on 127.0.0.1 instead",
            err=True,
        )
    return address.rstrip("/")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_job_flags(job: str, args: tuple[str, ...] | list[str]) -> None:
    """Refuse an option the job does not have before anything is uploaded.

    Raises:
        click.UsageError: ``args`` holds ``--flag`` that ``aerialdet JOB`` does not accept.
    """
    command = _job_command(job)
    known = {
        opt for p in command.params for opt in (*getattr(p, "opts", []), *getattr(p, "secondary_opts", []))
    }
    for arg in args:
        if arg == "--":
            break
        flag = arg.split("=", 1)[0]
        if flag.startswith("-") and len(flag) > 1 and not _is_number(flag) and flag not in known:
            raise click.UsageError(f"`aerialdet {job}` has no option {flag}; see `aerialdet {job} --help`")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _job_command(job: str) -> click.Command:
    if job == "detect":
        from jobs.detect import detect_command

        return detect_command
    from jobs.train import train_command

    return train_command


def _client(address: str, token: str) -> JobSubmissionClient:
    """A client that sends the token as a bearer header (it works whatever RAY_AUTH_MODE says here)."""
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers={"Authorization": f"Bearer {token}"})
    except AuthenticationError:
        raise UserError(
            f"the Ray job API at {address} refused the token; pass the token the cluster was started "
            "with (--token-file FILE or RAY_AUTH_TOKEN)"
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise UserError(f"the Ray job API at {address}: {_redact(one_line(exc), token)}") from None


def _redact(text: str, token: str) -> str:
    return text.replace(token, "***") if token else text


async def _stream_logs(client: JobSubmissionClient, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        sys.stdout.write(lines)
        sys.stdout.flush()


def wait_for_job(client: JobSubmissionClient, job_id: str, *, follow: bool = True) -> str:
    """Stream the job's logs (if ``follow``) and return its terminal status name."""
    from ray.job_submission import JobStatus

    if follow:
        asyncio.run(_stream_logs(client, job_id))
    while True:
        status = client.get_job_status(job_id)
        if status in (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED):
            return str(status.value)
        time.sleep(1.0)


def _submit(
    job: str, args: tuple[str, ...], address: str, token_file: str | None, working_dir: str, wait: bool
) -> None:
    """Body of ``aerialdet submit JOB``; exits with the job's status."""
    address = check_address(address)
    check_job_flags(job, args)
    if not (Path(working_dir) / "jobs" / f"{job}.py").is_file():
        raise UserError(
            f"working directory {working_dir}: no jobs/{job}.py; run from the aerialdet project root "
            "or pass --working-dir"
        )
    token = read_token(token_file)
    client = _client(address, token)
    with prepared_runtime_env(Path(working_dir).resolve()) as runtime_env:
        job_id = _submit_with_retry(client, job, args, runtime_env, address, token)
    click.echo(f"submitted job {job_id} to {address}", err=True)
    if not wait:
        click.echo(job_id)
        return
    try:
        status = wait_for_job(client, job_id)
    except KeyboardInterrupt:
        click.echo(
            f"\njob {job_id} keeps running on the cluster; stop it with: "
            f"RAY_AUTH_MODE=token ray job stop --address {address} {job_id}",
            err=True,
        )
        sys.exit(130)
    click.echo(f"job {job_id} {status}", err=True)
    sys.exit(0 if status == "SUCCEEDED" else 1)


def _submit_with_retry(
    client: JobSubmissionClient,
    job: str,
    args: tuple[str, ...],
    runtime_env: dict[str, Any],
    address: str,
    token: str,
) -> str:
    """Submit; a head that has just started refuses jobs until its agent is up, so retry that for a while."""
    deadline = time.monotonic() + AGENT_WAIT_S
    while True:
        try:
            return client.submit_job(
                entrypoint=job_entrypoint(job, args),
                runtime_env=runtime_env,
                metadata={"aerialdet_job": job},
            )
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if "No available agent" in str(exc) and time.monotonic() < deadline:
                time.sleep(2.0)
                continue
            raise UserError(
                f"the Ray job API at {address} refused the job: {_redact(one_line(exc), token)}"
            ) from None


def _job_subcommand(job: str) -> click.Command:
    @click.command(
        job,
        epilog=EPILOG,
        context_settings={"ignore_unknown_options": True, "help_option_names": ["-h", "--help"]},
        short_help=f"Submit `{job}` to a Ray cluster's job API.",
    )
    @click.argument("args", nargs=-1, type=click.UNPROCESSED)
    @click.option(
        "--address",
        envvar="RAY_API_SERVER_ADDRESS",
        default=DEFAULT_ADDRESS,
        show_default=True,
        help="The cluster's job API (dashboard) URL. Default: $RAY_API_SERVER_ADDRESS, else localhost.",
    )
    @click.option(
        "--token-file",
        type=click.Path(dir_okay=False),
        default=None,
        help="File holding the cluster's auth token. Default: $RAY_AUTH_TOKEN, $RAY_AUTH_TOKEN_PATH, "
        "~/.ray/auth_token.",
    )
    @click.option(
        "--working-dir",
        type=click.Path(exists=True, file_okay=False),
        default=".",
        show_default=True,
        help="Project directory whose code (pyproject.toml, README.md, pipeline/, retinanet/, jobs/) is "
        "uploaded with the job, less files that look like secrets.",
    )
    @click.option(
        "--wait/--no-wait", default=True, help="Stream the logs and wait for the end [default: wait]."
    )
    def command(
        args: tuple[str, ...], address: str, token_file: str | None, working_dir: str, wait: bool
    ) -> None:
        _submit(job, args, address, token_file, working_dir, wait)

    command.help = (
        f"Run `aerialdet {job} ARGS` on a Ray cluster through its job API (`python -m jobs.{job} ARGS`), "
        "stream its logs and exit with its status."
    )
    return command


@click.group("submit", epilog=EPILOG)
def submit_command() -> None:
    """Submit a job (detect, train) to a running Ray cluster through its job API."""


for _job in JOB_MODULES:
    submit_command.add_command(_job_subcommand(_job))


def main(argv: list[str] | None = None) -> None:
    """``python -m jobs.submit``: the same as ``aerialdet submit``."""
    submit_command.main(args=argv, prog_name="aerialdet submit")


if __name__ == "__main__":
    main()
