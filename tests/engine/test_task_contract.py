"""The contract between an IKE SA and its tasks (``ikev2.tasks.context``): tasks use only
what ``TaskContext`` declares, ``IkeSa`` provides all of it, the task modules never import
``ikev2.sa``, every exchange type has its route, and local misuse is a ``UsageError``,
apart from the peer's ``ProtocolError``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from ikev2.enums import ExchangeType, NotifyType
from ikev2.errors import LocalProtocolError, ProtocolError, RemoteProtocolError, UsageError
from ikev2.events import IkeSaDeleted
from ikev2.keymat import Keymat
from ikev2.message import decrypt_message, parse_message
from ikev2.payloads import NotifyPayload
from ikev2.sa import IkeSa
from ikev2.states import IkeState
from ikev2.tasks.context import PeerState, TaskContext
from ikev2.tasks.dispatch import ROUTES
from ikev2.tasks.ike_auth import IkeAuthTask
from tests.engine.harness import ADDR_A, ADDR_B, established_pair, make_pair

TASKS = Path(__file__).resolve().parents[2] / "ikev2" / "tasks"
A = (ADDR_A, 500)
B = (ADDR_B, 500)
SA_TYPES = {"TaskContext", "TaskContext | None"}


def protocol_members(protocol: type) -> set[str]:
    names = set(getattr(protocol, "__annotations__", {}))
    names |= {name for name in vars(protocol) if not name.startswith("_")}
    return names


def sa_attributes(source: str) -> list[tuple[int, str]]:
    """(line, attribute) for every attribute used on a name that holds the IKE SA: ``sa``
    and parameters or variables annotated ``TaskContext``."""
    found: list[tuple[int, str]] = []
    for function in ast.walk(ast.parse(source)):
        if not isinstance(function, ast.FunctionDef | ast.Lambda):
            continue
        names = {"sa"}
        if isinstance(function, ast.FunctionDef):
            for arg in function.args.args + function.args.kwonlyargs:
                if arg.annotation is not None and ast.unparse(arg.annotation) in SA_TYPES:
                    names.add(arg.arg)
        for node in ast.walk(function):
            if (
                isinstance(node, ast.Attribute)
                and isinstance(node.value, ast.Name)
                and node.value.id in names
            ):
                found.append((node.lineno, node.attr))
    return found


def test_tasks_use_only_the_task_context() -> None:
    allowed = protocol_members(TaskContext)
    used: set[str] = set()
    outside: list[str] = []
    for path in sorted(TASKS.glob("*.py")):
        if path.name == "context.py":
            continue
        for line, attribute in sa_attributes(path.read_text()):
            used.add(attribute)
            if attribute not in allowed:
                outside.append(f"{path.name}:{line}: sa.{attribute}")
    assert not outside, "tasks reach past TaskContext:\n" + "\n".join(outside)
    # The checker sees something (a broken walk would pass the assertion above vacuously).
    assert {"keymat", "peer", "emit", "queue_task"} <= used


def test_checker_finds_an_attribute_outside_the_contract() -> None:
    source = "def f(old: TaskContext) -> None:\n    old.rekey_collision = None\n"
    assert sa_attributes(source) == [(2, "rekey_collision")]
    assert "rekey_collision" not in protocol_members(TaskContext)


def test_ike_sa_provides_every_member() -> None:
    net = make_pair()
    ike_id = net.a.initiate("conn", "net", now=net.now)
    sa = net.a.ike_sa(ike_id)
    missing = sorted(name for name in protocol_members(TaskContext) if not hasattr(sa, name))
    assert missing == []
    assert isinstance(sa.keymat, Keymat) and isinstance(sa.peer, PeerState)


def test_task_modules_never_import_the_sa() -> None:
    for path in sorted(TASKS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("ikev2.sa", "ikev2.dispatcher"), path.name
            if isinstance(node, ast.Import):
                assert not {a.name for a in node.names} & {"ikev2.sa", "ikev2.dispatcher"}


def test_every_exchange_type_we_implement_has_a_route() -> None:
    # Session resumption (RFC 5723) and G-IKEv2 (RFC 9838) are not implemented: no route,
    # so they are dropped like unknown exchange types.
    assert set(ROUTES) == {
        ExchangeType.IKE_SA_INIT,
        ExchangeType.IKE_AUTH,
        ExchangeType.CREATE_CHILD_SA,
        ExchangeType.INFORMATIONAL,
        ExchangeType.IKE_INTERMEDIATE,
        ExchangeType.IKE_FOLLOWUP_KE,
    }
    assert ROUTES[ExchangeType.IKE_SA_INIT].responder is None
    for exchange in (ExchangeType.CREATE_CHILD_SA, ExchangeType.INFORMATIONAL):
        assert IkeState.ESTABLISHED in ROUTES[exchange].states
        assert IkeState.INIT_DONE not in ROUTES[exchange].states  # CVE-2019-12312


def test_ike_auth_on_an_established_sa_is_refused_and_the_sa_stays() -> None:
    """The table admits IKE_AUTH only during setup: INVALID_SYNTAX, and an established SA
    is not torn down by it (only a refused IKE_AUTH during setup ends the SA)."""
    net, ike_id = established_pair()
    sa_a = net.a.ike_sa(ike_id)
    # A complete, correctly signed IKE_AUTH request: only the state refuses it.
    request = IkeAuthTask("net").build(sa_a, net.now)
    message_id = sa_a.next_request_id
    for data in sa_a._encode(ExchangeType.IKE_AUTH, False, message_id, request):
        net.b.receive_datagram(data, A, B, net.now)
    sa_a.next_request_id += 1
    answers = [parse_message(d.data) for d in net.b.datagrams_to_send(net.now)]
    assert sa_a.cipher_in is not None
    (reply,) = [decrypt_message(m, sa_a.cipher_in) for m in answers]
    notifies = [p.notify_type for p in reply.payloads if isinstance(p, NotifyPayload)]
    assert notifies == [NotifyType.INVALID_SYNTAX]
    assert [s.state for s in net.b.sas()] == ["ESTABLISHED"]
    assert not net.events("b", IkeSaDeleted)
    assert net.b.counters.get("internal_error", 0) == 0


def test_local_misuse_is_a_usage_error_not_a_protocol_error() -> None:
    net = make_pair()
    ike_id = net.a.initiate("conn", "net", now=net.now)  # IKE_SA_INIT sent, not established
    with pytest.raises(UsageError, match="not established") as info:
        net.a.rekey_ike(ike_id, net.now)
    assert not isinstance(info.value, ProtocolError)
    assert LocalProtocolError is UsageError and RemoteProtocolError is ProtocolError
    assert net.a.ike_sa(ike_id).alive


def test_keymat_repr_shows_no_key() -> None:
    net, ike_id = established_pair()
    sa: IkeSa = net.a.ike_sa(ike_id)
    keys = sa.keymat.keys
    assert keys is not None
    text = repr(sa.keymat)
    # (SK_pi is empty once IKE_AUTH is over: Keymat.auth_done.)
    for secret in (keys.sk_d, keys.sk_ei, keys.sk_er):
        assert secret.hex() not in text and repr(secret) not in text
