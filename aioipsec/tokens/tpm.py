"""Keys in a TPM 2.0 as IKE AUTH signers, through tpm2-pytss (ESAPI).

The key is a persistent object (``0x81xxxxxx``, made with ``tpm2_evictcontrol``) used by
its handle; ``TPM2_Sign`` runs inside the TPM. The TCTI names the TPM:
``device:/dev/tpmrm0`` on real hardware (the kernel's resource manager), or
``swtpm:host=127.0.0.1,port=2321`` for the swtpm simulator.

Schemes, always explicit in ``TPMT_SIG_SCHEME`` (a key created with a fixed scheme
refuses any other, which fails that AUTH with the TPM's message):

* ECDSA P-256/P-384: ``TPM2_ALG_ECDSA`` with the hash; the TPM returns r and s, which
  become the DER ``Ecdsa-Sig-Value`` here (and r || s again for RFC 4754 methods).
* RSA: ``TPM2_ALG_RSASSA`` (PKCS#1 v1.5) or ``TPM2_ALG_RSAPSS``. The TPM chooses the PSS
  salt (the hash length when the key allows it, TPM 2.0 Part 1 sec. B.7); our
  AlgorithmIdentifier says the hash length, so verify a PSS signature before trusting
  a TPM for it (``aioipsec doctor`` does).

A *restricted* signing key signs only digests the TPM made itself (TPM 2.0 Part 1 sec.
25.2.3): the octets are hashed with a TPM hash sequence, and the ticket goes with the
signature request. An unrestricted key gets the digest computed here.

The TPM is opened once; when a command fails because the TPM went away (the TCTI
cannot reach it), the context is dropped and the next signature opens it again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from aioipsec.tokens import TokenError, TokenSigner, describe_key, digest
from ikev2.crypto.auth import SignatureScheme, SignerError
from ikev2.enums import HashAlgorithm

__all__ = ["TpmKeySpec", "TpmSigner", "list_persistent"]

_HAVE_PYTSS = True
try:  # tpm2-pytss is an optional dependency (extra "tokens")
    from tpm2_pytss import ESAPI, TSS2_Exception
    from tpm2_pytss.constants import (
        ESYS_TR,
        TPM2_ALG,
        TPM2_CAP,
        TPM2_RH,
        TPM2_ST,
        TPMA_OBJECT,
    )
    from tpm2_pytss.types import TPMT_SIG_SCHEME, TPMT_TK_HASHCHECK
except ImportError:  # pragma: no cover - reported when a TPM key is opened
    _HAVE_PYTSS = False

# TPM2_Hash and each SequenceUpdate take at most MAX_DIGEST_BUFFER (1024) octets.
_CHUNK = 1024


@dataclass(frozen=True)
class TpmKeySpec:
    """The TPM (TCTI string; None: tpm2-tss's default) and the persistent handle; the
    key's authorisation value (userAuth) if it has one, never printed."""

    tcti: str | None
    handle: int
    auth: str | None = field(default=None, repr=False)

    @property
    def description(self) -> str:
        return f"tpm:{self.tcti or 'default'}/0x{self.handle:08x}"


def _esapi(tcti: str | None) -> Any:
    if not _HAVE_PYTSS:
        raise TokenError(
            "tpm2-pytss is not installed",
            "install aioipsec with the tokens extra: pip install 'aioipsec[tokens]'",
        )
    try:
        return ESAPI(tcti)
    except TSS2_Exception as error:
        raise TokenError(
            f"cannot reach the TPM through TCTI {tcti or '(default)'}: {error}",
            "check [tpm] tcti (device:/dev/tpmrm0, or swtpm:host=...,port=N) and that the "
            "TPM or simulator is running",
        ) from None


class TpmSigner(TokenSigner):
    """An IKE AUTH signer whose key stays in a TPM 2.0 (``ikev2.crypto.auth.Signer``)."""

    def __init__(self, spec: TpmKeySpec) -> None:
        self.spec = spec
        self.description = spec.description
        self._errors = (TSS2_Exception,)
        self._ctx: Any = None
        self._handle: Any = None
        self._restricted = False
        self._open()

    def _open(self) -> None:
        ctx = _esapi(self.spec.tcti)
        try:
            try:
                handle = ctx.tr_from_tpmpublic(self.spec.handle)
                public, _, _ = ctx.read_public(handle)
            except TSS2_Exception as error:
                raise TokenError(
                    f"{self.description}: no key at this persistent handle ({error})",
                    "list them with tpm2_getcap handles-persistent; make one with "
                    "tpm2_createprimary, tpm2_create, tpm2_load and tpm2_evictcontrol",
                ) from None
            area = public.publicArea
            if not area.objectAttributes & TPMA_OBJECT.SIGN_ENCRYPT:
                raise TokenError(
                    f"{self.description}: the key may not sign (no sign attribute)",
                    "create a signing key (tpm2_create -G ecc256 or rsa3072)",
                )
            key = serialization.load_pem_public_key(area.to_pem())
            if not isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey):
                raise TokenError(f"{self.description}: unsupported key type")
            if self._public is not None and key.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ) != self._public.public_bytes(
                serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
            ):
                raise TokenError(f"{self.description}: the handle now holds a different key")
            if self.spec.auth:
                ctx.tr_set_auth(handle, self.spec.auth.encode())
        except BaseException:
            ctx.close()
            raise
        self._ctx, self._handle, self._public = ctx, handle, key
        self._connected = True
        self._restricted = bool(area.objectAttributes & TPMA_OBJECT.RESTRICTED)

    def close(self) -> None:
        ctx, self._ctx = self._ctx, None
        self._connected = False
        if ctx is not None:
            try:
                ctx.close()
            except TSS2_Exception:
                pass

    def _reopen(self) -> None:
        self._open()

    def _sign(self, octets: bytes, scheme: SignatureScheme) -> bytes:
        ctx = self._ctx
        hash_alg = _TPM_HASH[scheme.hash]
        if self._restricted:
            hashed, ticket = self._tpm_hash(octets, hash_alg)
        else:
            hashed = digest(scheme, octets)
            ticket = TPMT_TK_HASHCHECK(tag=TPM2_ST.HASHCHECK, hierarchy=TPM2_RH.NULL)
        in_scheme = TPMT_SIG_SCHEME()
        if scheme.key_type == "ecdsa":
            in_scheme.scheme = TPM2_ALG.ECDSA
            in_scheme.details.ecdsa.hashAlg = hash_alg
        elif scheme.key_type == "rsa":
            in_scheme.scheme = TPM2_ALG.RSAPSS if scheme.rsa_padding == "pss" else TPM2_ALG.RSASSA
            in_scheme.details.any.hashAlg = hash_alg
        else:
            raise SignerError(f"{self.description}: cannot sign {scheme.name}")
        signature = ctx.sign(self._handle, hashed, in_scheme, ticket)
        if scheme.key_type == "ecdsa":
            r = int.from_bytes(bytes(signature.signature.ecdsa.signatureR), "big")
            s = int.from_bytes(bytes(signature.signature.ecdsa.signatureS), "big")
            return encode_dss_signature(r, s)
        if scheme.rsa_padding == "pss":
            return bytes(signature.signature.rsapss.sig)
        return bytes(signature.signature.rsassa.sig)

    def _tpm_hash(self, octets: bytes, hash_alg: Any) -> tuple[Any, Any]:
        """Digest and HASHCHECK ticket from a TPM hash sequence (restricted keys)."""
        ctx = self._ctx
        sequence = ctx.hash_sequence_start(None, hash_alg)
        body, last = octets[:-_CHUNK] if len(octets) > _CHUNK else b"", octets[-_CHUNK:]
        for offset in range(0, len(body), _CHUNK):
            ctx.sequence_update(sequence, body[offset : offset + _CHUNK])
        return ctx.sequence_complete(sequence, last, hierarchy=ESYS_TR.OWNER)


if _HAVE_PYTSS:
    _TPM_HASH = {
        HashAlgorithm.SHA1: TPM2_ALG.SHA1,
        HashAlgorithm.SHA2_256: TPM2_ALG.SHA256,
        HashAlgorithm.SHA2_384: TPM2_ALG.SHA384,
        HashAlgorithm.SHA2_512: TPM2_ALG.SHA512,
    }


def list_persistent(tcti: str | None) -> list[dict[str, str]]:
    """The TPM's persistent objects: handle, type and size (for ``aioipsec token list``)."""
    ctx = _esapi(tcti)
    try:
        _, data = ctx.get_capability(TPM2_CAP.HANDLES, 0x81000000, 64)
        result = []
        for handle in data.data.handles:
            entry = {"handle": f"0x{int(handle):08x}", "type": "?"}
            try:
                public, _, _ = ctx.read_public(ctx.tr_from_tpmpublic(int(handle)))
                key = serialization.load_pem_public_key(public.publicArea.to_pem())
                entry["type"] = describe_key(key)
                attrs = public.publicArea.objectAttributes
                entry["sign"] = "yes" if attrs & TPMA_OBJECT.SIGN_ENCRYPT else "no"
                entry["restricted"] = "yes" if attrs & TPMA_OBJECT.RESTRICTED else "no"
            except (TSS2_Exception, ValueError):
                pass
            result.append(entry)
        return result
    finally:
        ctx.close()
