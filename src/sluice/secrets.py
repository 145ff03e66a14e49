"""Credentials encrypted at rest: AES-256-GCM, key from ``SLUICE_SECRET_KEY``.

Each ciphertext is bound to its connection (id, tenant, provider) as associated data,
so a ciphertext copied onto another tenant's row does not decrypt: the tenancy guard
has a cryptographic backstop, not only a comparison.

Key rotation: set the new key in ``SLUICE_SECRET_KEY`` and the old one in
``SLUICE_SECRET_KEY_PREVIOUS``, run ``sluice keys rotate``; every credential is
re-encrypted under the new key, after which the previous key can be dropped.

There is no plaintext fallback: a missing key, a malformed key, or a key that did
not encrypt the stored credentials is a ``ConfigError`` that says which.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping, Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sluice.connections import Connection
from sluice.errors import ConfigError

__all__ = ["SecretBox", "check_key", "generate_key", "key_id"]

_NONCE = 12


def generate_key() -> str:
    """A new random key, as ``SLUICE_SECRET_KEY`` expects it (base64 of 32 bytes)."""
    return base64.urlsafe_b64encode(os.urandom(32)).decode()


def _decode(text: str, variable: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(text.strip().encode())
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{variable} is not base64; generate one with: sluice keys generate"
        ) from None
    if len(raw) != 32:
        raise ConfigError(
            f"{variable} must be 32 bytes of base64 (got {len(raw)} bytes); "
            "generate one with: sluice keys generate"
        )
    return raw


def key_id(key: bytes) -> str:
    """A short public fingerprint of a key, stored beside each ciphertext."""
    return hashlib.sha256(b"sluice-key-id:" + key).hexdigest()[:12]


class SecretBox:
    """Encrypts and decrypts credential mappings with the current (and previous) key."""

    def __init__(self, key: str | None, previous: str | None = None) -> None:
        if not key:
            raise ConfigError(
                "SLUICE_SECRET_KEY is not set: connections' credentials are encrypted at rest "
                "and there is no plaintext fallback; generate a key with: sluice keys generate"
            )
        current = _decode(key, "SLUICE_SECRET_KEY")
        self._keys = {key_id(current): current}
        self.current_id = key_id(current)
        if previous:
            old = _decode(previous, "SLUICE_SECRET_KEY_PREVIOUS")
            self._keys.setdefault(key_id(old), old)

    @staticmethod
    def _aad(connection_id: str, tenant: str, provider: str) -> bytes:
        return f"sluice-connection\x1f{connection_id}\x1f{tenant}\x1f{provider}".encode()

    def encrypt(
        self, secrets: Mapping[str, str], connection_id: str, tenant: str, provider: str
    ) -> tuple[bytes, str]:
        """``(ciphertext, key_id)`` for ``secrets`` bound to this connection."""
        nonce = os.urandom(_NONCE)
        plain = json.dumps(dict(secrets), sort_keys=True).encode()
        sealed = AESGCM(self._keys[self.current_id]).encrypt(
            nonce, plain, self._aad(connection_id, tenant, provider)
        )
        return nonce + sealed, self.current_id

    def decrypt(
        self, ciphertext: bytes, kid: str, connection_id: str, tenant: str, provider: str
    ) -> dict[str, str]:
        """The secrets, or ``ConfigError`` naming the key problem / ``ValueError`` on tampering."""
        key = self._keys.get(kid)
        if key is None:
            raise ConfigError(
                f"credentials of connection {connection_id} were encrypted with key {kid}, but "
                f"SLUICE_SECRET_KEY is key {self.current_id}: set the key that encrypted them "
                "(or put it in SLUICE_SECRET_KEY_PREVIOUS and run: sluice keys rotate)"
            )
        try:
            plain = AESGCM(key).decrypt(
                ciphertext[:_NONCE], ciphertext[_NONCE:], self._aad(connection_id, tenant, provider)
            )
        except InvalidTag:
            raise ValueError(
                f"credentials of connection {connection_id} do not decrypt for tenant {tenant!r} "
                f"and provider {provider!r}: tampered, or copied from another connection"
            ) from None
        value = json.loads(plain)
        if not isinstance(value, dict):
            raise ValueError("decrypted credentials are not a mapping")
        return {str(k): str(v) for k, v in value.items()}

    def knows(self, kid: str) -> bool:
        """Whether ``kid`` is the current or the previous key."""
        return kid in self._keys


def check_key(connections: Sequence[Connection], box: SecretBox | None) -> int:
    """Every one of ``connections`` (as stored) must open with the configured key(s).

    Returns how many there are; raises ``ConfigError`` naming the problem. The worker
    asks at start-up (``sluice.worker.assemble``), as does ``ops.connections.verify_key``.
    """
    if not connections:
        return 0
    if box is None:
        raise ConfigError(
            f"{len(connections)} connections hold encrypted credentials but SLUICE_SECRET_KEY "
            "is not set; set the key that encrypted them"
        )
    unknown = sorted({c.key_id for c in connections if not box.knows(c.key_id)})
    if unknown:
        raise ConfigError(
            f"SLUICE_SECRET_KEY (key {box.current_id}) is not the key that encrypted stored "
            f"credentials (keys {', '.join(unknown)}): set the right key, or put the old one in "
            "SLUICE_SECRET_KEY_PREVIOUS and run: sluice keys rotate"
        )
    return len(connections)
