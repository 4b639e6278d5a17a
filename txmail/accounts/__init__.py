"""accounts: what an account may send and how it is doing, shared by every daemon that asks.

The typed view of an account's settings and the one cache of it (milter and policyd), the
sending limits and warm-up arithmetic, counted usage, and the reputation guard (bounce and
complaint rates that suspend an account). Redis is passed in; nothing here starts a process.
"""
