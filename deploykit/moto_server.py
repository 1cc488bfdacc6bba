"""moto's server, with the two answers the stand-in needs and moto cannot give.

On AWS, GetConsoleOutput returns what an instance printed to its serial console; cloud-init prints
the instance's SSH host keys there at first boot, and the deploy reads them from it
(`python -m deploykit.known_hosts`) instead of trusting whatever key answers first. moto returns
the same fixed kernel log for every instance and has no API to set another. The stand-in plays
the hypervisor: it writes each registered instance's console to `<console dir>/<instance id>` (the
host's real keys, in cloud-init's format), and this server answers GetConsoleOutput from that file,
falling back to moto's own answer for an instance that has none.

CodeBuild's UpdateProject is missing from moto (HTTP 500). provision.yml sets each project's
concurrent build limit with it (plugins/modules/codebuild_build_limit.py); this server takes an
UpdateProject that sets concurrentBuildLimit alone, keeps it on the project for BatchGetProjects to
return, and refuses any other field (InvalidInputException), so nothing else looks updated that is
not.

ECR's API and its registry are one store on AWS, but moto keeps images of its own that no
`docker push` reaches. Given the registry (--registry URL of its v2 API, --registry-data its
storage root, --registry-ca the CA its certificate is signed by), this server answers ListImages,
DescribeImages, BatchGetImage, PutImage and BatchDeleteImage from that registry
(deploykit/ecr_registry.py): what the build pushed is what ECR's API sees, and a tag PutImage adds
is one `docker pull` finds. Without them, ECR's images are moto's own. Everything else is moto
unchanged.

CLI: python -m deploykit.moto_server --console-dir DIR [--registry URL --registry-data DIR
     --registry-ca FILE] [moto_server's arguments: -H HOST -p PORT]
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from moto.codebuild.exceptions import InvalidInputException, ResourceNotFoundException
from moto.codebuild.responses import CodeBuildResponse
from moto.core.responses import ActionResult
from moto.core.utils import utcnow
from moto.ec2.responses.general import General
from moto.ec2.utils import Base64EncodedString
from moto.server import main as moto_main

from deploykit import ecr_registry

_moto_console_output = General.get_console_output


def console_file(console_dir: Path, instance_id: str) -> Path:
    """Where the stand-in writes the console of `instance_id`."""
    return console_dir / instance_id


def _answer_from(console_dir: Path) -> Callable[[General], ActionResult]:
    def get_console_output(self: General) -> ActionResult:
        instance_id = self._get_param("InstanceId")
        # Raises moto's own InvalidInstanceID.NotFound for an unknown instance, as EC2 does.
        instance = self.ec2_backend.get_instance(instance_id)
        try:
            text = console_file(console_dir, instance.id).read_text(encoding="utf-8")
        except OSError:
            return _moto_console_output(self)
        output = Base64EncodedString.from_raw_string(text)
        return ActionResult({"InstanceId": instance.id, "Timestamp": utcnow(), "Output": output})

    return get_console_output


def update_project(self: CodeBuildResponse) -> ActionResult:
    """UpdateProject of concurrentBuildLimit alone (-1 removes the limit, as on AWS)."""
    name = self._get_param("name")
    others = sorted(set(json.loads(self.body or "{}")) - {"name", "concurrentBuildLimit"})
    if others:
        raise InvalidInputException(
            f"the stand-in's UpdateProject sets concurrentBuildLimit only, not {others}"
        )
    project = self.codebuild_backend.codebuild_projects.get(name)
    if project is None:
        raise ResourceNotFoundException(f"Project cannot be found: {name}")
    limit = self._get_param("concurrentBuildLimit")
    if limit is None or limit == -1:
        project.project_metadata.pop("concurrentBuildLimit", None)
    elif limit < 1:
        raise InvalidInputException(f"concurrentBuildLimit must be 1 or more, or -1: {limit}")
    else:
        project.project_metadata["concurrentBuildLimit"] = limit
    return ActionResult({"project": project.project_metadata})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m deploykit.moto_server", add_help=False)
    parser.add_argument("--console-dir", type=Path, required=True)
    parser.add_argument("--registry", metavar="URL")
    parser.add_argument("--registry-data", type=Path, metavar="DIR")
    parser.add_argument("--registry-ca", type=Path, metavar="FILE")
    args, moto_args = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    registry = (args.registry, args.registry_data, args.registry_ca)
    if any(registry) and not all(registry):
        parser.error("--registry, --registry-data and --registry-ca go together")
    General.get_console_output = _answer_from(args.console_dir)
    CodeBuildResponse.update_project = update_project
    if args.registry:
        ecr_registry.install(ecr_registry.Registry(args.registry, args.registry_data, args.registry_ca))
    moto_main(moto_args)


if __name__ == "__main__":
    main()
