"""accounts: who may send, what they may send and how they are doing, for every daemon that asks.

    records      the accounts in Redis: logins, API keys, suspension
    domains      their sending domains: DKIM keys, return-path subdomains, verification
    settings     AccountSettings: one typed attribute per setting, the table of defaults and
                 checks, and how they are stored
    cache        AccountCache: the one cache of accounts the milter and policyd share
    limits       the sending limits and warm-up arithmetic (clock-aligned windows)
    usage        counted usage: what the milter counts at end of message, what `txmail stats`
                 reads back
    reputation   the reputation guard: bounce and complaint rates that warn and suspend

Redis is passed in; nothing here starts a process.
"""
