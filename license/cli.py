"""`facecore license ...` (also `python -m facecore_license ...`): the vendor's tools (keygen,
issue), the integrator's (fingerprint, verify, secret, serve, status). docs/license.md has the
procedure. Exit status: 0 done, 1 a licence or check that fails, 2 authd cannot start."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from facecore_license import document
from facecore_license import protocol as P
from facecore_license.document import LicenseError
from facecore_license.fingerprint import NoHardwareIds, collect


def fill(p: argparse.ArgumentParser) -> None:
    """Add the license commands to `p` (the `facecore license` parser, or the module's own)."""
    sub = p.add_subparsers(dest="license_command", required=True)

    s = sub.add_parser("keygen", help="vendor: a new Ed25519 signing key pair")
    s.add_argument("--private", type=Path, required=True, help="private key file to create")
    s.add_argument("--public", type=Path, required=True, help="public key file to create")
    s.set_defaults(func=cmd_keygen)

    s = sub.add_parser("fingerprint", help="this machine's fingerprint, and the parts in it")
    s.add_argument("--json", action="store_true", help="as JSON")
    s.set_defaults(func=cmd_fingerprint)

    s = sub.add_parser("issue", help="vendor: sign a licence for a fingerprint")
    s.add_argument("--key", type=Path, required=True, help="the vendor's private key")
    s.add_argument("--licensee", required=True)
    s.add_argument("--fingerprint", required=True, help="from `facecore license fingerprint`")
    s.add_argument("--seats", type=int, required=True, help="GPUs (or CPU workers) at once")
    s.add_argument("--features", choices=sorted(document.FEATURES), required=True)
    s.add_argument(
        "--not-before", default=None, help="UTC ISO 8601 (default: 00:00 UTC of the issue day)"
    )
    s.add_argument("--expiry", default=None, help="UTC ISO 8601 (default: perpetual)")
    s.add_argument(
        "--models",
        default=None,
        help="model families covered, comma-separated (default: those of --manifest)",
    )
    s.add_argument(
        "--manifest",
        type=Path,
        default=None,
        help="a models manifest.json (default: $FACECORE_MODELS or ./models/onnx)",
    )
    s.add_argument("--out", type=Path, required=True, help="the licence file to write")
    s.set_defaults(func=cmd_issue)

    s = sub.add_parser("verify", help="check a licence's signature and terms")
    s.add_argument("license", type=Path)
    s.add_argument("--pubkey", type=Path, required=True, help="the vendor's public key")
    s.add_argument("--here", action="store_true", help="also check this machine's fingerprint")
    s.set_defaults(func=cmd_verify)

    s = sub.add_parser("secret", help="a new shared secret file for authd and its services")
    s.add_argument("out", type=Path)
    s.set_defaults(func=cmd_secret)

    s = sub.add_parser("serve", help="run authd, the authorisation service, on this machine")
    s.add_argument("license", type=Path)
    s.add_argument("--pubkey", type=Path, required=True, help="the vendor's public key")
    s.add_argument("--secret-file", type=Path, required=True, help="the shared secret")
    s.add_argument("--host", default="0.0.0.0")
    s.add_argument("--port", type=int, default=P.PORT)
    s.add_argument("--lease-seconds", type=float, default=P.LEASE_SECONDS)
    s.add_argument("--max-skew", type=float, default=P.MAX_SKEW, help="clock tolerance, s")
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=cmd_serve)

    s = sub.add_parser("status", help="authd's licence and leases")
    s.add_argument("url", help=f"http://host[:{P.PORT}]")
    s.add_argument("--secret-file", type=Path, required=True)
    s.set_defaults(func=cmd_status)


def cmd_keygen(args: argparse.Namespace) -> int:
    kid = document.keygen(args.private, args.public)
    print(json.dumps({"key_id": kid, "private": str(args.private), "public": str(args.public)}))
    print("Keep the private key off every customer machine; ship the public one.", file=sys.stderr)
    return 0


def cmd_fingerprint(args: argparse.Namespace) -> int:
    fp = collect()
    if args.json:
        print(json.dumps(fp.as_dict(), indent=2))
        return 0
    print(f"fingerprint {fp.digest}")
    for kind, value in fp.parts:
        print(f"  used     {kind:<11} {value}")
    for source, why in fp.skipped:
        print(f"  skipped  {source} ({why})")
    return 0


def cmd_issue(args: argparse.Namespace) -> int:
    if args.models:
        models = [m.strip() for m in args.models.split(",") if m.strip()]
    else:
        manifest = args.manifest or _default_manifest()
        models = document.model_families(json.loads(manifest.read_text()))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    # Midnight, not now: a customer's clock a little behind the vendor's must not refuse it.
    midnight = now.replace(hour=0, minute=0, second=0)
    doc = document.issue(
        document.load_private(args.key),
        licensee=args.licensee,
        fingerprint=args.fingerprint,
        seats=args.seats,
        feature=args.features,
        models=models,
        not_before=document.utc(args.not_before) if args.not_before else midnight,
        expiry=document.utc(args.expiry) if args.expiry else None,
        issued=now,
    )
    text = json.dumps(doc, indent=2) + "\n"
    document.write_new(args.out, text.encode(), "issue does not overwrite a licence")
    print(json.dumps(doc["license"], indent=2))
    return 0


def _default_manifest() -> Path:
    env = os.environ.get("FACECORE_MODELS")
    return Path(env or "models/onnx") / "manifest.json"


def cmd_verify(args: argparse.Namespace) -> int:
    lic, _ = document.read(args.license, document.load_public(args.pubkey))
    problems = [p for p in [lic.out_of_terms(datetime.now(timezone.utc).timestamp())] if p]
    if args.here:
        here = collect().digest
        if here != lic.fingerprint:
            problems.append(f"this machine's fingerprint is {here}, not the licence's")
    print(json.dumps({"license": lic.fields(), "ok": not problems, "problems": problems}, indent=2))
    return 1 if problems else 0


def cmd_secret(args: argparse.Namespace) -> int:
    secret = (P.new_secret() + "\n").encode()
    document.write_new(args.out, secret, "secret does not overwrite a secret", mode=0o600)
    print(f"wrote {args.out}: copy it to authd's machine and every face service's", file=sys.stderr)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from facecore_license import authd

    logging.basicConfig(
        level=getattr(logging, args.log_level.upper()),
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.lease_seconds <= 0 or args.max_skew <= 0:
        print("facecore license serve: --lease-seconds and --max-skew must be > 0", file=sys.stderr)
        return 2
    try:
        service = authd.prepare(
            args.license, args.pubkey, args.secret_file, args.lease_seconds, args.max_skew
        )
    except (LicenseError, P.SecretError, NoHardwareIds) as e:
        print(f"facecore license serve: {e}", file=sys.stderr)
        return 2
    authd.serve(service, args.host, args.port)
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from facecore_license.client import AuthdClient, AuthdError

    try:
        answer: dict[str, Any] = AuthdClient(args.url, P.read_secret(args.secret_file)).status()
    except AuthdError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="facecore license", description=__doc__.split("\n")[0])
    fill(p)
    return run(p.parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run a parsed license command; a LicenseError or an unusable file is one line, exit 1."""
    try:
        code: int = args.func(args)
    except (LicenseError, P.SecretError, NoHardwareIds, OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return code
