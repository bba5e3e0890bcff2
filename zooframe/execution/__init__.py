"""How queries are evaluated: the local, process and Ray engines, their workers, the fault guard
that captures a failing simulator call query by query, and the thread policy."""
