"""EAP inside IKEv2 (RFC 7296 sec. 2.16): packet codec, methods, both roles."""
