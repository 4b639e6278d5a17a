"""txmail: a transactional outbound mail relay built as extensions to Postfix."""

__version__ = "0.1.0"
