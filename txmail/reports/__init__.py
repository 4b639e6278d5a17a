"""reports: what the console's pages show that is not a page, read from the store (core, no
daemon imports): series, search, timeline and charts for the overview and messages pages;
suppression CSV, domain checks, node health and account summaries for the others. Each
module says what it reads; none writes but where it says so.
"""
