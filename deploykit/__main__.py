"""Command line of the project's tooling: `python -m deploykit <command>`."""

from __future__ import annotations

import argparse
import os
import secrets
import sys

from deploykit import apt_cache, engine, images, postgres, registry
from deploykit.system import ROOT, main_guard, run, say


def platform_up(_args: argparse.Namespace) -> None:
    engine.ensure_engine()
    postgres.ensure_cluster()
    say(f"PostgreSQL ready: URL in {postgres.URL_FILE}")
    images.ensure_images()
    say(f"registry (ECR stand-in) on {registry.ensure_registry()}, CA {registry.CA_CERT}")
    say(f"apt cache for the test hosts on {apt_cache.ensure_apt_cache()}")
    say("local platform ready")


def check_deploy(_args: argparse.Namespace) -> None:
    """Django's deployment checks on production settings, given only the required variables."""
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "config.settings.production",
        "DJANGO_SECRET_KEY": secrets.token_urlsafe(50),
        "DJANGO_ALLOWED_HOSTS": "app.example.com",
        "DATABASE_URL": "postgres://app:unused@db.example.com:5432/app",
    }
    result = run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT / "django_app",
    )
    print(result.stdout.strip())


def demo(args: argparse.Namespace) -> None:
    from deploykit import demo as demo_module

    demo_module.down() if args.down else demo_module.up()


def push(_args: argparse.Namespace) -> None:
    from deploykit import demo as demo_module

    demo_module.push()


def bench(args: argparse.Namespace) -> None:
    from deploykit import bench as bench_module

    bench_module.run_all(tuple(args.part or ("image", "deploy")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m deploykit")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "platform-up", help="start the engine, PostgreSQL and the registry; build base images"
    ).set_defaults(func=platform_up)
    commands.add_parser("check-deploy", help="Django's deploy checks on production settings").set_defaults(
        func=check_deploy
    )
    demo_parser = commands.add_parser("demo", help="stand-in up, push this commit, build, deploy, print URLs")
    demo_parser.add_argument("--down", action="store_true", help="remove the stand-in's hosts and moto")
    demo_parser.set_defaults(func=demo)
    commands.add_parser(
        "push", help="push this commit to the local remote: the hook builds and deploys it"
    ).set_defaults(func=push)
    bench_parser = commands.add_parser("bench", help="measure; write reports/bench.json, docs/benchmarks.md")
    bench_parser.add_argument(
        "--part",
        action="append",
        choices=[
            "image",
            "deploy",
            "noop",
            "rollout",
            "push",
            "lb",
            "switch",
            "canary",
            "inventory",
            "fanout",
        ],
        help="only these benchmarks (default: all; deploy is every one after it)",
    )
    bench_parser.set_defaults(func=bench)
    args = parser.parse_args(argv)
    return main_guard(lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
