"""txmail policyd: Postfix's policy service for sending limits, warm-up and reputation.

protocol.py     the SMTPD_POLICY_README attribute blocks, in and out
decide.py       request + account + clock -> the check to run and the action (pure)
server.py       `txmail policyd`: binds the UNIX (and optional TCP) sockets, runs the workers
connections.py  PolicyServer: the requests of each Postfix connection in, one action each out
scripts.py      the asyncio Redis client and the batched Lua script calls
link.py         their pipelined connection to a single Redis (hiredis parses)
log_buffer.py   log lines written once per event-loop turn
workers.py      forked workers over the shared sockets, replaced when one dies
The account's limits, warm-up, counted usage, reputation guard, settings and their cache are
the core's (txmail.accounts): the milter counts accepted mail, the outcome recorders feed the
reputation guard, and policyd refuses what a suspended account sends.
"""
