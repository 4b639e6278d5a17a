"""txmail policyd: Postfix's policy service for sending limits, warm-up and reputation.

protocol.py    the SMTPD_POLICY_README attribute blocks, in and out
decide.py      request + account + clock -> the check to run and the action (pure)
quota.py       the Lua scripts; count_accepted() for the milter at end of message; usage
server.py      the asyncio UNIX-socket (and optional TCP) server: `txmail policyd`
link.py        its pipelined connection to Redis for the script calls (hiredis parses)

The reputation guard that suspends an account is txmail.accounts.reputation: the daemons that
record outcomes call it; policyd refuses what a suspended account sends.
"""
