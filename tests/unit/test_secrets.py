"""SecretBox: credentials sealed with AES-256-GCM, bound to their connection.

What an operator relies on: a credential opens only with the key that sealed it and
only for the connection (id, tenant, provider) it was sealed for; every key problem is
a ``ConfigError`` that says which key and what to do, never a silent plaintext.
"""

from __future__ import annotations

import base64

import pytest

from sluice.errors import ConfigError
from sluice.secrets import SecretBox, generate_key, key_id

CREDS = {"account_sid": "AC123", "auth_token": "tok-very-secret"}
WHERE = ("conn-1", "acme", "twilio")


def raw(key: str) -> bytes:
    return base64.urlsafe_b64decode(key)


def test_round_trip__decrypts_what_it_encrypted() -> None:
    box = SecretBox(generate_key())
    ciphertext, kid = box.encrypt(CREDS, *WHERE)
    assert kid == box.current_id
    assert box.decrypt(ciphertext, kid, *WHERE) == CREDS


def test_encrypt__ciphertext_never_contains_the_secret() -> None:
    box = SecretBox(generate_key())
    ciphertext, _ = box.encrypt(CREDS, *WHERE)
    for value in ("tok-very-secret", "AC123", "auth_token"):
        assert value.encode() not in ciphertext


def test_encrypt__differs_every_time_for_the_same_secrets() -> None:
    box = SecretBox(generate_key())
    sealed = {box.encrypt(CREDS, *WHERE)[0] for _ in range(20)}
    assert len(sealed) == 20  # a fresh random nonce each time
    assert len({ct[:12] for ct in sealed}) == 20
    for ct in sealed:
        assert box.decrypt(ct, box.current_id, *WHERE) == CREDS


def test_key_id__is_a_stable_public_fingerprint() -> None:
    key = generate_key()
    assert SecretBox(key).current_id == SecretBox(key).current_id == key_id(raw(key))
    assert SecretBox(generate_key()).current_id != SecretBox(key).current_id
    assert key not in key_id(raw(key))


def test_decrypt__with_another_key_is_a_config_error_naming_both_keys() -> None:
    old, new = SecretBox(generate_key()), SecretBox(generate_key())
    ciphertext, kid = old.encrypt(CREDS, *WHERE)
    with pytest.raises(ConfigError) as info:
        new.decrypt(ciphertext, kid, *WHERE)
    text = str(info.value)
    assert old.current_id in text and new.current_id in text
    assert "SLUICE_SECRET_KEY" in text
    assert "sluice keys rotate" in text
    assert "tok-very-secret" not in text


def test_decrypt__previous_key_still_opens_old_ciphertexts() -> None:
    old_key, new_key = generate_key(), generate_key()
    ciphertext, kid = SecretBox(old_key).encrypt(CREDS, *WHERE)
    box = SecretBox(new_key, previous=old_key)
    assert box.knows(kid) and box.knows(box.current_id)
    assert box.decrypt(ciphertext, kid, *WHERE) == CREDS
    # New ciphertexts are sealed under the current key, not the previous one.
    resealed, new_kid = box.encrypt(CREDS, *WHERE)
    assert new_kid == SecretBox(new_key).current_id != kid
    assert SecretBox(new_key).decrypt(resealed, new_kid, *WHERE) == CREDS


def test_knows__only_the_current_and_previous_keys() -> None:
    box = SecretBox(generate_key())
    assert not box.knows(SecretBox(generate_key()).current_id)


@pytest.mark.parametrize(
    "where",
    [
        ("conn-1", "globex", "twilio"),  # another tenant
        ("conn-1", "acme", "sendgrid"),  # another provider
        ("conn-2", "acme", "twilio"),  # another connection of the same tenant
    ],
    ids=["other-tenant", "other-provider", "other-connection"],
)
def test_decrypt__for_another_connection_is_refused(where: tuple[str, str, str]) -> None:
    box = SecretBox(generate_key())
    ciphertext, kid = box.encrypt(CREDS, *WHERE)
    with pytest.raises(ValueError, match="do not decrypt") as info:
        box.decrypt(ciphertext, kid, *where)
    assert not isinstance(info.value, ConfigError)
    assert "tok-very-secret" not in str(info.value)


def test_decrypt__field_boundaries_are_part_of_the_binding() -> None:
    # ("ab", "c") and ("a", "bc") must not share associated data.
    box = SecretBox(generate_key())
    ciphertext, kid = box.encrypt(CREDS, "id", "ab", "c")
    with pytest.raises(ValueError):
        box.decrypt(ciphertext, kid, "id", "a", "bc")


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_decrypt__a_flipped_byte_is_refused(position: int) -> None:
    box = SecretBox(generate_key())
    ciphertext, kid = box.encrypt(CREDS, *WHERE)
    tampered = bytearray(ciphertext)
    tampered[position] ^= 0x01
    with pytest.raises(ValueError):
        box.decrypt(bytes(tampered), kid, *WHERE)


def test_decrypt__truncated_ciphertext_is_refused() -> None:
    box = SecretBox(generate_key())
    ciphertext, kid = box.encrypt(CREDS, *WHERE)
    with pytest.raises(ValueError):
        box.decrypt(ciphertext[:-4], kid, *WHERE)


@pytest.mark.parametrize("missing", [None, ""])
def test_secret_box__without_a_key_is_a_config_error_naming_the_variable(
    missing: str | None,
) -> None:
    with pytest.raises(ConfigError, match="SLUICE_SECRET_KEY") as info:
        SecretBox(missing)
    assert "sluice keys generate" in str(info.value)


@pytest.mark.parametrize(
    "bad",
    [
        "not base64 at all!",
        "abc",  # bad padding
        base64.urlsafe_b64encode(b"x" * 16).decode(),  # AES-128 length: too short
        base64.urlsafe_b64encode(b"x" * 33).decode(),
        base64.urlsafe_b64encode(b"").decode() + "====",
    ],
    ids=["garbage", "padding", "16-bytes", "33-bytes", "empty"],
)
def test_secret_box__malformed_key_is_a_config_error(bad: str) -> None:
    with pytest.raises(ConfigError, match="SLUICE_SECRET_KEY") as info:
        SecretBox(bad)
    assert "sluice keys generate" in str(info.value)


def test_secret_box__malformed_previous_key_names_the_previous_variable() -> None:
    with pytest.raises(ConfigError, match="SLUICE_SECRET_KEY_PREVIOUS"):
        SecretBox(generate_key(), previous="short")


def test_secret_box__key_with_surrounding_whitespace_is_accepted() -> None:
    # Keys pasted from `sluice keys generate` often carry a trailing newline.
    key = generate_key()
    assert SecretBox(key + "\n").current_id == SecretBox(key).current_id


def test_generate_key__is_32_random_bytes_of_urlsafe_base64() -> None:
    keys = {generate_key() for _ in range(10)}
    assert len(keys) == 10
    for key in keys:
        assert len(raw(key)) == 32
        SecretBox(key)  # every generated key is accepted as it is printed
