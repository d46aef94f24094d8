"""IKEv2 cryptography: PRF, key derivation, key exchange, SK payload ciphers, AUTH."""
