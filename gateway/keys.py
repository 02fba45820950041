"""Make an API key: python -m gateway.keys new --name acme --scopes score

Prints the key once (give it to the client; it is not stored anywhere) and
the API_KEYS entry to configure (a hash; the key cannot be read back from it).
"""

from __future__ import annotations

import argparse
import secrets
import sys

from gateway.auth import SCOPES, digest, parse_api_keys


def new_key() -> str:
    return f"rk_{secrets.token_urlsafe(32)}"


def entry(name: str, scopes: list[str], key: str) -> str:
    line = f"{name}:{'+'.join(scopes)}:{digest(key)}"
    parse_api_keys(line)  # the entry must read back
    return line


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gateway.keys")
    commands = parser.add_subparsers(dest="command", required=True)
    new = commands.add_parser("new", help="make a key and its API_KEYS entry")
    new.add_argument("--name", required=True, help="who the key is for")
    new.add_argument(
        "--scopes",
        default="score",
        help=f"'+'- or ','-separated, of: {', '.join(SCOPES)} (default: score)",
    )
    args = parser.parse_args(argv)

    scopes = [s for s in args.scopes.replace(",", "+").split("+") if s]
    key = new_key()
    try:
        line = entry(args.name, scopes, key)
    except ValueError as exc:
        parser.error(str(exc))
    print(f"key (shown once, give it to {args.name}): {key}")
    print(f"API_KEYS entry (configure this; it holds only a hash): {line}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
