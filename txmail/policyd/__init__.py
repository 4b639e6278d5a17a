"""txmail policyd: Postfix's policy service for sending limits, warm-up and reputation.

protocol.py    the SMTPD_POLICY_README attribute blocks, in and out
decide.py      request + account + clock -> the check to run and the action (pure)
quota.py       `txmail stats`: an account's usage against its limits and its reputation
reputation.py  record_outcome() for the event recorder; automatic suspension
server.py      the asyncio UNIX-socket (and optional TCP) server: `txmail policyd`
link.py        its pipelined connection to Redis for the script calls (hiredis parses)
"""
