"""CLI handlers for the auth file: ``ballistics auth add-user | list | revoke``.

``add-user`` prints the new token once, alone on stdout (so ``TOKEN=$(ballistics auth
add-user ...)`` works); the file keeps only its SHA-256. A running server reads the auth file
at start-up: restart it after a change. Exit status: 0 ok, 2 bad input (one line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys

from .auth import AuthConfigError, add_user, list_users, revoke_user


def _fail(msg: str) -> int:
    print(f"ballistics: {msg}", file=sys.stderr)
    return 2


def cmd_auth(args: argparse.Namespace) -> int:
    try:
        if args.action == "add-user":
            token = add_user(args.auth, args.user, args.agency, args.role)
            print(token, flush=True)
            print(
                f"ballistics: token for {args.user} ({args.agency}, {args.role}) printed above;"
                f" it is shown only this once (only its SHA-256 is kept in {args.auth})."
                " Give it with --token=TOKEN or env BALLISTICS_TOKEN; restart a running server"
                " to accept it.",
                file=sys.stderr,
            )
            return 0
        if args.action == "list":
            users = list_users(args.auth)
            if args.json:
                for u in users:
                    print(json.dumps(u, sort_keys=True))
            else:
                for u in users:
                    print(f"{u['user']:<24} {u['agency']:<24} {u['role']}")
                print(f"{len(users)} user(s) in {args.auth}")
            return 0
        if args.action == "revoke":
            if not revoke_user(args.auth, args.user):
                return _fail(f"{args.auth}: no user {args.user!r} (see 'ballistics auth list')")
            print(
                f"revoked {args.user} in {args.auth}; restart a running server to apply",
                file=sys.stderr,
            )
            return 0
    except AuthConfigError as e:
        return _fail(str(e))
    except OSError as e:
        return _fail(f"{args.auth}: {e.strerror or e}")
    return _fail(f"unknown auth action {args.action!r}")  # pragma: no cover - argparse checks
