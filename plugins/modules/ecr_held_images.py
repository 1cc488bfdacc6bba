#!/usr/bin/python
"""The documentation of ecr_held_images: the work is done on the controller (plugins/action/)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: ecr_held_images
short_description: Mark in ECR the images an environment's hosts hold, so the lifecycle policy keeps them
description:
  - Each image an environment holds (serves, or keeps for a rollback) gets the tag
    C(<prefix><environment>-<image tag>), for example C(held-production-3f2c1e9d8b7a). The ECR
    repository's lifecycle policy (roles/aws_registry) never expires an image with such a tag.
  - A mark is added by reading the image's manifest (C(BatchGetImage)) and putting it again under
    the new tag (C(PutImage)); a new tag is allowed in an IMMUTABLE repository. With
    O(exclusive), the environment's marks on every other image are removed (C(BatchDeleteImage) by
    tag; the image keeps its own tag and falls under the lifecycle's count again).
  - Marks already there on the image their tag names are left alone, so a second run with the
    same tags changes nothing; a mark on another image (its tag was pushed again after it had
    been deleted) is removed and made again on the tag's image.
    Check mode reads and reports what it would add and remove.
  - An action plugin; it runs on the controller with boto3 and the AWS environment
    (C(AWS_PROFILE), keys, C(AWS_ENDPOINT_URL)), never on a host.
options:
  repository:
    description: The ECR repository's name (C(deploykit/app)), in the account of the credentials.
    type: str
    required: true
  environment:
    description:
      - The environment that holds the images (C(app_env)). Letters, digits and C(_) only, so that
        no environment's marks begin with another's.
    type: str
    required: true
  tags:
    description: The image tags the environment holds.
    type: list
    elements: str
    required: true
  prefix:
    description: The prefix the lifecycle policy protects (C(aws_registry_held_tag_prefix)).
    type: str
    default: held-
  exclusive:
    description: Remove the environment's marks from images not in O(tags).
    type: bool
    default: false
  missing:
    description:
      - What a tag of O(tags) that is not in the repository does. C(fail) fails the task (before a
        deploy switches anything to an image that is not there); C(warn) leaves it unmarked with a
        warning (a release a host still runs whose image has gone).
    type: str
    choices: [fail, warn]
    default: fail
  region:
    description: The AWS region of the repository; empty uses the AWS environment or profile.
    type: str
    aliases: [aws_region, ec2_region]
requirements:
  - boto3 (on the controller)
author: deploykit
"""

EXAMPLES = r"""
- name: Ensure production holds the image it deploys
  ecr_held_images:
    repository: deploykit/app
    environment: production
    tags: [3f2c1e9d8b7a]

- name: Ensure only the images production's hosts keep are marked
  ecr_held_images:
    repository: deploykit/app
    environment: production
    tags: [3f2c1e9d8b7a, 9a8b7c6d5e4f]
    exclusive: true
    missing: warn
"""

RETURN = r"""
added:
  description: The marks added (or, in check mode, that would be).
  returned: always
  type: list
  sample: [held-production-3f2c1e9d8b7a]
moved:
  description:
    - The marks that named another image than their tag names now (a tag pushed again after it
      was deleted), removed and made again on the tag's image; also in RV(added).
  returned: always
  type: list
removed:
  description: The marks removed (or that would be), with O(exclusive).
  returned: always
  type: list
held:
  description: The environment's marks on the images of O(tags) after the call.
  returned: always
  type: list
missing:
  description: The tags of O(tags) that are not in the repository.
  returned: always
  type: list
"""
