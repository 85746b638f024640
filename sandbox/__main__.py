"""``python -m sandbox [--host 127.0.0.1] [--port 8765] [--public-url URL] [--log-level info]``."""

from __future__ import annotations

import argparse
import logging
import sys

import uvicorn

from sandbox.app import build_app
from sandbox.config import ConfigError, load_settings
from sandbox.transport import DroppableH11Protocol

logger = logging.getLogger(__name__)

GO_MAX_HEADER_BYTES = 1 << 20


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m sandbox",
        description="Local stand-in for pymthouse and the Livepeer signer/runner/AI gateway.",
    )
    parser.add_argument("--host", help="bind address (env SANDBOX_HOST, default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (env SANDBOX_PORT, default 8765)")
    parser.add_argument(
        "--public-url",
        help="base of every URL handed out (env SANDBOX_PUBLIC_URL, default http://HOST:PORT)",
    )
    parser.add_argument(
        "--log-level",
        choices=["critical", "error", "warning", "info", "debug"],
        help="env SANDBOX_LOG_LEVEL, default info",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        settings = load_settings(
            host=args.host, port=args.port, public_url=args.public_url, log_level=args.log_level
        )
    except ConfigError as exc:
        sys.stderr.write(f"sandbox: configuration error: {exc}\n")
        return 2
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    app = build_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        http=DroppableH11Protocol,
        lifespan="off",
        log_level=settings.log_level,
        server_header=False,
        # Go's net/http accepts 1 MiB of request line and headers (DefaultMaxHeaderBytes);
        # h11's default 16 KiB would refuse long runner URLs and segment credentials first.
        h11_max_incomplete_event_size=GO_MAX_HEADER_BYTES,
    )
    # The one start-up line: where it listens and which app it serves (never the secret).
    sys.stdout.write(
        f"sandbox: serving pymthouse + Livepeer stand-ins at {settings.public_url} "
        f"(bound {settings.host}:{settings.port}; app {settings.app_id}, "
        f"m2m {settings.m2m_client_id})\n"
    )
    sys.stdout.flush()
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
