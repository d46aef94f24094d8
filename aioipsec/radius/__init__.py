"""RADIUS for the gateway's ``remote auth = eap-radius`` (strongSwan's eap-radius plugin).

``settings``: the daemon configuration's ``[radius]`` table (servers, the shared secret's
file, timeouts). ``client``: one Access-Request / answer exchange with retransmission and
fail-over between servers, RFC 2865 packets with RFC 3579 EAP-Message and
Message-Authenticator, encoded and checked by pyrad. ``relay``: the daemon's side of the
engine's external EAP authenticator (``ikev2.events.EapRelay`` in,
``Dispatcher.external_eap_answer`` out), the MSK from MS-MPPE-Recv/Send-Key (RFC 2548) and
groups from Class attributes.
"""
