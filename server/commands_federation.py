"""``ballistics federation inbox | hits | check``: a federated server's records, read locally.

``inbox`` lists the national contact point's queue (requests from peer servers and the local
casings each returned); ``hits`` the confirmed hits across borders, on both sides; ``check``
validates a federation config the way ``serve --federation`` does.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _err(msg: str) -> None:
    print(f"ballistics federation: {msg}", file=sys.stderr)


def cmd_federation(args: argparse.Namespace) -> int:
    from .federation_config import FederationConfig, FederationConfigError
    from .federation_store import DB_NAME, FederationStore

    if args.action == "check":
        if not args.config:
            _err("check needs --config FILE")
            return 2
        try:
            cfg = FederationConfig.from_file(args.config)
            cfg.check_credentials()
        except FederationConfigError as e:
            _err(str(e))
            return 2
        print(
            f"{args.config}: server {cfg.name!r}, contact point {cfg.contact_agency!r},"
            f" {len(cfg.peers)} peer(s), {len(cfg.agreements)} agreement(s)"
        )
        for a in cfg.agreements.values():
            print(
                f"  {a.id} with {a.peer}: send from {', '.join(sorted(a.send_agencies)) or '-'};"
                f" {'accepts' if a.accept_requests else 'refuses'} requests; {a.scope_text()}"
            )
        return 0
    if not args.data_dir:
        _err(f"{args.action} needs --data-dir (the server's store folder)")
        return 2
    if not (Path(args.data_dir) / DB_NAME).is_file():
        _err(f"{args.data_dir}: no {DB_NAME}; has this server run with --federation?")
        return 2
    store = FederationStore(args.data_dir)
    try:
        if args.action == "inbox":
            rows = store.incoming(limit=max(1, args.limit))
        else:
            rows = [h.as_dict() for h in store.hits()]
    finally:
        store.close()
    if args.json:
        for r in rows:
            print(json.dumps(r, sort_keys=True))
        return 0
    if not rows:
        print("nothing recorded")
    for r in rows:
        if args.action == "inbox":
            print(
                f"{r['received_at']}  from {r['peer']}/{r['requesting_agency']} under"
                f" {r['agreement_id']} -> {r['contact_agency']}: {len(r['candidates'])}"
                f" candidate(s), {r['state']}"
            )
        else:
            print(
                f"{r['recorded_at']}  hit {r['hit_id']} ({r['side']}) with {r['peer']} under"
                f" {r['agreement_id']}: local {r['local_casing_id']} ~ {r['foreign_ref']}"
                f" by {r['examiner']} ({r['requesting_agency']})"
            )
    return 0
