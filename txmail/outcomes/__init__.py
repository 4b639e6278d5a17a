"""outcomes: what a delivery attempt, a DSN, a complaint or an auto-reply means.

    reasons     status codes and MTA wording to Sisimai's reason words, and hard or soft
    findings    Finding (what a source saw about one recipient), BounceEvent, finish()
    addresses   recipients as reports print them, made comparable

Shared by the bounce pipe (returned mail) and the maillog follower (Postfix's status lines), so
one outcome has one meaning whichever of them sees it first. Pure: no Redis, no I/O.
"""
