"""``aioipsec explain`` / ``python -m aioipsec.explain``: options and dispatch."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aioipsec.explain.derivations import explain_run
from aioipsec.explain.diagram import draw_state_diagrams
from aioipsec.explain.export import export_vector
from aioipsec.explain.follow import follow, follow_socket_path
from aioipsec.explain.render import render_explanation
from aioipsec.explain.runner import (
    ExplainError,
    run_negotiation,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=int, help="fixed nonces, SPIs, IVs and DH private values")
    parser.add_argument("--keys", action="store_true",
                        help="show every key derivation step with its RFC section")  # fmt: skip
    parser.add_argument("--ike", default="aes256gcm16-prfsha256-x25519", metavar="PROPOSAL",
                        help="IKE proposal in strongSwan syntax (x25519 or x448)")  # fmt: skip
    parser.add_argument("--esp", default="aes256gcm16", metavar="PROPOSAL",
                        help="ESP proposal in strongSwan syntax (add -x25519 for PFS)")  # fmt: skip
    parser.add_argument("--rekey-ike", action="store_true",
                        help="also rekey the IKE SA (RFC 7296 sec. 2.18)")  # fmt: skip
    parser.add_argument("--encap", action="store_true",
                        help="force UDP encapsulation (port 4500, as behind a NAT)")  # fmt: skip
    parser.add_argument("--export-vector", type=Path, metavar="FILE",
                        help="write the run as a JSON test vector (needs --seed)")  # fmt: skip
    parser.add_argument("--follow", action="store_true",
                        help="print a live daemon's IKE messages and events as a ladder "
                        "(control command 'subscribe'; no keys)")  # fmt: skip
    parser.add_argument("--socket", metavar="PATH",
                        help="--follow: the daemon's control socket (default: $AIOIPSEC_SOCKET "
                        "or /run/aioipsec.sock)")  # fmt: skip
    parser.add_argument("--count", type=int, metavar="N",
                        help="--follow: stop after N IKE messages")  # fmt: skip
    parser.add_argument(
        "--state-diagram",
        type=Path,
        metavar="OUT.png",
        help="draw the IKE/Child SA state machines from ikev2.states and exit",
    )


def run(args: argparse.Namespace) -> int:
    try:
        if args.state_diagram is not None:
            draw_state_diagrams(args.state_diagram)
            print(f"wrote {args.state_diagram}")
            return 0
        if args.follow:
            return follow(follow_socket_path(args.socket), count=args.count)
        if args.export_vector is not None and args.seed is None:
            raise ExplainError("--export-vector needs --seed (a vector must be reproducible)")
        negotiation = run_negotiation(
            args.seed, args.ike, args.esp, encap=args.encap, rekey_ike=args.rekey_ike
        )
        explanation = explain_run(negotiation)
        sys.stdout.write(render_explanation(explanation, keys=args.keys))
        if args.export_vector is not None:
            args.export_vector.write_text(json.dumps(export_vector(explanation), indent=1) + "\n")
            print(f"test vector written to {args.export_vector}", file=sys.stderr)
        return 0 if explanation.ok else 1
    except ExplainError as error:
        print(f"aioipsec explain: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="aioipsec explain",
        description="Run one IKEv2 negotiation (IKE_SA_INIT, IKE_AUTH, CREATE_CHILD_SA, "
        "INFORMATIONAL) between two in-memory aioipsec engines and print it as a ladder "
        "diagram with every payload; --keys adds every key derivation step with its RFC "
        "section, re-computed from the wire and checked. With --follow, print a running "
        "daemon's IKE messages (as it sends and receives them) and engine events live as "
        "the same ladder, from its control socket (no keys are shown).",
    )
    add_arguments(parser)
    return run(parser.parse_args(argv))
