"""txmail authpolicy: a per-login limit on password guessing, asked by Dovecot.

credentials.py  the key shared with Dovecot and what is derived from it
decide.py       pure: a Dovecot policy request to an attempt, an attempt's state to a verdict
server.py       the HTTP endpoint Dovecot's auth_policy_server_url points at; the Lua calls
"""
