"""`make demo`: the whole pipeline on the local stand-in, started by a `git push`.

The stand-in's fleet comes up (moto plus three systemd hosts registered as EC2 instances), a local
bare remote gets the push trigger, and the current commit is pushed to its `main`. The hook
applies the webhook filter groups and runs buildspec.yml with the local CodeBuild runner: lint,
tests, image build, push to the registry stand-in, `ansible-playbook deploy.yml` over the dynamic
inventory. The demo ends with the environment's one HTTPS address (the stand-in's load balancer),
how to trust it, and the hosts behind it with the release each serves.
Only committed work is pushed: the build runs on a clean checkout, as CodeBuild's would.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
import urllib.error
import urllib.request

from deploykit import app_image, codebuild, front_door, git_trigger, loadbalancer, network, postgres, standin
from deploykit.system import CACHE, ROOT, SetupError, run, say

REMOTE = CACHE / "remote.git"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
REMOTE_NAME = "local"
BRANCH = "main"


def local_build_overrides() -> dict[str, str]:
    """What a build on the local stand-in differs in, as a CodeBuild project's variables would."""
    overrides = {
        "REGISTRY": f"{network.GATEWAY}:5443",
        "BASE_IMAGE": app_image.LOCAL_BASE_IMAGE,
    }
    if app_image.HOST_CA_BUNDLE.is_file():
        overrides["BUILD_CA_BUNDLE"] = str(app_image.HOST_CA_BUNDLE)
    return overrides


def local_deploy_overrides() -> dict[str, str]:
    """The deploy project's variables for the local environment, as provision.yml sets them on AWS:
    which environment, and the SSM parameter that holds the deploy key (the stand-in stores it)."""
    return {"DEPLOY_ENV": "local", "DEPLOY_SSH_KEY_PARAMETER": standin.DEPLOY_KEY_PARAMETER}


def init_trigger() -> None:
    """The local remote's push trigger: the build project, then the deploy project on success."""
    git_trigger.init_remote(
        REMOTE,
        vars_path=codebuild.PROJECT_VARS,
        builds_dir=codebuild.BUILDS_DIR,
        env_overrides=local_build_overrides(),
        deploy_buildspec=ROOT / codebuild.load_project(stage="deploy").buildspec,
        deploy_env_overrides=local_deploy_overrides(),
    )


def current_commit() -> str:
    result = run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], check=False)
    if result.returncode != 0:
        raise SetupError("this tree has no commit to push; commit your work first")
    return result.stdout.strip()


def _remote_main() -> str:
    result = run(["git", "--git-dir", str(REMOTE), "rev-parse", "--verify", "--quiet", BRANCH], check=False)
    return result.stdout.strip()


def serving(host: standin.Host) -> str:
    """The version a host's nginx serves (its liveness probe names it), or why there is none."""
    try:
        with _NO_PROXY.open(f"http://{host.ip}/healthz/", timeout=5) as response:
            return json.load(response).get("version", "?")
    except (urllib.error.URLError, OSError, ValueError) as error:
        return f"no answer ({error})"


def serving_publicly() -> str:
    """The version the environment's public address serves, as a user's client gets it."""
    try:
        status, _headers, body = front_door.get("/version.json")
        return json.loads(body).get("version", "?") if status == 200 else f"HTTP {status}"
    except (OSError, ValueError) as error:
        return f"no answer ({error})"


def push() -> str:
    """Push the current commit to the local remote's main (the hook builds and deploys it); return it."""
    commit = current_commit()
    init_trigger()
    git_trigger.add_git_remote(REMOTE_NAME, REMOTE)
    if _remote_main() == commit:
        say(f"{REMOTE_NAME}/{BRANCH} is already at {commit[:12]}: nothing to push")
        return commit
    say(f"git push {REMOTE_NAME} HEAD:{BRANCH} ({commit[:12]}): the hook runs buildspec.yml")
    # The pusher's environment reaches the build: the AWS stand-in's endpoint and the database
    # the Django tests use (on CodeBuild, the buildspec starts a throwaway one instead).
    env = standin.tool_env({**os.environ, "DATABASE_URL": postgres.database_url()})
    subprocess.run(
        ["git", "-C", str(ROOT), "push", "--force", REMOTE_NAME, f"HEAD:refs/heads/{BRANCH}"],
        env=env,
        check=True,
    )
    return commit


def up() -> None:
    fleet = standin.up()
    tag = push()[:12]
    # The load balancer takes a host in after healthy_threshold passed checks, interval apart.
    settings = standin.load_balancer_settings()
    wait = (
        settings["aws_load_balancer_healthy_threshold"]
        * settings["aws_load_balancer_health_check_interval_seconds"]
    )
    deadline = time.monotonic() + wait + 10
    while serving_publicly() != tag and time.monotonic() < deadline:
        time.sleep(0.5)
    public = serving_publicly()
    print()
    print(f"  {front_door.URL}   serving {public}")
    print(f"    trust the project's CA: curl --cacert {loadbalancer.CA_CERT} {front_door.URL}")
    print(f"    plain HTTP redirects there: {loadbalancer.HTTP_URL}")
    print("  behind the load balancer (make stand-in-status shows their health checks):")
    failed = [] if public == tag else [front_door.URL]
    for host in fleet:
        version = serving(host)
        print(f"    {host.name}   {host.ip}   {host.distro}   serving {version}")
        if version != tag:
            failed.append(host.name)
    print()
    if failed:
        raise SetupError(
            f"{', '.join(failed)} not serving {tag}; the build's log is the last one under "
            f"{codebuild.BUILDS_DIR.relative_to(ROOT)}/, and `make stand-in-status` shows the hosts"
        )
    say(f"{front_door.URL} serves commit {tag}, built and deployed by the pipeline to every host")


def down() -> None:
    standin.down()
