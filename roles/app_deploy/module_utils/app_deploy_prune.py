# Copyright: deploykit
# MIT License (see the role's meta/main.yml)
"""What app_deploy keeps on a host and what it removes, shared by app_deploy_prune and app_deploy_turn."""

from __future__ import annotations

import glob
import json
import os
import shutil


def _docker(module, *args: str) -> tuple[int, str, str]:
    return module.run_command([module.get_bin_path("docker", required=True), *args])


def _containers(module, label: str) -> list[dict]:
    """The app's containers, running or not: their names and image IDs."""
    rc, out, err = _docker(
        module, "ps", "--all", "--no-trunc", "--filter", f"label={label}", "--format", "{{.ID}}"
    )
    if rc != 0:
        module.fail_json(msg=f"could not list the app's containers: {err.strip()}")
    ids = out.split()
    if not ids:
        return []
    # A container removed between the two calls makes inspect exit 1 but print the others.
    _, out, _ = _docker(module, "container", "inspect", "--format", "{{json .Name}} {{json .Image}}", *ids)
    listed = []
    for line in out.splitlines():
        name, image = line.split(" ", 1)
        listed.append({"name": json.loads(name).lstrip("/"), "image_id": json.loads(image)})
    return listed


def _tags_by_image(module, repository: str) -> dict[str, list[str]]:
    rc, out, _ = _docker(
        module, "image", "ls", "--no-trunc", "--format", "{{.ID}} {{.Repository}}:{{.Tag}}", repository
    )
    found: dict[str, list[str]] = {}
    for line in out.splitlines() if rc == 0 else []:
        image_id, tag = line.split(" ", 1)
        tags = found.setdefault(image_id, [])
        if not tag.endswith(":<none>") and tag.startswith(f"{repository}:"):
            tags.append(tag)
    return found


def prune(
    module,
    *,
    label: str,
    name_prefix: str,
    repository: str,
    env_dir: str,
    socket_dir: str,
    kept_releases: list[dict],
) -> dict[str, list[str]]:
    """Remove what no kept release needs: images of `repository` (by tag: an image with several
    tags cannot be removed by ID without force, and other repositories' tags are not the role's),
    environment files in `env_dir`, and socket directories in `socket_dir` whose container is gone.
    Kept: the images and env files of `kept_releases` (the state's history, newest first) and any
    image a container of the app uses. In check mode, says what it would remove."""
    containers = _containers(module, label)
    kept_images = {release["image_id"] for release in kept_releases} | {c["image_id"] for c in containers}
    kept_env_files = {release["env_file"] for release in kept_releases}
    removed: dict[str, list[str]] = {"images": [], "env_files": [], "socket_dirs": []}
    for image_id, tags in sorted(_tags_by_image(module, repository).items()) if repository else []:
        if image_id in kept_images:
            continue
        for tag in tags:
            if not module.check_mode:
                rc, _, err = _docker(module, "image", "rm", tag)
                if rc != 0:
                    module.warn(f"could not remove the image {tag}: {err.strip()}")
                    continue
            removed["images"].append(tag)
    for path in sorted(glob.glob(os.path.join(env_dir, "*.env"))) if env_dir else []:
        if path not in kept_env_files:
            try:
                if not module.check_mode:
                    os.remove(path)
            except OSError as error:
                module.warn(f"could not remove {path}: {error}")
                continue
            removed["env_files"].append(path)
    # A socket directory outlives its container only when a run stopped between the two.
    running = {c["name"][len(name_prefix) :] for c in containers if c["name"].startswith(name_prefix)}
    for path in sorted(glob.glob(os.path.join(socket_dir, "*", ""))) if socket_dir else []:
        path = path.rstrip("/")
        if os.path.basename(path) not in running:
            if not module.check_mode:
                shutil.rmtree(path, ignore_errors=True)
            removed["socket_dirs"].append(path)
    return removed
