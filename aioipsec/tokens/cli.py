"""``aioipsec token``: what is in a PKCS#11 module or a TPM, without secrets.

    aioipsec token list --module NAME [-c aioipsec.toml] [--pin-stdin] [--json]
    aioipsec token list --tpm [--tcti swtpm:host=127.0.0.1,port=2321] [--json]

``NAME`` is a module of ``[pkcs11.modules.NAME]`` in the TOML file, or a module's path.
Without a PIN only public objects show (most tokens hide private keys until a login);
``--pin-stdin`` reads the PIN from standard input (never from the command line, where
``ps`` shows it). A wrong PIN is reported and not retried.
"""

from __future__ import annotations

import argparse
import json
import sys
import tomllib
from pathlib import Path
from typing import Any

from aioipsec.tokens import TokenError

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="aioipsec token",
        description="List the keys and certificates of a PKCS#11 module or a TPM (no "
        "secrets). Needs no daemon.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    listing = commands.add_parser(
        "list",
        help="slots, keys (type, size, CKA_ID or handle) and certificates",
        description="List slots, keys (type, size, CKA_ID or TPM handle) and certificates.",
    )
    which = listing.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--module",
        metavar="NAME",
        help="a module of [pkcs11.modules.NAME] in the TOML file (-c), or a module's path",
    )
    which.add_argument("--tpm", action="store_true", help="the TPM's persistent keys")
    listing.add_argument("-c", "--config", type=Path, metavar="FILE", help="the TOML file")
    listing.add_argument(
        "--tcti", help="the TPM to ask (default: [tpm] tcti of -c, else tpm2-tss's default)"
    )
    listing.add_argument(
        "--pin-stdin",
        action="store_true",
        help="log in with the PIN read from standard input (shows private keys)",
    )
    listing.add_argument("--json", action="store_true", help="print JSON")
    return parser


def _toml(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as error:
        raise TokenError(f"cannot read {path}: {error}", "give the TOML file with -c") from None


def module_path(name: str, config: Path | None) -> str:
    """The path of module ``name`` ([pkcs11.modules.NAME] path), or ``name`` if a path."""
    if "/" in name:
        return name
    modules = _toml(config).get("pkcs11", {}).get("modules", {})
    if name in modules and isinstance(modules[name], dict) and "path" in modules[name]:
        return str(modules[name]["path"])
    known = ", ".join(sorted(modules)) or "none"
    raise TokenError(
        f"PKCS#11 module {name!r} is not configured (configured: {known})",
        "give -c with the TOML file that has [pkcs11.modules.NAME] path = ..., or the path",
    )


def _print_pkcs11(listings: list[Any], path: str) -> None:
    if not listings:
        print(f"{path}: no slot with an initialised token")
    for entry in listings:
        login = "logged in" if entry.logged_in else "not logged in: public objects only"
        print(f"slot {entry.slot_id}: token {entry.label!r} ({entry.manufacturer}, {entry.model})")
        print(f"  {login}")
        for key in entry.keys:
            label = f"  label {key['label']!r}" if key["label"] else ""
            print(f"  {key['class']:7} key  {key['type']:12} id {key['id']}{label}")
        for cert in entry.certificates:
            print(f"  certificate       id {cert['id']}  {cert['subject']}")
        if not entry.keys and not entry.certificates:
            print("  (no objects visible)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.tpm:
            from aioipsec.tokens.tpm import list_persistent

            tcti = args.tcti or _toml(args.config).get("tpm", {}).get("tcti")
            handles = list_persistent(tcti)
            if args.json:
                print(json.dumps({"tcti": tcti, "persistent": handles}, indent=2))
            else:
                print(f"TPM {tcti or '(default TCTI)'}: {len(handles)} persistent object(s)")
                for entry in handles:
                    extra = ", ".join(
                        f"{k} {v}" for k, v in entry.items() if k not in ("handle", "type")
                    )
                    print(f"  {entry['handle']}  {entry['type']:16} {extra}")
            return 0
        from aioipsec.tokens.pkcs11 import list_module

        path = module_path(args.module, args.config)
        pin = sys.stdin.readline().rstrip("\n") if args.pin_stdin else None
        listings = list_module(path, pin)
        if args.json:
            print(json.dumps([vars(entry) for entry in listings], indent=2))
        else:
            _print_pkcs11(listings, path)
        return 0
    except TokenError as error:
        print(f"aioipsec token: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
