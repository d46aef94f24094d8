"""``aioipsec explain``: one IKEv2 negotiation between two in-memory peers, told byte by byte.

Two real engines (``ikev2.dispatcher.Dispatcher``, the daemon's own) talk through a list
in memory with a virtual clock: IKE_SA_INIT, IKE_AUTH (with the first Child SA),
CREATE_CHILD_SA (rekeying that Child SA), INFORMATIONAL (the Delete of the old Child SA),
with ``--rekey-ike`` a CREATE_CHILD_SA rekeying the IKE SA (sec. 2.18) and the Delete of
the old one, and INFORMATIONAL (the Delete of the IKE SA). Every message is printed as a ladder
diagram with each payload's fields; ``--keys`` adds every key derivation step with its
inputs and outputs and the RFC section that defines it:

* g^ir (RFC 7296 sec. 2.14, RFC 8031 for Curve25519/Curve448);
* SKEYSEED and the seven SK_* keys (sec. 2.13 prf+, sec. 2.14);
* the SK payload protection of each message (sec. 3.14, RFC 5282 sec. 5.1);
* the AUTH octets of both sides (sec. 2.15);
* each Child SA's KEYMAT and its split (sec. 2.17).

Nothing is taken on trust from the engine: the explanation re-derives every key from the
bytes on the wire (and the two key-exchange private values), decrypts the engine's SK
payloads with them, recomputes both AUTH payloads and compares the Child SA keys with the
ones the engines installed. A mismatch is printed as ``MISMATCH`` (exit status 1).

Deterministic with ``--seed N``: nonces, SPIs, IVs and the X25519/X448 private values all
come from the engines' injectable ``rng`` (seeded per side), so a class can reproduce the
same bytes; ``--export-vector FILE`` writes them as a JSON test vector. Reproducibility
needs a Curve25519/Curve448 key exchange (the engine draws ECP/MODP/ML-KEM private values
from the OS) and an AEAD cipher (AES-CBC IVs come from ``os.urandom``, sec. 3.14).

``--follow`` watches a live daemon instead: it subscribes on the control socket
(``--socket``, the ``subscribe`` command) and prints the same ladder, live, for every IKE
message the daemon sends or receives (exchange, Message ID, direction, payload names
decoded by the daemon with our parser; encrypted messages stay encrypted, their SK payload
names the first payload inside) and a line per engine event (IKE SA established, Child SA
installed, deleted, ...). No keys travel on the stream; a daemon started with
``--save-keys`` names its key files once at the top. ``--count N`` stops after N messages.

``--state-diagram OUT.png`` draws the IKE SA and Child SA state machines from
``ikev2.states`` (needs matplotlib, the ``docs`` extra).

Modules (each imports only modules above it in this list)::

    runner       the in-memory negotiation (Run, WireMessage, run_negotiation)
    derivations  every key re-derived from the wire and checked (explain_run)
    render       the ladder diagram and the derivation steps as text
    follow       --follow: a live daemon's subscribe stream as the same ladder
    export       --export-vector: a seeded run as a JSON test vector
    diagram      --state-diagram: ikev2.states drawn with matplotlib
    cli          the options and main()
"""

from aioipsec.explain.cli import add_arguments, main, run
from aioipsec.explain.derivations import Explanation, Step, explain_run, x_shared
from aioipsec.explain.diagram import draw_state_diagrams
from aioipsec.explain.export import export_vector
from aioipsec.explain.follow import follow, render_follow_record
from aioipsec.explain.render import render_explanation, render_step
from aioipsec.explain.runner import (
    ExplainError,
    RecordingRng,
    Run,
    WireMessage,
    check_options,
    run_negotiation,
)

__all__ = [
    "ExplainError",
    "Explanation",
    "RecordingRng",
    "Run",
    "Step",
    "WireMessage",
    "add_arguments",
    "check_options",
    "draw_state_diagrams",
    "explain_run",
    "export_vector",
    "follow",
    "main",
    "render_explanation",
    "render_follow_record",
    "render_step",
    "run",
    "run_negotiation",
    "x_shared",
]
