"""The ECR lifecycle policy of roles/aws_registry never expires an image a host serves or keeps for rollback.

ECR applies lifecycle policies on AWS only (moto stores the policy and expires nothing), so this
module evaluates the rendered policy itself, by the rules ECR documents for lifecycle policies:
rules are evaluated in rulePriority order; a rule selects the images its tagStatus and
tagPrefixList match (an image matches a prefix list when every prefix matches one of its tags);
imageCountMoreThan keeps the newest countNumber of them by push time and selects the rest,
sinceImagePushed selects those pushed more than countNumber days ago; an image that the tagging
requirements of a rule match can no longer be expired by a later rule, though later rules still
count it; a tagStatus "any" rule comes last. A document using anything else is refused rather
than guessed at.

The deploy against which the policy is checked is the one the role's defaults describe: it tags
an image <prefix><env>-<tag> before any host of the environment switches to it, and untags the
images no host of the environment holds once every host has finished. The history is a run of
pushes much longer than any count of the policy, with failed and half-failed deploys in a row,
rollbacks, an image deployed again long after its push, and a second environment deployed less
often.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import yaml
from ansible.parsing.dataloader import DataLoader
from ansible.template import Templar

from deploykit import iam_lint
from deploykit.system import ROOT

ROLE = ROOT / "roles" / "aws_registry"
# The releases a host keeps, the serving one included: what the deploy's prune and swap keep.
KEEP_RELEASES = yaml.safe_load((ROOT / "roles" / "app_deploy" / "defaults" / "main.yml").read_text())[
    "app_deploy_keep_releases"
]
START = datetime(2026, 1, 1, tzinfo=UTC)
_SELECTION_KEYS = {"tagStatus", "tagPrefixList", "countType", "countUnit", "countNumber"}


def render_defaults(**overrides: Any) -> dict[str, Any]:
    """The role's defaults rendered by Ansible's own templating, as the role's task receives them."""
    defaults = iam_lint.trusted(yaml.safe_load((ROLE / "defaults" / "main.yml").read_text()))
    defaults.update(overrides)
    return Templar(loader=DataLoader(), variables=defaults).template(defaults)


@dataclass
class Image:
    digest: str
    pushed_at: datetime
    tags: set[str] = field(default_factory=set)


def _matches(selection: dict[str, Any], image: Image) -> bool:
    status = selection["tagStatus"]
    if status == "any":
        return True
    if status == "untagged":
        return not image.tags
    if status != "tagged":
        raise ValueError(f"tagStatus {status!r} is not one ECR documents")
    prefixes = selection.get("tagPrefixList")
    if not prefixes:
        raise ValueError("a tagged rule needs a tagPrefixList (tagPatternList is not evaluated here)")
    return all(any(tag.startswith(prefix) for tag in image.tags) for prefix in prefixes)


def expired_by(policy: dict[str, Any], images: list[Image], now: datetime) -> set[str]:
    """The digests the policy expires among images at the time now."""
    rules = sorted(policy["rules"], key=lambda rule: rule["rulePriority"])
    priorities = [rule["rulePriority"] for rule in rules]
    if len(set(priorities)) != len(priorities):
        raise ValueError("rule priorities must be unique")
    if any(rule["selection"]["tagStatus"] == "any" for rule in rules[:-1]):
        raise ValueError("a tagStatus any rule must have the highest rulePriority")
    claimed: set[str] = set()
    expired: set[str] = set()
    for rule in rules:
        selection = rule["selection"]
        if set(selection) - _SELECTION_KEYS or rule["action"] != {"type": "expire"}:
            raise ValueError(f"rule {rule['rulePriority']} uses what this evaluator does not know")
        matching = sorted(
            (image for image in images if _matches(selection, image)),
            key=lambda image: image.pushed_at,
            reverse=True,
        )
        count = selection["countNumber"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ValueError(f"countNumber must be a positive integer, not {count!r}")
        if selection["countType"] == "imageCountMoreThan":
            selected = matching[count:]
        elif selection["countType"] == "sinceImagePushed":
            if selection.get("countUnit") != "days":
                raise ValueError("sinceImagePushed counts days")
            selected = [image for image in matching if now - image.pushed_at > timedelta(days=count)]
        else:
            raise ValueError(f"countType {selection['countType']!r} is not one ECR documents")
        expired |= {image.digest for image in selected if image.digest not in claimed}
        claimed |= {image.digest for image in matching}
    return expired


# ---------------------------------------------------------------------------------------------
# The evaluator against ECR's documented examples of each rule


def _image(number: int, *tags: str) -> Image:
    return Image(f"sha256:{number:04d}", START + timedelta(days=number), set(tags))


def _rule(priority: int, **selection: Any) -> dict[str, Any]:
    return {"rulePriority": priority, "selection": selection, "action": {"type": "expire"}}


def _keep(priority: int, status: str, number: Any, **selection: Any) -> dict[str, Any]:
    """A rule that keeps the newest number images its tags select."""
    return _rule(priority, tagStatus=status, countType="imageCountMoreThan", countNumber=number, **selection)


def test_count_rule_expires_the_oldest_pushed_beyond_the_count():
    images = [_image(n, f"c{n}") for n in range(5)]
    policy = {"rules": [_keep(1, "any", 2)]}
    assert expired_by(policy, images, START) == {"sha256:0000", "sha256:0001", "sha256:0002"}


def test_age_rule_expires_images_pushed_longer_ago_than_the_days():
    images = [_image(n, f"c{n}") for n in range(5)]
    policy = {
        "rules": [_rule(1, tagStatus="any", countType="sinceImagePushed", countUnit="days", countNumber=2)]
    }
    assert expired_by(policy, images, START + timedelta(days=3, hours=1)) == {"sha256:0000", "sha256:0001"}


def test_prefix_list_matches_an_image_only_when_every_prefix_matches_one_of_its_tags():
    images = [_image(0, "prod-1"), _image(1, "prod-2", "beta-2"), _image(2, "beta-3")]
    policy = {"rules": [_keep(1, "tagged", 1, tagPrefixList=["prod", "beta"])]}
    assert expired_by(policy, [*images, _image(3, "prod-4", "beta-4")], START) == {"sha256:0001"}


def test_an_image_an_earlier_rule_matches_is_never_expired_by_a_later_one_but_still_counted():
    images = [_image(0, "keep-0"), _image(1, "c1"), _image(2, "c2"), _image(3, "c3")]
    policy = {"rules": [_keep(1, "tagged", 5, tagPrefixList=["keep"]), _keep(2, "any", 2)]}
    # Rule 2 keeps the two newest (c3, c2) and selects c1 and keep-0; keep-0 belongs to rule 1.
    assert expired_by(policy, images, START) == {"sha256:0001"}


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([_keep(1, "any", 1), _keep(1, "untagged", 1)], "unique"),
        ([_keep(1, "any", 1), _keep(2, "untagged", 1)], "highest rulePriority"),
        ([_keep(1, "tagged", 1, tagPatternList=["prod*"])], "does not know"),
        ([_keep(1, "any", "30")], "positive integer"),
    ],
    ids=["same-priority", "any-not-last", "pattern-list", "count-as-text"],
)
def test_documents_outside_the_documented_rules_are_refused(rules, message):
    with pytest.raises(ValueError, match=message):
        expired_by({"rules": rules}, [_image(0, "c0")], START)


# ---------------------------------------------------------------------------------------------
# The role's policy against a long history of deploys


@dataclass
class Environment:
    name: str
    hosts: list[list[str]]  # per host, the digests of its kept releases, newest first


class World:
    """One repository shared by every environment, the hosts' kept releases, and ECR's expiry."""

    def __init__(self, policy: dict[str, Any], prefix: str | None) -> None:
        self.policy = policy
        # None: a deploy that marks nothing (what the pipeline did before this policy).
        self.prefix = prefix
        self.images: dict[str, Image] = {}
        self.now = START
        self.pushes = 0
        self.environments = {
            "production": Environment("production", [[] for _ in range(3)]),
            "staging": Environment("staging", [[] for _ in range(2)]),
        }
        self.peak_held = 0

    def push(self) -> str:
        self.pushes += 1
        self.now += timedelta(hours=5)
        digest = f"sha256:{self.pushes:05d}"
        self.images[digest] = Image(digest, self.now, {f"{self.pushes:012x}"})
        return digest

    def _tag(self, environment: Environment, digest: str) -> str:
        return f"{self.prefix}{environment.name}-{min(self.images[digest].tags)}"

    def deploy(self, env: str, digest: str, failing_host: int | None = None) -> None:
        """The rolling deploy, one host at a time; a host whose new release is not ready stops it."""
        environment = self.environments[env]
        assert digest in self.images, "a deploy pulls an image the registry still has"
        if self.prefix is not None:
            self.images[digest].tags.add(self._tag(environment, digest))
        for number, history in enumerate(environment.hosts):
            if number == failing_host:
                return
            history[:] = ([digest] + [held for held in history if held != digest])[:KEEP_RELEASES]
        self._release_unheld(environment)

    def rollback(self, env: str) -> None:
        """Back to the previous release on every host; nothing is pulled or tagged."""
        environment = self.environments[env]
        for history in environment.hosts:
            if len(history) > 1:
                history[:] = [history[1], history[0], *history[2:]]
        self._release_unheld(environment)

    def _release_unheld(self, environment: Environment) -> None:
        if self.prefix is None:
            return
        held = {digest for history in environment.hosts for digest in history}
        for digest, image in self.images.items():
            if digest not in held:
                image.tags.discard(self._tag(environment, digest))

    def held(self) -> set[str]:
        return {digest for env in self.environments.values() for history in env.hosts for digest in history}

    def expire(self) -> set[str]:
        """ECR's expiry run, here after every event: the earliest it could ever run."""
        held = self.held()
        self.peak_held = max(self.peak_held, len(held))
        expired = expired_by(self.policy, list(self.images.values()), self.now)
        for digest in expired:
            del self.images[digest]
        return expired & held


def _history(world: World) -> list[tuple[int, set[str]]]:
    """Run the scripted history; returns (push number, held images expired) for every expiry run."""
    rng = random.Random(12)  # noqa: S311 - a reproducible history, not a secret
    lost = []
    for step in range(1, 241):
        digest = world.push()
        if 60 <= step < 100:
            # Forty pushes in a row whose deploy stops at the first host (a migration that fails).
            world.deploy("production", digest, failing_host=0)
        elif step % 17 == 0:
            world.deploy("production", digest, failing_host=1)  # half the fleet switched
        else:
            world.deploy("production", digest)
        if step % 23 == 0:
            world.rollback("production")
        if step % 31 == 0:
            # A release deployed again by its tag, long after it was pushed.
            older = sorted(world.images)[: max(1, len(world.images) // 3)]
            world.deploy("production", rng.choice(older))
        if step % 9 == 0:
            world.deploy("staging", digest)
        lost.append((step, world.expire()))
    return lost


@pytest.fixture(scope="module")
def defaults() -> dict[str, Any]:
    return render_defaults()


def test_the_rendered_policy_is_what_ecr_and_the_evaluator_accept(defaults):
    policy = defaults["aws_registry_lifecycle_policy"]
    assert [rule["rulePriority"] for rule in policy["rules"]] == [1, 2]
    (held_rule, count_rule) = policy["rules"]
    assert held_rule["selection"]["tagPrefixList"] == [defaults["aws_registry_held_tag_prefix"]]
    assert held_rule["selection"]["countNumber"] == defaults["aws_registry_held_images_max"]
    assert count_rule["selection"]["countNumber"] == defaults["aws_registry_keep_images"]
    expired_by(policy, [], START)


def test_no_image_a_host_serves_or_keeps_for_rollback_is_ever_expired(defaults):
    world = World(defaults["aws_registry_lifecycle_policy"], defaults["aws_registry_held_tag_prefix"])
    lost = _history(world)
    assert world.pushes > 4 * defaults["aws_registry_keep_images"]
    assert [(step, sorted(expired)) for step, expired in lost if expired] == []
    # The policy does expire: images no host holds do not pile up.
    assert len(world.images) < world.pushes / 3


def test_every_host_can_still_pull_what_it_serves_and_keeps_after_the_history(defaults):
    world = World(defaults["aws_registry_lifecycle_policy"], defaults["aws_registry_held_tag_prefix"])
    _history(world)
    assert world.held() <= set(world.images)


def test_the_held_images_stay_far_below_the_first_rules_count(defaults):
    world = World(defaults["aws_registry_lifecycle_policy"], defaults["aws_registry_held_tag_prefix"])
    _history(world)
    hosts = sum(len(env.hosts) for env in world.environments.values())
    assert world.peak_held <= hosts * KEEP_RELEASES < defaults["aws_registry_held_images_max"]


def test_without_the_deploys_tag_a_run_of_failed_deploys_expires_the_serving_image(defaults):
    # Why the deploy must mark held images: no count of newest pushes covers them. The same
    # history, with the tag left out, loses the image production serves during the failed run.
    world = World(defaults["aws_registry_lifecycle_policy"], prefix=None)
    lost = _history(world)
    assert next(step for step, expired in lost if expired) < 100
