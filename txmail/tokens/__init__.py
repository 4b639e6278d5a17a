"""tokens: everything the relay hands out and later trusts, signed and verified in one place.

    bounce_address   bounces+TOKEN@DOMAIN: the envelope sender naming a queue file (milter signs,
                     bounce pipe and socketmap verify)
    links            open pixels and tracked links (milter signs, tracker verifies)
    copies           X-CloudMTA-Copy headers of per-recipient copies (milter signs and verifies)
    authpolicy       what Dovecot presents to txmail authpolicy: the request header and the
                     hash nonce (rendered into Dovecot's configuration by the stack)
    webhooks         Standard Webhooks signatures of webhook posts, under each account's
                     secret (the dispatcher signs; the console's test post too)
    console          the console's session cookies, CSRF tokens and operator login tokens
                     (the tracker's console verifies; `txmail console token` signs)

Each token is an HMAC under a key derived from one of the relay's secrets with a label of its
own, so no token of one kind can be replayed as another. No Redis; only authpolicy reads (and
first creates) its key file.
"""
