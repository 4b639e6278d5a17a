"""txmail socketmap: tells Postfix, from Redis, which domains are return-path domains."""
