"""``aioipsec explain``: byte-for-byte reproducible with --seed, and the exported vector
re-checked by recomputing every key (ikev2.crypto.keys, and hashlib/hmac + cryptography
as an independent oracle for HMAC-SHA-256 prf+ and X25519)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aioipsec.explain import explain_run, export_vector, render_explanation, run_negotiation
from ikev2.crypto.keys import derive_child_keymat, derive_ike_keys, split_child_keymat
from ikev2.crypto.prf import Prf
from ikev2.crypto.sk import make_sk_cipher
from ikev2.enums import EncrId, PayloadType, PrfId
from ikev2.message import decrypt_message, parse_message

pytestmark = pytest.mark.timeout(120)


def _explain(*args: str, hash_seed: str = "0") -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONHASHSEED=hash_seed)
    return subprocess.run(
        [sys.executable, "-m", "aioipsec.explain", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )  # fmt: skip


def test_same_seed_same_bytes_across_processes() -> None:
    first = _explain("--seed", "7", "--keys", hash_seed="1")
    second = _explain("--seed", "7", "--keys", hash_seed="2")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "all 23 derivation steps re-computed and checked" in first.stdout
    other = _explain("--seed", "8", "--keys")
    assert other.returncode == 0 and other.stdout != first.stdout


def test_ladder_names_every_exchange_and_payload() -> None:
    text = render_explanation(explain_run(run_negotiation(seed=1)), keys=False)
    for line in (
        "#1 IKE_SA_INIT request (Message ID 0)",
        "#2 IKE_SA_INIT response (Message ID 0)",
        "#3 IKE_AUTH request (Message ID 1)",
        "#5 CREATE_CHILD_SA request (Message ID 2)",
        "#7 INFORMATIONAL request (Message ID 3)",
        "#10 INFORMATIONAL response (Message ID 4)",
        "HDR, SA, KEi, Ni, N(NAT_DETECTION_SOURCE_IP),",
        "HDR, SK {IDi, IDr, AUTH, N(INITIAL_CONTACT), SA, TSi, TSr}",
        "HDR, SK {N(REKEY_SA), SA, Ni, TSi, TSr}",
        "proposal #1 IKE: aes256gcm16-prfsha256-x25519",
        "ID_FQDN: initiator.example",
    ):
        assert line in text, line
    assert "SKEYSEED" not in text  # only with --keys


def _step(vector: dict, key: str) -> dict:
    return next(s for s in vector["steps"] if s["step"] == key)


def _prf_plus_sha256(key: bytes, seed: bytes, length: int) -> bytes:
    """prf+ of RFC 7296 sec. 2.13 written out with the standard library (the oracle)."""
    out, block, counter = b"", b"", 1
    while len(out) < length:
        block = hmac.new(key, block + seed + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


@pytest.mark.parametrize("esp", ["aes256gcm16", "aes128gcm16-x25519"])
def test_exported_vector_recomputes(tmp_path: Path, esp: str) -> None:
    path = tmp_path / "vector.json"
    result = _explain("--seed", "42", "--esp", esp, "--export-vector", str(path))
    assert result.returncode == 0, result.stderr
    vector = json.loads(path.read_text())
    assert vector["format"] == "aioipsec-explain-vector/1" and vector["seed"] == 42
    messages = [bytes.fromhex(m["data"]) for m in vector["messages"]]
    init_req, init_resp = parse_message(messages[0]), parse_message(messages[1])
    ni = bytes(init_req.get(PayloadType.NONCE).nonce)
    nr = bytes(init_resp.get(PayloadType.NONCE).nonce)
    ke_i = bytes(init_req.get(PayloadType.KE).data)
    ke_r = bytes(init_resp.get(PayloadType.KE).data)
    spi_i, spi_r = init_resp.header.spi_i, init_resp.header.spi_r

    # g^ir with cryptography's X25519 from the exported private values
    from cryptography.hazmat.primitives.asymmetric.x25519 import (
        X25519PrivateKey,
        X25519PublicKey,
    )
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    g_step = _step(vector, "g_ir")
    private_i = bytes.fromhex(g_step["inputs"]["initiator private"])
    private_r = bytes.fromhex(g_step["inputs"]["responder private"])
    for private, public in ((private_i, ke_i), (private_r, ke_r)):
        raw = X25519PrivateKey.from_private_bytes(private).public_key()
        assert raw.public_bytes(Encoding.Raw, PublicFormat.Raw) == public
    g_ir = X25519PrivateKey.from_private_bytes(private_i).exchange(
        X25519PublicKey.from_public_bytes(ke_r)
    )
    assert g_step["outputs"]["g^ir"] == g_ir.hex()

    # SKEYSEED and SK_* both by ikev2.crypto.keys and by the standard-library oracle
    skeyseed = hmac.new(ni + nr, g_ir, hashlib.sha256).digest()
    assert _step(vector, "skeyseed")["outputs"]["SKEYSEED"] == skeyseed.hex()
    keys = derive_ike_keys(Prf(PrfId.PRF_HMAC_SHA2_256), g_ir, ni, nr, spi_i, spi_r, 36, 0)
    oracle = _prf_plus_sha256(skeyseed, ni + nr + spi_i + spi_r, 3 * 32 + 2 * 36)
    assert oracle == keys.sk_d + keys.sk_ei + keys.sk_er + keys.sk_pi + keys.sk_pr
    outputs = _step(vector, "ike_keys")["outputs"]
    for name in ("sk_d", "sk_ai", "sk_ar", "sk_ei", "sk_er", "sk_pi", "sk_pr"):
        label = "SK_" + name[3:]
        assert outputs[label] == getattr(keys, name).hex(), label

    # every SK payload opens with those keys (initiator's messages with SK_ei)
    cipher_i = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, keys.sk_ei, None)
    cipher_r = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, keys.sk_er, None)
    inner = {}
    for record, data in zip(vector["messages"][2:], messages[2:], strict=True):
        cipher = cipher_i if record["from"] == "initiator" else cipher_r
        inner[record["number"]] = decrypt_message(parse_message(data), cipher)

    # AUTH (sec. 2.15) with the standard library
    psk = bytes.fromhex(vector["psk"])
    pad = hmac.new(psk, b"Key Pad for IKEv2", hashlib.sha256).digest()
    for number, real, nonce, sk_p, id_type in (
        (3, messages[0], nr, keys.sk_pi, PayloadType.IDi),
        (4, messages[1], ni, keys.sk_pr, PayloadType.IDr),
    ):
        id_body = inner[number].get(id_type).body_for_auth()
        octets = real + nonce + hmac.new(sk_p, id_body, hashlib.sha256).digest()
        auth = hmac.new(pad, octets, hashlib.sha256).digest()
        assert bytes(inner[number].get(PayloadType.AUTH).data) == auth
        side = "i" if number == 3 else "r"
        assert _step(vector, f"auth_{side}")["outputs"]["AUTH"] == auth.hex()

    # first Child SA KEYMAT (sec. 2.17)
    encr_len = 36 if esp == "aes256gcm16" else 20
    keymat = derive_child_keymat(Prf(PrfId.PRF_HMAC_SHA2_256), keys.sk_d, ni, nr, None,
                                 2 * encr_len)  # fmt: skip
    assert keymat == _prf_plus_sha256(keys.sk_d, ni + nr, 2 * encr_len)
    child = split_child_keymat(keymat, encr_len, 0)
    step = _step(vector, "child_keymat_4")["outputs"]
    assert step["encryption key i->r"] == child.encr_i2r.hex()
    assert step["encryption key r->i"] == child.encr_r2i.hex()

    # the rekeyed Child SA: nonces of CREATE_CHILD_SA, plus g^ir (new) with PFS
    n_i = bytes(inner[5].get(PayloadType.NONCE).nonce)
    n_r = bytes(inner[6].get(PayloadType.NONCE).nonce)
    shared = None
    if esp.endswith("x25519"):
        pfs = _step(vector, "child_g_ir_6")
        shared = X25519PrivateKey.from_private_bytes(
            bytes.fromhex(pfs["inputs"]["initiator private"])
        ).exchange(X25519PublicKey.from_public_bytes(bytes(inner[6].get(PayloadType.KE).data)))
        assert pfs["outputs"]["g^ir (new)"] == shared.hex()
    seed = (shared or b"") + n_i + n_r
    rekeyed = _prf_plus_sha256(keys.sk_d, seed, 2 * encr_len)
    assert _step(vector, "child_keymat_6")["outputs"]["KEYMAT"] == rekeyed.hex()


def test_export_vector_needs_seed_and_refusals_explain_why(tmp_path: Path) -> None:
    result = _explain("--export-vector", str(tmp_path / "v.json"))
    assert result.returncode == 2 and "needs --seed" in result.stderr
    result = _explain("--ike", "aes256gcm16-prfsha256-ecp256")
    assert result.returncode == 2 and "x25519 or x448" in result.stderr
    result = _explain("--seed", "1", "--ike", "aes256-sha256-x25519")
    assert result.returncode == 2 and "AEAD" in result.stderr
    result = _explain("--follow", "--socket", str(tmp_path / "nothing.sock"))
    assert result.returncode == 2 and "cannot reach the daemon" in result.stderr


def test_without_seed_still_checks_out_including_cbc() -> None:
    run = run_negotiation(ike="aes128-sha256-x25519", esp="aes128-sha256")
    explanation = explain_run(run)
    assert explanation.ok
    assert export_vector(explanation)["seed"] is None


def test_state_diagram_png(tmp_path: Path) -> None:
    out, again = tmp_path / "states.png", tmp_path / "again.png"
    # Two processes at once (each takes seconds of CPU): the second core does the other.
    env = dict(os.environ, PYTHONHASHSEED="0")
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "aioipsec.explain", "--state-diagram", str(path)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for path in (out, again)
    ]
    errors = [process.communicate(timeout=60)[1] for process in processes]
    assert [process.returncode for process in processes] == [0, 0], errors
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20000
    # generated, not drawn: the same table gives the same bytes (the docs image is this)
    assert again.read_bytes() == data
    assert (Path(__file__).parents[2] / "docs/images/state-machines.png").is_file()


def test_ike_rekey_vector_recomputes(tmp_path: Path) -> None:
    """--rekey-ike: SKEYSEED = prf(SK_d (old), g^ir (new) | Ni | Nr), the new SPIs in the
    prf+ seed (RFC 7296 sec. 2.18), recomputed with hmac; the new SA's messages open."""
    path = tmp_path / "rekey.json"
    first = _explain("--seed", "9", "--rekey-ike", "--keys", "--export-vector", str(path))
    assert first.returncode == 0, first.stderr
    assert _explain("--seed", "9", "--rekey-ike", "--keys").stdout == first.stdout
    vector = json.loads(path.read_text())
    assert vector["rekey_ike"] is True
    old_sk_d = bytes.fromhex(_step(vector, "ike_keys")["outputs"]["SK_d"])
    messages = {m["number"]: m for m in vector["messages"]}
    rekey = [n for n, m in messages.items() if m["exchange"] == "CREATE_CHILD_SA"][-1]
    g_ir = bytes.fromhex(_step(vector, f"ike_rekey_g_ir_{rekey}")["outputs"]["g^ir (new)"])
    keys_step = _step(vector, f"ike_rekey_keys_{rekey}")
    seed = bytes.fromhex(keys_step["inputs"]["Ni | Nr | SPIi | SPIr (seed)"])
    ni, nr, spi_i, spi_r = seed[:32], seed[32:64], seed[64:72], seed[72:80]
    skeyseed = hmac.new(old_sk_d, g_ir + ni + nr, hashlib.sha256).digest()
    assert _step(vector, f"ike_rekey_skeyseed_{rekey}")["outputs"]["SKEYSEED"] == skeyseed.hex()
    stream = _prf_plus_sha256(skeyseed, seed, 3 * 32 + 2 * 36)
    sk_ei, sk_er = stream[32:68], stream[68:104]
    assert keys_step["outputs"]["SK_ei"] == sk_ei.hex()
    # the last two messages (Delete of the new IKE SA) travel under the new SPIs and keys
    cipher_i = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, sk_ei, None)
    cipher_r = make_sk_cipher(EncrId.ENCR_AES_GCM_16, 256, None, sk_er, None)
    for number in sorted(messages)[-2:]:
        message = parse_message(bytes.fromhex(messages[number]["data"]))
        assert (message.header.spi_i, message.header.spi_r) == (spi_i, spi_r)
        cipher = cipher_i if message.header.initiator else cipher_r
        decrypt_message(message, cipher)  # raises if the keys were wrong


def test_follow_record_rendering_points_to_key_files_and_never_shows_keys() -> None:
    from aioipsec.explain import render_follow_record

    header = "\n".join(
        render_follow_record(
            {"type": "subscribed", "pid": 7, "decryption_tables": ["/k/ikev2", "/k/esp"]}
        )
    )
    assert "/k/ikev2, /k/esp" in header and "--save-keys" in header
    out = render_follow_record(
        {"type": "ike", "time": 0.0, "direction": "out", "local": ["10.0.0.1", 4500],
         "remote": ["10.0.0.2", 4500], "length": 80, "exchange": "INFORMATIONAL",
         "message_id": 2, "response": False, "payloads": ["SK{DELETE...}"]}
    )  # fmt: skip
    assert "INFORMATIONAL request (Message ID 2)" in out[0]
    assert out[-2].strip().endswith(">|") and "10.0.0.1:4500 -> 10.0.0.2:4500" in out[-1]
    back = render_follow_record({**{"type": "ike", "direction": "in", "response": True,
                                    "exchange": "INFORMATIONAL", "message_id": 2}})  # fmt: skip
    assert back[-2].strip().startswith("|<")
    event = render_follow_record(
        {"type": "event", "event": "ChildSaEstablished", "connection": "c", "ike_sa_id": 1,
         "fields": {"child": "net", "spi_in": 1}}
    )  # fmt: skip
    assert "ChildSaEstablished c #1 (child=net, spi_in=1)" in event[0]
